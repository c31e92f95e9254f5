"""The CLI end to end on a tiny model directory: JSON output, losslessness across methods, errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_dir import write_tiny_model_dir

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, MLX_SPECDEC_NO_BLAS_REEXEC="1")


def run_cli(*args, input=None):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env=ENV, input=input, timeout=300)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def test_generate_json_has_the_documented_fields(model_dir):
    res = run_cli("generate", "-m", str(model_dir), "-p", "hello world the cat", "--max-tokens", "12", "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert {"text", "tokens", "prompt_tokens", "model", "method", "stats"} <= payload.keys()
    assert {"tokens_per_s", "target_forwards", "new_tokens", "tau", "acceptance_by_depth"} <= payload["stats"].keys()
    assert payload["model"] == str(model_dir) and payload["method"] == "pld"  # chat's default (a CPU)
    assert payload["stats"]["new_tokens"] == len(payload["tokens"]) <= 12


def test_methods_agree_under_greedy(model_dir):
    outputs = {}
    for method in ("ar", "pld", "recycle"):
        res = run_cli("generate", "-m", str(model_dir), "-p", "the cat sat on the mat the cat sat", "--method", method,
                      "--max-tokens", "30", "--json")
        assert res.returncode == 0, res.stderr
        outputs[method] = json.loads(res.stdout)["tokens"]
    assert outputs["pld"] == outputs["ar"] and outputs["recycle"] == outputs["ar"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "/nonexistent/model"], "no model at"),
        (["-m", "/nonexistent/[b]model"], "/nonexistent/[b]model"),  # printed verbatim, not read as markup
        (["--temp", "-1"], "temperature"),
        (["--top-p", "0"], "top-p"),
        (["--method", "nope"], "unknown method"),
        (["--dtype", "float8"], "unknown dtype"),
        (["--method", "draft-model"], "needs --draft-model"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(model_dir, args, message):
    base = ["generate", "-p", "hi", "--max-tokens", "2"]
    if "-m" not in args:
        base += ["-m", str(model_dir)]
    res = run_cli(*base, *args)
    assert res.returncode != 0
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_prompt_longer_than_context(tmp_path):
    model_dir = write_tiny_model_dir(tmp_path / "m")
    config = json.loads((model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 16
    (model_dir / "config.json").write_text(json.dumps(config))
    res = run_cli("generate", "-m", str(model_dir), "-p", " ".join(["hello"] * 40), "--max-tokens", "4")
    assert res.returncode != 0 and "context" in res.stderr and "Traceback" not in res.stderr


def test_corrupt_weights(tmp_path):
    model_dir = write_tiny_model_dir(tmp_path / "m")
    data = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(data[: len(data) // 2])
    res = run_cli("generate", "-m", str(model_dir), "-p", "hi", "--max-tokens", "2")
    assert res.returncode != 0 and "model.safetensors" in res.stderr and "Traceback" not in res.stderr
