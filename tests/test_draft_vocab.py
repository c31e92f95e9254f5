"""Draft models must share the target's vocabulary exactly (refused up front otherwise, one line);
padded embedding rows are fine. Unsupported RoPE types and missing draft heads are one-line errors."""

import json
from pathlib import Path

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from conftest import tiny_config, tiny_model
from test_cli import run_cli
from tiny_dir import write_tiny_model_dir, write_tokenizer

PROMPT = "the cat sat on the mat the cat sat on"


def write_model(path: Path, seed: int = 1, tokens: int = 97, swap: tuple[str, str] | None = None, **config) -> Path:
    """A tiny model directory whose tokenizer has `tokens` entries (optionally two ids swapped)."""
    path.mkdir(parents=True)
    full = tiny_config("llama", **config)
    model = tiny_model("llama", seed=seed, scale=3.0, **config)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(model.parameters())), metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps({**full, "eos_token_id": 2, "torch_dtype": "float32"}))
    write_tokenizer(path, tokens)
    if swap:
        data = json.loads((path / "tokenizer.json").read_text())
        vocab = data["model"]["vocab"]
        vocab[swap[0]], vocab[swap[1]] = vocab[swap[1]], vocab[swap[0]]
        (path / "tokenizer.json").write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    return write_tiny_model_dir(tmp_path_factory.mktemp("target") / "m")


def generate(target, *args):
    return run_cli("generate", "-m", str(target), "-p", PROMPT, "--max-tokens", "16", "--json", *args)


def one_line_error(res) -> str:
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def test_same_tokenizer_with_padded_embedding_rows_is_accepted(target, tmp_path):
    """Same tokens and ids, 100 embedding rows against the target's 97 (as checkpoints pad them):
    greedy equals ar, and sampling runs (it crashed on mismatched shapes before)."""
    draft = write_model(tmp_path / "draft", vocab_size=100)
    ar = generate(target)
    drafted = generate(target, "--method", "draft-model", "--draft-model", str(draft))
    assert ar.returncode == 0 and drafted.returncode == 0, drafted.stderr
    assert json.loads(drafted.stdout)["tokens"] == json.loads(ar.stdout)["tokens"]
    sampled = generate(target, "--method", "draft-model", "--draft-model", str(draft), "--temp", "1", "--seed", "3")
    assert sampled.returncode == 0, sampled.stderr
    assert json.loads(sampled.stdout)["stats"]["new_tokens"] > 0


@pytest.mark.parametrize("variant, detail", [
    (dict(swap=("cat", "mat")), "'mat' is id 6 in one and 9 in the other"),  # same size, two ids swapped
    (dict(tokens=98, vocab_size=98), "98 tokens against 97"),  # one token more (the old rule allowed 1,024)
])
def test_a_different_vocabulary_is_refused_up_front(target, tmp_path, variant, detail):
    draft = write_model(tmp_path / "draft", **variant)
    error = one_line_error(generate(target, "--method", "draft-model", "--draft-model", str(draft)))
    assert "the draft model's vocabulary differs from the target's" in error and detail in error


def test_unsupported_rope_type_is_one_line(tmp_path):
    model = write_tiny_model_dir(tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(dict(config, rope_scaling={"rope_type": "nonsense", "factor": 4.0})))
    assert "nonsense" in one_line_error(generate(model)).lower()


def test_missing_draft_head_says_not_found(target):
    error = one_line_error(generate(target, "--method", "redrafter", "--drafter", "/nonexistent/head"))
    assert "draft head not found: /nonexistent/head" in error
