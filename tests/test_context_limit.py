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


def test_cli_shows_a_progress_bar_only_for_a_long_prefill(tmp_path):
    """In a terminal: "Reading the prompt n/N tokens" for a prompt over one chunk, nothing for a short one."""
    import sys

    pexpect = pytest.importorskip("pexpect")
    from test_cli import ENV, ROOT

    model = write_tiny_model_dir(tmp_path / "m")
    (tmp_path / "long.txt").write_text(" ".join(["the cat sat on the mat"] * 200))  # 1,200 words
    outputs = {}
    for name, prompt in (("long", f"@{tmp_path / 'long.txt'}"), ("short", "the cat sat")):
        child = pexpect.spawn(sys.executable, [str(ROOT / "cli.py"), "generate", "-m", str(model), "--raw", "-p", prompt,
                                               "--max-tokens", "2"], env=ENV, dimensions=(24, 120), encoding="utf-8", timeout=120)
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0, child.before
        outputs[name] = child.before
    assert "Reading the prompt" in outputs["long"] and "512/1200" in outputs["long"]
    assert "Reading the prompt" not in outputs["short"]


def test_chat_status_line_shows_prefill_progress_and_time_left():
    import time

    from mlx_specdec.cli.chat_view import prefill_text

    assert prefill_text(None, 900) == "reading the prompt (900 tokens)..."
    assert prefill_text((512, 1200, time.monotonic() - 2.0), 1200) == "reading the prompt 512/1200 tokens · 3s left"
    assert prefill_text((1200, 1200, time.monotonic() - 2.0), 1200) == "reading the prompt 1200/1200 tokens"


def test_chat_notes_an_answer_cut_by_the_context(short_context_dir, tmp_path):
    """The chat now reads finish == "context" (it guessed from "length" and the token count before)."""
    import subprocess
    import sys

    from test_cli import ENV, ROOT

    env = dict(ENV, MLX_SPECDEC_HISTORY_DIR=str(tmp_path / "history"))
    res = subprocess.run([sys.executable, str(ROOT / "cli.py"), "chat", "-m", str(short_context_dir), "--method", "ar",
                          "--max-tokens", "100"], input="the cat sat\n", capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "the answer reached the end of the model's context" in res.stderr
