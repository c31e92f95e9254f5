"""The end of the model's context is never silent: `finish == "context"` (not "length"), tau stays
exactly 1 for ar, and a long prefill reports its progress."""

import json

import pytest

from mlx_specdec.drafters import make_drafter
from mlx_specdec.generate import PREFILL_CHUNK, Session
from mlx_specdec.stats import RunStats

from conftest import generate_ids, tiny_model
from test_cli import run_cli
from tiny_dir import write_tiny_model_dir

PROMPT = [5, 6, 7, 8, 9, 5, 6, 7]


@pytest.mark.parametrize("method", ["ar", "pld"])
def test_answer_cut_by_the_context_says_context(method):
    model = tiny_model(scale=3.0)
    tokens, steps = generate_ids(model, make_drafter(method), PROMPT, max_tokens=100, session=Session(model, 16))
    assert steps[-1].finish == "context" and all(s.finish is None for s in steps[:-1])
    assert all(s.tokens for s in steps)  # no empty step counted as a forward
    assert len(PROMPT) + len(tokens) == 16 + 1  # every slot used; the last token needs no forward
    stats = RunStats()
    for s in steps:
        stats.add(s)
    if method == "ar":
        assert stats.tau == 1.0 and stats.target_forwards == len(tokens)


def test_max_tokens_reached_first_says_length():
    model = tiny_model(scale=3.0)
    _, steps = generate_ids(model, make_drafter("ar"), PROMPT, max_tokens=4, session=Session(model, 16))
    assert steps[-1].finish == "length"


def test_prefill_reports_progress_per_chunk():
    model = tiny_model()
    calls = []
    session = Session(model, prefill_progress=lambda done, total: calls.append((done, total)))
    n = 2 * PREFILL_CHUNK + 100
    list(session.generate([5] * n, make_drafter("ar"), max_tokens=1))
    assert calls == [(0, n), (PREFILL_CHUNK, n), (2 * PREFILL_CHUNK, n), (n, n)]


@pytest.fixture(scope="module")
def short_context_dir(tmp_path_factory):
    path = write_tiny_model_dir(tmp_path_factory.mktemp("short") / "m")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(dict(config, max_position_embeddings=24)))
    return path


def test_cli_json_says_context_and_ar_tau_is_one(short_context_dir):
    res = run_cli("generate", "-m", str(short_context_dir), "--raw", "-p", "the cat sat on the mat", "--max-tokens", "100", "--json")
    assert res.returncode == 0, res.stderr
    payload = json.loads(res.stdout)
    assert payload["finish"] == "context" and payload["stats"]["tau"] == 1.0
    assert len(payload["prompt_tokens"]) + len(payload["tokens"]) == 24 + 1


def test_cli_text_mode_notes_the_full_context(short_context_dir):
    res = run_cli("generate", "-m", str(short_context_dir), "--raw", "-p", "the cat sat on the mat", "--max-tokens", "100")
    assert res.returncode == 0, res.stderr
    assert "the answer stopped because the model's context (24 tokens) is full" in res.stderr
    assert "tau 1.00" in res.stderr
