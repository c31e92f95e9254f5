"""``--method triforce`` through the CLI: greedy output equals ar's; bad input is one line, exit != 0."""

import json
import shutil

import pytest

from test_cli import run_cli
from tiny_dir import write_tiny_model_dir

LONG = "the cat sat on the mat . hello world , what is a cat ? " * 40  # ~600 tokens, over the budget
GEOMETRY = ["--budget", "128", "--chunk", "8", "--sinks", "8", "--window", "16"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tf")
    target = write_tiny_model_dir(root / "target")
    draft = write_tiny_model_dir(root / "draft", seed=1)
    other = write_tiny_model_dir(root / "other", seed=2)
    (other / "tokenizer.json").write_text((other / "tokenizer.json").read_text().replace('"cat"', '"dog"'))
    return target, draft, other


def _generate(model, *args):
    return run_cli("generate", "-m", str(model), "-p", LONG, "--max-tokens", "24", "--json", *args)


def test_triforce_equals_ar_through_the_cli(dirs):
    target, draft, _ = dirs
    ar = _generate(target)
    assert ar.returncode == 0, ar.stderr
    for extra in ([], ["--draft-model", str(draft)]):
        res = _generate(target, "--method", "triforce", *GEOMETRY, "--gamma2", "5", *extra)
        assert res.returncode == 0, res.stderr
        payload = json.loads(res.stdout)
        assert payload["tokens"] == json.loads(ar.stdout)["tokens"]
        assert payload["stats"]["middle"]["forwards"] > 0


@pytest.mark.parametrize("args, message", [
    (["--budget", "4096"], "not smaller than the model's context"),
    (["--budget", "24", "--sinks", "8", "--window", "16"], "at least --sinks + --window + --chunk"),
    (["--window", "auto"], "not 'auto'"),
    (["--gamma2", "0"], "--gamma2 must be an integer >= 1"),
    (["--num-draft", "-1"], "--num-draft must be an integer between 0 and 64"),
])
def test_bad_triforce_options(dirs, args, message):
    res = _generate(dirs[0], "--method", "triforce", *args)
    assert res.returncode != 0 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_budget_larger_than_the_prompt(dirs):
    res = run_cli("generate", "-m", str(dirs[0]), "-p", "hello world", "--method", "triforce", *GEOMETRY)
    assert res.returncode != 0 and "not smaller than the context" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_draft_model_with_another_tokenizer(dirs):
    target, _, other = dirs
    res = _generate(target, "--method", "triforce", *GEOMETRY, "--draft-model", str(other))
    assert res.returncode != 0 and "vocabulary differs" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_bench_context_checks(dirs):
    res = run_cli("bench", "-m", str(dirs[0]), "--context", "512", "--max-tokens", "16", "--methods", "triforce", "--budget", "1024")
    assert res.returncode != 0 and "not smaller than the context" in res.stderr, res.stderr
    res = run_cli("bench", "-m", str(dirs[0]), "--context", "4096", "--methods", "triforce")
    assert res.returncode != 0 and "longer than the model's context" in res.stderr, res.stderr
