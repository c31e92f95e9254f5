"""Write a tiny model directory (Hugging Face layout, which is also mlx-lm's) for CLI tests."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from conftest import tiny_config, tiny_model

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def write_tokenizer(path: Path, vocab_size: int) -> None:
    """A word-level tokenizer: 3 special tokens, a few words, then filler tokens w0, w1, ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "hello", "world", "the", "cat", "sat", "on", "mat",
             "user", "assistant", "system", "hi", "a", "is", "what", "?", ".", ","]
    words += [f"w{i}" for i in range(vocab_size - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>", "<unk>"])
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(dict(
        chat_template=CHATML, eos_token="<|im_end|>", bos_token=None, unk_token="<unk>",
        tokenizer_class="PreTrainedTokenizerFast", model_max_length=2048)))


def write_tiny_model_dir(path: Path, arch: str = "llama", seed: int = 0, scale: float = 3.0) -> Path:
    """config.json + model.safetensors (float32) + tokenizer files; loads with ours and mlx-lm."""
    return write_model_dir(path, tiny_config(arch), tiny_model(arch, seed=seed, scale=scale))


def write_model_dir(path: Path, config: dict, model) -> Path:
    """``model`` (built from ``config``) in the mlx-community layout: config.json, model.safetensors, tokenizer."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps({**config, "eos_token_id": 2, "torch_dtype": "float32"}))
    write_tokenizer(path, config["vocab_size"])
    return path
