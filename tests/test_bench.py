"""`mlx-specdec bench` on a tiny model directory: JSON schema, the losslessness check, resume, Ctrl-C."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mlx_specdec import bench as lib
from mlx_specdec.cli.app import app
from mlx_specdec.errors import UserError
from tiny_dir import write_tiny_model_dir

PROMPTS = [
    {"question_id": 1, "category": "chat", "turns": ["hello world the cat", "what is the mat ?"]},
    {"question_id": 2, "category": "chat", "turns": ["the cat sat on the mat the cat sat"]},
    {"question_id": 3, "category": "copy", "turns": ["hi a cat is on a mat , a cat is on a mat"], "reference": ["x"]},
    {"question_id": 4, "category": "copy", "turns": ["the mat the mat the mat"]},
]
ROW_KEYS = {"question_id", "category", "method", "tokens", "new_tokens", "target_forwards", "seconds", "tokens_per_s",
            "tau", "prefill_s", "prefill_tokens", "decode_tokens", "turn_new_tokens", "draft_s", "verify_s",
            "bookkeeping_s", "proposed_by_depth", "accepted_by_depth", "peak_memory_mb", "matches_ar", "peer"}
SUMMARY_KEYS = {"prompts", "new_tokens", "seconds", "tokens_per_s", "speedup_mean", "speedup_median", "speedup_total", "tau", "mismatches", "checked"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return write_tiny_model_dir(root / "model"), prompts


def bench(setup, out, *args):
    model, prompts = setup
    result = CliRunner().invoke(app, ["bench", "-m", str(model), "--prompts", str(prompts), "--max-tokens", "6",
                                      "--out", str(out), *args])
    if isinstance(result.exception, UserError):
        raise result.exception
    return result, (json.loads(out.read_text()) if out.exists() else None)


def test_json_schema_and_greedy_agreement(setup, tmp_path):
    plot = tmp_path / "r.png"
    pytest.importorskip("matplotlib")
    res, report = bench(setup, tmp_path / "r.json", "--methods", "pld", "--peers", "mlx-lm", "--plot", str(plot))
    assert res.exit_code == 0, res.output
    meta = report["meta"]
    assert {"machine", "backend", "dtype", "blas", "model", "versions", "command", "date", "settings"} <= meta.keys()
    assert {"platform", "processor", "cores"} <= meta["machine"].keys()
    assert {"mlx", "mlx_lm", "mlx_specdec"} <= meta["versions"].keys() and meta["dtype"] == "float32"
    rows = report["results"]
    assert [(r["question_id"], r["method"]) for r in rows[:3]] == [(1, "ar"), (1, "pld"), (1, "mlx-lm")]
    assert len(rows) == 3 * len(PROMPTS) and all(ROW_KEYS <= r.keys() for r in rows)
    for r in rows:
        assert r["new_tokens"] == len(r["tokens"]) == sum(r["turn_new_tokens"]) <= 6 * len(r["turn_new_tokens"])
        assert r["seconds"] > 0 and r["peak_memory_mb"] > 0
        assert r["matches_ar"] is (None if r["method"] == "ar" else True)
    assert [len(r["turn_new_tokens"]) for r in rows if r["method"] == "ar"] == [2, 1, 1, 1]
    assert all(r["tau"] == 1.0 for r in rows if r["method"] in ("ar", "mlx-lm"))
    by = {(r["question_id"], r["method"]): r for r in rows}  # one prefill per prompt, reused by the next method
    assert by[2, "ar"]["prefill_tokens"] == by[2, "mlx-lm"]["prefill_tokens"] > 0 and by[2, "pld"]["prefill_tokens"] == 0
    summary = report["summary"]
    assert set(summary["by_category"]) == {"chat", "copy"} and set(summary["overall"]) == {"ar", "pld", "mlx-lm"}
    assert all(SUMMARY_KEYS <= s.keys() for s in summary["overall"].values())
    assert summary["overall"]["ar"]["speedup_total"] == 1.0 and summary["lossless"] is True
    assert summary["overall"]["pld"]["checked"] == len(PROMPTS) and summary["mismatches"] == {"ar": 0, "pld": 0, "mlx-lm": 0}
    ar_rate = {r["question_id"]: r["tokens_per_s"] for r in rows if r["method"] == "ar"}
    ratios = [r["tokens_per_s"] / ar_rate[r["question_id"]] for r in rows if r["method"] == "pld"]
    assert summary["overall"]["pld"]["speedup_median"] == pytest.approx(np.median(ratios), abs=1e-4)
    assert summary["overall"]["pld"]["speedup_mean"] == pytest.approx(np.mean(ratios), abs=1e-4)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def corrupt(method):
    """Wrap the function that runs one (prompt, method) so that ``method`` returns altered tokens."""
    real = lib.run_conversation

    def run_conversation(tokenizer, prompt, name, runner, max_tokens):
        row = real(tokenizer, prompt, name, runner, max_tokens)
        if name == method:
            row["tokens"] = row["tokens"][:-1] + [-1]
        return row

    return run_conversation


def test_a_broken_method_is_caught(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(lib, "run_conversation", corrupt("pld"))
    res, report = bench(setup, tmp_path / "r.json", "--methods", "ar,pld", "--limit", "2")
    assert res.exit_code == 1 and "differs from ar" in res.output
    assert report["summary"]["mismatches"] == {"ar": 0, "pld": 2} and report["summary"]["lossless"] is False
    assert [r["matches_ar"] for r in report["results"]] == [None, False, None, False]
    res, _ = bench(setup, tmp_path / "r2.json", "--methods", "pld", "--limit", "1", "--allow-mismatch")
    assert res.exit_code == 0, res.output


def test_resume_runs_only_new_rows_and_ctrl_c_keeps_rows(setup, tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    res, first = bench(setup, out, "--methods", "pld", "--limit", "1")
    assert res.exit_code == 0 and len(first["results"]) == 2
    ran = []
    real = lib.run_conversation

    def spy(tokenizer, prompt, name, runner, max_tokens):
        if prompt.category != "warm-up":
            ran.append((prompt.question_id, name))
            if len(ran) == 3:
                raise KeyboardInterrupt
        return real(tokenizer, prompt, name, runner, max_tokens)

    monkeypatch.setattr(lib, "run_conversation", spy)
    res, second = bench(setup, out, "--methods", "pld", "--limit", "3", "--resume")
    # limit 3 = prompts 1 (chat), 3 (copy), 2 (chat): round-robin over categories
    assert res.exit_code == 130 and ran == [(3, "ar"), (3, "pld"), (2, "ar")]
    assert second["results"][:2] == first["results"][:2] and len(second["results"]) == 4
    ran.clear()
    monkeypatch.setattr(lib, "run_conversation", real)
    res, third = bench(setup, out, "--methods", "pld", "--limit", "3", "--resume")
    assert res.exit_code == 0 and len(third["results"]) == 6 and third["results"][:4] == second["results"][:4]
    with pytest.raises(UserError, match="max_tokens"):
        bench(setup, out, "--methods", "pld", "--resume", "--max-tokens", "7")


def test_selection_is_round_robin_and_covers_categories(tmp_path):
    packaged = lib.read_prompts([Path(lib.__file__).parent / "data" / "bench_prompts.jsonl"])
    categories = list(dict.fromkeys(p.category for p in packaged))
    assert len(categories) == 13 and all(sum(p.category == c for p in packaged) >= 3 for c in categories)
    picked = lib.select(packaged, limit=40)
    assert {p.category for p in lib.select(packaged, limit=13)} == set(categories) and len(picked) == len(packaged)
    assert [p.category for p in lib.select(packaged, ["qa", "rag"], limit=3)] == ["qa", "rag", "qa"]
    with pytest.raises(UserError, match="no prompts in category"):
        lib.select(packaged, ["nope"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "category": "x", "turns": "not a list"}\n')
    with pytest.raises(UserError, match="bad.jsonl:1"):
        lib.read_prompts([bad])


def test_redrafter_tree_variants_run_side_by_side(setup, tmp_path):
    """``redrafter:beam,redrafter:dynamic`` benchmarks both tree shapes of one head in one run."""
    from mlx_specdec.drafters.redrafter_head import HeadConfig, ReDrafterHead, save_head
    from mlx_specdec.loader import load

    target = load(setup[0], "float32").model
    head = save_head(ReDrafterHead(HeadConfig.for_target(target, num_blocks=1)), tmp_path / "head")  # untrained: random drafts
    res, report = bench(setup, tmp_path / "r.json", "--methods", "redrafter:beam,redrafter:dynamic", "--drafter", str(head),
                        "--limit", "2", "--beam-width", "2", "--tree-size", "5")
    assert res.exit_code == 0, res.output
    assert [r["method"] for r in report["results"]] == ["ar", "redrafter:beam", "redrafter:dynamic"] * 2
    assert report["summary"]["mismatches"] == {"ar": 0, "redrafter:beam": 0, "redrafter:dynamic": 0}
    dynamic = [r for r in report["results"] if r["method"] == "redrafter:dynamic"]
    assert all(r["target_forwards"] > 0 and sum(r["proposed_by_depth"]) > 0 for r in dynamic)
    for methods, message in [("redrafter:wide", "unknown method variant"), ("pld:beam", "unknown method variant"),
                             ("nope", "unknown method")]:
        with pytest.raises(UserError, match=message):
            bench(setup, tmp_path / "bad.json", "--methods", methods, "--drafter", str(head), "--limit", "1")
