"""Linear inputs padded to the row count the CPU's BLAS runs fastest: the plan, the padded
forward (same logits, lossless decoding) and where it applies."""

import json

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.cache import make_prompt_cache

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.recycle import make_recycle
from mlx_specdec.generate import Session
from mlx_specdec.models import row_padding
from mlx_specdec.tree import Tree

from conftest import ARCHS, generate_ids, tiny_model


def test_plan_pads_only_to_a_measured_cheaper_count():
    # the docstring's example: 3 rows cost more than 4; 4 costs more than 2, so 1 and 2 stay
    assert row_padding.plan_from_costs({1: 10.0, 2: 11.0, 3: 14.0, 4: 12.0}) == {3: 4}
    # OpenBLAS on a 2-core EPYC (ms, SmolLM2's products): 4-15 rows all go to 16
    measured = {1: 35.7, 2: 40.1, 3: 43.9, 4: 51.1, 8: 56.5, 12: 89.3, 16: 46.4}
    assert row_padding.plan_from_costs(measured) == {4: 16, 8: 16, 12: 16}
    # within the 3% gain: no padding
    assert row_padding.plan_from_costs({1: 1.0, 2: 1.0, 3: 0.99}) == {}
    # the cheapest larger count wins, not merely the largest
    assert row_padding.plan_from_costs({1: 5.0, 2: 9.0, 3: 6.0, 4: 7.0}) == {2: 3}


def _padded_model(plan, seed=0, arch="llama"):
    target = tiny_model(arch, seed=seed, scale=3.0)
    row_padding.install(target, plan)
    return target


@pytest.mark.parametrize("arch", ["llama", "llama3-scaled"])  # tied head (as_linear) and an untied lm_head
def test_padded_forward_gives_the_same_logits(arch, monkeypatch):
    plain = tiny_model(arch, seed=0, scale=3.0)
    padded = _padded_model({n: 16 for n in range(2, 16)}, arch=arch)
    seen = []
    original = row_padding._RowPadded._padded
    monkeypatch.setattr(row_padding._RowPadded, "_padded", lambda self, fn, x: seen.append((self._hooks.pad_rows, x.shape[1])) or original(self, fn, x))
    tree = Tree(np.array([5, 6, 7, 8, 9]), np.array([-1, 0, 1, 0, 3]))
    for target in (plain, padded):
        session = Session(target)
        mx.eval(session.forward(Tree.chain(1, [2, 3, 4]))[0])  # some cache first
        seen.clear()
        logits, hidden = session.forward(tree)
        if target is plain:
            expected = np.array(logits)
    assert seen and all(rows == 16 and n == 5 for rows, n in seen)  # every Linear ran on 16 rows
    assert np.allclose(np.array(logits), expected, atol=1e-4, rtol=1e-4)
    assert np.array(logits).shape == expected.shape == (5, plain.args.vocab_size)


def test_not_padded_outside_the_plan_or_in_mlx_lms_own_forwards(monkeypatch):
    target = _padded_model({3: 8})
    seen = []
    original = row_padding._RowPadded._padded
    monkeypatch.setattr(row_padding._RowPadded, "_padded", lambda self, fn, x: seen.append(self._hooks.pad_rows) or original(self, fn, x))
    session = Session(target)
    mx.eval(session.forward(Tree.chain(1, [2]))[0])  # 2 tokens: not in the plan
    assert seen and set(seen) == {None}
    seen.clear()
    mx.eval(session.forward(Tree.chain(3, [4, 5]))[0])  # 3 tokens: padded to 8
    assert set(seen) == {8}
    seen.clear()
    mx.eval(target.module(mx.array([[1, 2, 3]]), cache=make_prompt_cache(target.module)))  # a peer's forward
    assert seen and set(seen) == {None}


@pytest.mark.parametrize("drafter_name", ["pld", "recycle"])
def test_greedy_equals_autoregressive_with_padding(drafter_name):
    rng = np.random.default_rng(3)
    for seed in (0, 1):
        target = _padded_model({n: 16 for n in range(2, 16)}, seed=seed)
        plain = tiny_model("llama", seed=seed, scale=3.0)
        for _ in range(3):
            base = rng.integers(0, 97, size=5).tolist()
            prompt = base * 3 + rng.integers(0, 97, size=2).tolist()
            expected, _ = generate_ids(plain, make_drafter("ar"), prompt, 30)
            drafter = make_drafter("pld", max_ngram=2, min_ngram=1, num_draft=5, num_matches=4) if drafter_name == "pld" else make_recycle(target, budget=None, num_nodes=6)
            got, steps = generate_ids(target, drafter, prompt, 30)
            assert got == expected
            assert any(s.forward_tokens >= 2 for s in steps)  # drafts were verified in padded forwards


def test_plan_is_measured_once_and_cached(tmp_path):
    target = tiny_model("llama", seed=0)
    costs = row_padding.measure_row_costs(target, repeats=1)
    assert sorted(costs) == list(range(1, row_padding.MAX_ROWS + 1)) and all(c > 0 for c in costs.values())
    plan = row_padding.cached_plan(target, store=tmp_path)
    files = list((tmp_path / ".tree-costs").glob("*rows*.json"))
    assert len(files) == 1
    saved = json.loads(files[0].read_text())
    assert {int(k): v for k, v in saved["plan"].items()} == plan
    assert all(m < padded <= row_padding.MAX_ROWS for m, padded in plan.items())
    saved["plan"] = {"5": 9}
    files[0].write_text(json.dumps(saved))
    assert row_padding.cached_plan(target, store=tmp_path) == {5: 9}  # read, not measured again


def test_applies_only_to_float32_unquantized_models():
    import mlx.nn as nn

    target = tiny_model("llama", seed=0)
    assert row_padding.applies(target)
    nn.quantize(target.module, group_size=32, bits=8)
    assert not row_padding.applies(target)
