"""`convert --hf-path` on a local Hugging Face directory (offline), and its one-line errors."""

import json

import pytest

from test_cli import run_cli
from tiny_dir import write_tiny_model_dir


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    return write_tiny_model_dir(tmp_path_factory.mktemp("hf") / "tiny-llama", arch="qwen2")


@pytest.mark.parametrize("extra", [[], ["--dtype", "float16"], ["-q", "--q-bits", "8", "--q-group-size", "32"]])
def test_round_trip_and_generate(hf_dir, tmp_path, extra):
    out = tmp_path / "mlx"
    res = run_cli("convert", "--hf-path", str(hf_dir), "--mlx-path", str(out), *extra)
    assert res.returncode == 0, res.stderr
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))
    if "-q" in extra:
        assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 8
    dtype = [] if extra else ["--dtype", "float32"]
    res = run_cli("generate", "-m", str(out), "-p", "hello world", "--max-tokens", "6", "--json", *dtype)
    assert res.returncode == 0, res.stderr
    assert len(json.loads(res.stdout)["tokens"]) >= 1
    if not extra:  # float32 round trip: the same tokens as the original directory
        ref = run_cli("generate", "-m", str(hf_dir), "-p", "hello world", "--max-tokens", "6", "--json")
        assert json.loads(ref.stdout)["tokens"] == json.loads(res.stdout)["tokens"]


def _assert_one_line_error(res, needle):
    assert res.returncode != 0, res.stdout
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in res.stderr, res.stderr


def test_missing_path(tmp_path):
    _assert_one_line_error(run_cli("convert", "--hf-path", str(tmp_path / "nope"), "--mlx-path", str(tmp_path / "o")), "does not exist")


def test_truncated_shard(tmp_path):
    d = write_tiny_model_dir(tmp_path / "m")
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) - 1000])
    _assert_one_line_error(run_cli("convert", "--hf-path", str(d), "--mlx-path", str(tmp_path / "o")), "model.safetensors")
    assert not (tmp_path / "o").exists()


def test_missing_shard_from_index(tmp_path):
    d = write_tiny_model_dir(tmp_path / "m")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "model-00002-of-00002.safetensors"}}))
    _assert_one_line_error(run_cli("convert", "--hf-path", str(d), "--mlx-path", str(tmp_path / "o")), "model-00002-of-00002")


def test_unsupported_architecture(tmp_path):
    d = write_tiny_model_dir(tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "mamba"}))
    _assert_one_line_error(run_cli("convert", "--hf-path", str(d), "--mlx-path", str(tmp_path / "o")), "unsupported architecture")


def test_existing_output_is_not_overwritten(hf_dir, tmp_path):
    (tmp_path / "o").mkdir()
    _assert_one_line_error(run_cli("convert", "--hf-path", str(hf_dir), "--mlx-path", str(tmp_path / "o")), "already exists")
