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
    assert payload["model"] == str(model_dir) and payload["method"] == "recycle"  # chat's default (a CPU)
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


@pytest.mark.parametrize(
    "args, message",
    [
        (["generate", "-p", "hi", "--seed", "-1"], "'--seed'"),
        (["generate", "-p", "hi", "--max-tokens", "0"], "'--max-tokens'"),
        (["generate", "-p", "hi", "--max-tokens", "many"], "'--max-tokens'"),
        (["generate", "-p", "hi", "--method", "pld", "--num-draft", "0"], "--num-draft must be an integer between 1 and 64, got 0"),
        (["generate", "-p", "hi", "--method", "pld", "--num-draft", "-2"], "--num-draft must be an integer between 0 and 64, got -2"),
        (["generate", "-p", "hi", "--method", "pld", "--beam-width", "2"], "--beam-width does not apply to --method pld"),
        (["generate", "-p", "hi", "--method", "ar", "--num-draft", "3"], "--num-draft does not apply to --method ar"),
        (["generate", "-p", "hi", "--method", "lookahead", "--ngram", "1"], "--ngram must be an integer >= 2"),
        (["generate", "-p", "hi", "--method", "lookahead", "--window", "wide"], "--window must be an integer >= 0 or 'auto'"),
        (["generate", "-p", "hi", "--top-k", "-1"], "top-k"),
        (["chat", "--seed", "-3"], "'--seed'"),
        (["chat", "--max-tokens", "0"], "'--max-tokens'"),
        (["chat", "--num-draft", "0"], "--num-draft must be an integer"),
        (["bench", "--methods", "pld", "--num-draft", "0"], "--num-draft must be an integer"),
        (["bench", "--methods", "pld", "--guesses", "2"], "--guesses does not apply to --method ar,pld"),
        (["bench", "--limit", "0"], "'--limit'"),
        (["bench", "--seed", "-1"], "'--seed'"),
        (["convert", "--hf-path", "x/y", "--q-bits", "8"], "--q-bits only applies with -q/--quantize"),
        (["convert", "--hf-path", "x/y", "-q", "--q-group-size", "16"], "--q-group-size must be one of 32, 64, 128"),
        (["convert", "--hf-path", "x/y", "-q", "--q-bits", "7"], "--q-bits must be one of"),
        (["train-drafter", "--out", "o", "--steps", "0"], "'--steps'"),
        (["train-drafter", "--out", "o", "--lr", "0"], "--lr must be > 0"),
        (["train-drafter", "--out", "o", "--seed", "-1"], "'--seed'"),
        (["train-drafter", "--out", "o", "--gen-minutes", "-1"], "'--gen-minutes'"),
        (["train-drafter", "--out", "o", "--kl-weight", "-0.5"], "'--kl-weight'"),
        (["train-drafter", "--out", "o", "--eval-every", "0"], "'--eval-every'"),
        (["train-drafter", "--out", "o", "--lr", "nan"], "'--lr'"),
        (["train-drafter", "--out", "o", "--read-minutes", "5"], "--read-minutes only applies with --read-answers"),
        (["pull", "no-such-model"], "no-such-model"),
    ],
)
def test_every_numeric_option_is_checked_in_one_line(model_dir, tmp_path, args, message):
    if args[0] in ("generate", "chat", "bench"):
        args = args + ["-m", str(model_dir)]
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                         env=dict(ENV, MLX_SPECDEC_HOME=str(tmp_path / "store")), input="", timeout=300, cwd=tmp_path)
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in res.stderr, res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["generate", "chat", "bench", "convert", "pull", "train-drafter"])
def test_help_shows_no_value_for_flags(command):
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), command, "--help"], capture_output=True, text=True,
                         env=dict(ENV, COLUMNS="200"), timeout=60)
    assert res.returncode == 0 and "<bool>" not in res.stdout and "--help" in res.stdout, res.stdout
    if command == "bench":
        assert "mlx-specdec[plot]" in res.stdout
    if command == "generate":
        assert "--num-draft" in res.stdout and "INT" in res.stdout


def test_app_help_states_what_is_measured():
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True,
                         env=dict(ENV, COLUMNS="200"), timeout=60)
    text = " ".join(res.stdout.split())
    assert "several times" not in text and all(f in text for f in ("1.72x", "1.18x", "3.04x", "1.59x"))
    assert "same tokens as plain decoding" in text
    readme = (ROOT / "README.md").read_text()
    overall = next(l for l in readme.splitlines() if l.startswith("| **overall** | 40 | 20.3 |"))
    assert overall.split(" | ")[5] == "1.59x" and overall.split(" | ")[7] == "1.72x"  # recycle's and redrafter's columns
    assert "| rag | 3 | 18.7 | 1.22x | 2.31 | 1.26x | 3.10 | 1.18x" in readme and "| extraction | 3 | 19.8 | 2.43x | 2.81 | 2.99x | 3.96 | 3.04x" in readme


def test_train_drafter_refuses_an_unknown_reader_in_one_line(tmp_path):
    res = run_cli("train-drafter", "--out", str(tmp_path / "head"), "--reader", "numpy")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "--reader must be auto, mlx or torch" in res.stderr and not (tmp_path / "head").exists()
