"""GGUF file -> mlx-lm model directory (config.json, model.safetensors, tokenizer files).

Every tensor is dequantized with `gguf.quants.dequantize` (all llama.cpp quant types), renamed to
Hugging Face names and written in one dtype. Two llama.cpp conventions are undone on the way:

- GGUF lists dimensions fastest-first: a `[576, 49152]` tensor is a `(49152, 576)` numpy array.
- Gemma 3's RMSNorm multiplies by ``1 + w``; llama.cpp stores ``1 + w``, so 1 is subtracted back.
- For the llama architecture llama.cpp's converter permutes the rows of Q and K per head from
  Hugging Face's "rotate halves" RoPE layout to interleaved pairs; `unpermute` restores it.
  Worked example, one head of size 4: HF rows `[a0, a1, b0, b1]` (first half, second half) are
  stored as `[a0, b0, a1, b1]`. Qwen2/Qwen3 files keep the HF layout.

The tokenizer is rebuilt from `tokenizer.ggml.*` with the `tokenizers` library: a byte-level BPE
with the pre-tokenizer that `tokenizer.ggml.pre` names, or a SentencePiece BPE (``gguf_spm.py``).
"""

import json
import struct
from pathlib import Path

import mlx.core as mx
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .errors import UserError

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
ARCHITECTURES = {"llama", "qwen2", "qwen3", "gemma3"}

# blk.{i}.<gguf name>.<weight|bias>  ->  model.layers.{i}.<hf name>.<weight|bias>
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
# Gemma 3 norms around each sublayer; llama.cpp stores Gemma's RMSNorm weights as 1 + w (the
# multiplier), mlx-lm and Hugging Face as w (``rms_norm(x, 1 + w)``): GEMMA_NORM_SHIFT is undone.
GEMMA3_LAYER_NAMES = {
    **LAYER_NAMES,
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
GEMMA_NORM_SHIFT = 1.0
TOP_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}

# Pre-tokenizer split regexes, by `tokenizer.ggml.pre` (the same ones llama.cpp uses).
QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
LLAMA3_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
PRE_TOKENIZERS = {  # name -> (split digits one by one first, split regex (None: GPT-2's), NFC-normalize)
    "default": (False, None, False),
    "gpt-2": (False, None, False),
    "smollm": (True, None, False),
    "starcoder": (True, None, False),
    "refact": (True, None, False),
    "qwen2": (False, QWEN2_SPLIT, True),
    "deepseek-r1-qwen": (False, QWEN2_SPLIT, True),
    "llama-bpe": (False, LLAMA3_SPLIT, False),
    "llama3": (False, LLAMA3_SPLIT, False),
    "smaug-bpe": (False, LLAMA3_SPLIT, False),
}
CONTROL, USER_DEFINED = 3, 4  # tokenizer.ggml.token_type values


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute(w, n_head)` on the rows of a Q/K weight or bias.

    w: (n_head * head_dim, ...) as stored in the GGUF -> the same shape in Hugging Face order.
    """
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def open_gguf(gguf_path) -> GGUFReader:
    """A GGUFReader on the file, or UserError with a one-line reason."""
    path = Path(gguf_path)
    if not path.is_file():
        raise UserError(f"GGUF file not found: {path}")
    try:
        reader = GGUFReader(path)
        for tensor in reader.tensors:  # a truncated file fails here, not later
            if tensor.data.nbytes != tensor.n_bytes:
                raise ValueError(f"tensor {tensor.name} is cut short")
    except (OSError, ValueError, struct.error, IndexError, KeyError, UnicodeDecodeError, OverflowError, TypeError) as e:
        raise UserError(f"{path} is not a readable GGUF file ({e})") from e
    return reader


class Metadata:
    """`tokenizer.ggml.tokens`-style keys of a GGUF as Python values."""

    def __init__(self, reader: GGUFReader):
        self.fields = reader.fields

    def get(self, key, default=None):
        field = self.fields.get(key)
        return default if field is None else field.contents()

    def require(self, key):
        if key not in self.fields:
            raise UserError(f"GGUF file lacks the metadata key {key}")
        return self.get(key)


def convert_gguf(gguf_path, out_dir, dtype="float32", progress=None) -> Path:
    """Convert a llama/qwen2/qwen3 GGUF into an mlx-lm directory at `out_dir`; returns `out_dir`.

    progress(done, total, what) is called once per tensor and once for each file written.
    """
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    reader = open_gguf(gguf_path)
    meta = Metadata(reader)
    arch = meta.require("general.architecture")
    if arch not in ARCHITECTURES:
        raise UserError(f"GGUF architecture {arch!r} is not supported (supported: {', '.join(sorted(ARCHITECTURES))})")
    config = model_config(meta, arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = len(reader.tensors) + 2

    weights = {}
    for done, tensor in enumerate(reader.tensors):
        name = hf_name(tensor.name, arch)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        w = dequantize(tensor.data, tensor.tensor_type).reshape(shape)
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            w = unpermute(w, config["num_attention_heads"])
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            w = unpermute(w, config["num_key_value_heads"])
        elif arch == "gemma3" and name.endswith("norm.weight"):
            w = w - GEMMA_NORM_SHIFT
        weights[name] = mx.array(w.astype(np.float32, copy=False)).astype(DTYPES[dtype])
        mx.eval(weights[name])
        if progress:
            progress(done + 1, total, name)

    config["vocab_size"] = weights["model.embed_tokens.weight"].shape[0]
    config["tie_word_embeddings"] = "lm_head.weight" not in weights
    config["torch_dtype"] = dtype
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    del weights
    if progress:
        progress(total - 1, total, "model.safetensors")

    tokenizer, tokenizer_config, special_tokens = build_tokenizer(meta)
    tokenizer.save(str(out / "tokenizer.json"))
    tokenizer_config["model_max_length"] = config["max_position_embeddings"]
    config["bos_token_id"] = meta.get("tokenizer.ggml.bos_token_id")
    config["eos_token_id"] = meta.get("tokenizer.ggml.eos_token_id")
    write_json(out / "tokenizer_config.json", tokenizer_config)
    write_json(out / "special_tokens_map.json", special_tokens)
    write_json(out / "config.json", config)
    if progress:
        progress(total, total, "tokenizer and config")
    return out


def hf_name(gguf_name: str, arch: str = "llama") -> str:
    """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`."""
    if gguf_name in TOP_NAMES:
        return TOP_NAMES[gguf_name]
    parts = gguf_name.split(".")
    names = GEMMA3_LAYER_NAMES if arch == "gemma3" else LAYER_NAMES
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in names and parts[3] in ("weight", "bias"):
        return f"model.layers.{parts[1]}.{names[parts[2]]}.{parts[3]}"
    if gguf_name == "rope_freqs.weight":
        raise UserError("GGUF uses per-dimension RoPE frequency factors (Llama 3.1 style), which is not supported")
    raise UserError(f"GGUF tensor {gguf_name!r} has no Hugging Face equivalent known to this importer")


def model_config(meta: Metadata, arch: str) -> dict:
    """Hugging Face style config.json fields from `{arch}.*` metadata."""
    hidden = meta.require(f"{arch}.embedding_length")
    heads = meta.require(f"{arch}.attention.head_count")
    config = {
        "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM", "gemma3": "Gemma3ForCausalLM"}[arch]],
        "model_type": "gemma3_text" if arch == "gemma3" else arch,
        "hidden_size": hidden,
        "intermediate_size": meta.require(f"{arch}.feed_forward_length"),
        "num_hidden_layers": meta.require(f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", heads),
        "head_dim": meta.get(f"{arch}.attention.key_length", hidden // heads),
        "rms_norm_eps": short_float(meta.require(f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": short_float(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": meta.get(f"{arch}.context_length", 4096),
        "hidden_act": "silu",
    }
    if arch == "qwen2":
        config["attention_bias"] = True
    elif arch == "llama":
        config["attention_bias"] = False
        config["mlp_bias"] = False
    elif arch == "gemma3":
        config.update(gemma3_config(meta, config))
    scaling = meta.get(f"{arch}.rope.scaling.type", "none")
    if scaling in ("linear", "yarn"):
        config["rope_scaling"] = {"type": scaling, "rope_type": scaling, "factor": float(meta.require(f"{arch}.rope.scaling.factor"))}
        original = meta.get(f"{arch}.rope.scaling.original_context_length")
        if original:
            config["rope_scaling"]["original_max_position_embeddings"] = original
    elif scaling != "none":
        raise UserError(f"GGUF RoPE scaling {scaling!r} is not supported")
    return config


def gemma3_config(meta: Metadata, config: dict) -> dict:
    """Gemma 3's fixed settings, as llama.cpp hard-codes them (``llama-model.cpp``, LLM_ARCH_GEMMA3):
    5 sliding-window layers (local RoPE base 10,000) then one global layer; queries scaled by
    head_dim^-0.5 except the 27B (hidden / heads)."""
    hidden, heads, layers = config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]
    window = meta.require("gemma3.attention.sliding_window")
    pattern = 6
    return {
        "hidden_act": "gelu_pytorch_tanh",
        "hidden_activation": "gelu_pytorch_tanh",
        "sliding_window": window,
        "sliding_window_pattern": pattern,
        "layer_types": ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(layers)],
        "rope_local_base_freq": 10000.0,
        "query_pre_attn_scalar": hidden // heads if layers == 62 else config["head_dim"],
    }


def short_float(x) -> float:
    """A float32 metadata value as the shortest decimal that reads back the same: 1e-05, not 9.99999e-06."""
    return float(repr(np.float32(x)).removeprefix("np.float32(").removesuffix(")"))


def build_tokenizer(meta: Metadata) -> tuple[Tokenizer, dict, dict]:
    """(tokenizer, tokenizer_config.json, special_tokens_map.json) for a byte-level BPE GGUF.

    Every GGUF token keeps its id. Control tokens (type 3) become special added tokens, user-defined
    ones (type 4, like Qwen's `<tool_call>`) plain added tokens; `[PAD…]` fillers stay unreachable.
    Qwen2 vocabularies NFC-normalize like the original tokenizer, so decode(encode(text)) == text
    holds for NFC text there and for any text elsewhere.
    """
    model = meta.require("tokenizer.ggml.model")
    if model not in ("gpt2", "llama"):
        raise UserError(f"GGUF tokenizer {model!r} is not supported (byte-level BPE 'gpt2' or SentencePiece 'llama')")
    tokens = meta.require("tokenizer.ggml.tokens")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if model == "llama":
        from .gguf_spm import CONTROL as SPM_CONTROL, build_spm_tokenizer

        unk_id = meta.get("tokenizer.ggml.unknown_token_id")
        unk = tokens[unk_id] if unk_id is not None and 0 <= unk_id < len(tokens) else None
        tokenizer = build_spm_tokenizer(tokens, meta.require("tokenizer.ggml.scores"), types, unk, bool(meta.get("tokenizer.ggml.add_space_prefix", True)))
        vocab = {}
        for i, token in enumerate(tokens):
            vocab.setdefault(token, i)
        control = [t for i, (t, k) in enumerate(zip(tokens, types)) if k == SPM_CONTROL and vocab[t] == i]
        return _tokenizer_files(meta, tokenizer, tokens, vocab, control)
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise UserError(f"GGUF pre-tokenizer {pre!r} is not supported (known: {', '.join(sorted(PRE_TOKENIZERS))})")
    merges = [tuple(m.split(" ", 1)) for m in meta.require("tokenizer.ggml.merges")]

    vocab = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    digits, split, nfc = PRE_TOKENIZERS[pre]
    steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
    if split:
        steps.append(pre_tokenizers.Split(Regex(split), behavior="isolated"))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=split is None))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tokenizer.normalizer = normalizers.NFC() if nfc else None
    tokenizer.decoder = decoders.ByteLevel()

    control = [t for i, (t, k) in enumerate(zip(tokens, types)) if k == CONTROL and vocab[t] == i]
    user = [t for t, k in zip(tokens, types) if k == USER_DEFINED and not t.startswith("[PAD")]
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])
    if tokenizer.get_vocab_size(with_added_tokens=True) != len(vocab):
        raise UserError("GGUF vocabulary is inconsistent: an added token is missing from tokenizer.ggml.tokens")
    return _tokenizer_files(meta, tokenizer, tokens, vocab, control)


def _tokenizer_files(meta: Metadata, tokenizer: Tokenizer, tokens: list[str], vocab: dict, control: list[str]) -> tuple[Tokenizer, dict, dict]:
    """The special-token maps, BOS post-processor and chat template shared by both tokenizer kinds."""

    def token(key):
        index = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None and 0 <= index < len(tokens) else None

    special = {name: token(key) for name, key in [("bos_token", "bos"), ("eos_token", "eos"), ("unk_token", "unknown"), ("pad_token", "padding")]}
    special = {k: v for k, v in special.items() if v is not None}
    named = set(special.values())
    special_map = dict(special, additional_special_tokens=[t for t in control if t not in named])
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    if add_bos and "bos_token" in special:
        bos = special["bos_token"]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
        )
    tokenizer_config = dict(
        special,
        tokenizer_class="PreTrainedTokenizerFast",
        add_bos_token=add_bos,
        add_eos_token=bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        clean_up_tokenization_spaces=False,
    )
    template = meta.get("tokenizer.chat_template")
    if template:
        tokenizer_config["chat_template"] = template
    return tokenizer, tokenizer_config, special_map


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
