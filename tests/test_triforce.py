"""TriForce: cache views (chunk selection by hand, exactness of a full-budget view) and greedy
losslessness on tiny random models whose context is longer than the retrieval budget."""

import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.cache import KVCache
from mlx_specdec.cache_views import RetrievalView, StreamingView, selection_geometry
from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.recycle import Recycle
from mlx_specdec.drafters.triforce import make_triforce

from conftest import generate_ids, tiny_model


def test_selection_geometry_example():
    assert selection_geometry(40, 16, 4, 4, 4) == (8, 2, 36)  # the docstring's example
    assert selection_geometry(12, 8, 2, 2, 2) == (4, 2, 10)
    assert selection_geometry(41, 16, 4, 4, 4) == (8, 2, 36)  # the tail grows to 5 slots
    assert selection_geometry(10, 64, 4, 4, 4) == (0, 0, 4)  # too short: sinks + tail only


def test_chunk_selection_by_hand():
    """12 slots, chunk 2, sinks 2, window 2, budget 8: four chunks (slots 2..9), two are kept.

    Chunk mean keys (head 0 / head 1 share them): c0 [1, .2], c1 [0, 1], c2 [-1, 0], c3 [2, 2].
    KV head 0's query heads are [1, 0] and [0, 1] -> group mean [.5, .5] -> scores .6, .5, -.5, 2
    -> chunks 3 and 0. KV head 1's are both [-1, 0] -> scores -1, 0, 1, -2 -> chunks 2 and 1.
    """
    means = np.array([[1, 0.2], [0, 1], [-1, 0], [2, 2]])
    keys = np.zeros((1, 2, 12, 2))
    for j, m in enumerate(means):  # two keys per chunk, m +- a spread that the mean cancels
        keys[0, :, 2 + 2 * j] = m + [0.3, -0.7]
        keys[0, :, 3 + 2 * j] = m - [0.3, -0.7]
    keys[0, :, [0, 1, 10, 11]] = 50.0  # sinks and tail: never scored
    values = np.broadcast_to(np.arange(12.0)[None, None, :, None], (1, 2, 12, 2))  # value = slot id
    cache = KVCache(1)
    cache.update(0, mx.array(keys, dtype=mx.float32), mx.array(values, dtype=mx.float32))
    cache.advance(12)
    view = RetrievalView(cache, budget=8, chunk=2, sinks=2, window=2)
    view.rebuild()
    queries = mx.array([[[[1, 0]], [[0, 1]], [[-1, 0]], [[-1, 0]]]], dtype=mx.float32)  # (1, 4 heads, 1, 2)
    new_k, new_v = mx.full((1, 2, 1, 2), 7.0), mx.full((1, 2, 1, 2), 99.0)
    k, v = view.update(0, new_k, new_v, queries=queries)
    view.advance(1)
    assert view.selected[0].tolist() == [[[0, 1, 2, 3, 8, 9, 10, 11], [0, 1, 4, 5, 6, 7, 10, 11]]]
    assert v[0, :, :, 0].tolist() == [[0, 1, 2, 3, 8, 9, 10, 11, 99], [0, 1, 4, 5, 6, 7, 10, 11, 99]]
    assert (view.offset, view.length, cache.offset) == (13, 9, 12)  # absolute position; the full cache is untouched
    view.keep(12, [0])
    view.rebuild()
    assert (view.offset, view.length) == (12, 8)


def test_full_budget_view_and_streaming_view_equal_full_cache():
    model = tiny_model(seed=1)
    ids = mx.array(np.random.default_rng(0).integers(0, 97, (1, 40)))
    new = mx.array([[5, 7, 9]])
    full = KVCache(2)
    model(ids, full)
    expected = np.array(model(new, full)[0])
    cache = KVCache(2)
    model(ids, cache)
    view = RetrievalView(cache, budget=64, chunk=4, sinks=4, window=4)
    view.rebuild()
    assert np.array_equal(np.array(model(new, view)[0]), expected)
    stream = StreamingView(2, sinks=4, window=64)
    model(ids, stream)
    assert np.array_equal(np.array(model(new, stream)[0]), expected)
    small = RetrievalView(cache, budget=16, chunk=4, sinks=4, window=4)
    small.rebuild()
    assert small.length == 4 + 8 + 4 and not np.allclose(np.array(model(new, small)[0]), expected)


def _triforce(target, draft=None, **kw):
    options = dict(kv_budget=24, chunk=4, sinks=4, window=4, gamma2=5, num_draft=3)
    return make_triforce(target, draft=draft, **{**options, **kw})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("bottom", ["pld", "draft-model", "recycle"])
def test_greedy_triforce_equals_ar(seed, bottom):
    target = tiny_model(seed=seed, scale=3.0)
    draft = tiny_model(seed=seed + 100, scale=3.0, num_hidden_layers=1) if bottom == "draft-model" else None
    rng = np.random.default_rng(seed)
    prompt = rng.integers(3, 97, 30).tolist() * 2 + rng.integers(3, 97, 20).tolist()  # repeats for pld
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=60)
    drafter = _triforce(target, draft, **({"bottom": "recycle"} if bottom == "recycle" else {}))
    if bottom == "recycle":
        assert isinstance(drafter.bottom, Recycle)
        # a fixed tree size: a tiny model's timed cost table is noise, and its budget may rightly
        # decide that no draft pays (then the middle has nothing to accept)
        drafter.bottom = Recycle(target.args.vocab_size, num_nodes=6)
    trees = []
    original = drafter._forward
    drafter._forward = lambda tree: trees.append(tree) or original(tree)
    got, steps = generate_ids(target, drafter, prompt, max_tokens=60)
    assert got == expected
    middle = [s.inner for s in steps if s.inner]
    assert middle and sum(s.accepted for s in steps) > 0  # the top accepted some of the middle's drafts
    if bottom != "pld":
        assert sum(m[2] for m in middle) > 0  # and the middle some of the bottom's
    assert max(int(t.depth.max()) for t in trees) <= 4  # never deeper than gamma2 - 1 (nor gamma1 = 3 for the bottom)
    if bottom == "recycle":
        assert max(int(t.depth.max()) for t in trees) <= 3 and any(not t.is_chain for t in trees)


def test_bottom_options():
    from mlx_specdec.errors import UserError

    target = tiny_model(seed=0)
    with pytest.raises(UserError, match="--bottom must be pld or recycle"):
        _triforce(target, bottom="eagle")
    with pytest.raises(UserError, match="give one"):
        _triforce(target, tiny_model(seed=1, num_hidden_layers=1), bottom="recycle")


def test_middle_alone_equals_ar():
    """gamma1 = 0: no bottom drafter, the middle drafts token by token."""
    target = tiny_model(seed=5, scale=3.0)
    prompt = np.random.default_rng(5).integers(3, 97, 70).tolist()
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=40)
    got, steps = generate_ids(target, _triforce(target, num_draft=0), prompt, max_tokens=40)
    assert got == expected
    assert all(s.inner[1] == 0 and s.inner[0] == 5 for s in steps if s.inner)  # gamma2 forwards, nothing proposed


def test_eos_inside_an_accepted_run():
    target = tiny_model(seed=4, scale=3.0)
    prompt = np.random.default_rng(4).integers(3, 97, 60).tolist()
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=60)
    drafter = _triforce(target, kv_budget=48)  # a large budget: the middle agrees with the top, long runs
    free, steps = generate_ids(target, drafter, prompt, max_tokens=60)
    assert free == expected
    # an EOS that the top accepted in the middle of a drafted run
    run = next(s for s in steps if not s.prefill and s.accepted >= 2)
    at = sum(len(s.tokens) for s in steps[: steps.index(run)]) + 1
    eos = expected[at]
    cut = expected[: expected.index(eos)]
    got, _ = generate_ids(target, _triforce(target, kv_budget=48), prompt, max_tokens=60, eos=[eos])
    ar, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=60, eos=[eos])
    assert got == ar == cut


def test_bad_options():
    from mlx_specdec.errors import UserError

    target = tiny_model(seed=0)
    with pytest.raises(UserError, match="at least --sinks"):
        _triforce(target, kv_budget=10, sinks=4, window=4)
    with pytest.raises(UserError, match="model's context"):
        _triforce(target, kv_budget=4096)
    with pytest.raises(UserError, match="not smaller than the context"):
        generate_ids(target, _triforce(target, kv_budget=64), list(range(3, 40)), max_tokens=4)


def test_chunk_means_reused_across_rebuilds_match_fresh_ones():
    model = tiny_model(seed=6)
    ids = np.random.default_rng(6).integers(0, 97, 50).tolist()
    cache = KVCache(2)
    model(mx.array(ids)[None], cache)
    view = RetrievalView(cache, budget=16, chunk=4, sinks=4, window=4)
    for step in range(12):  # the cache grows by one token a step, a new chunk every 4
        view.rebuild()
        model(mx.array([[step + 1]]), view)
        fresh = RetrievalView(cache, budget=16, chunk=4, sinks=4, window=4)
        fresh.rebuild()
        model(mx.array([[step + 1]]), fresh)
        assert all(mx.array_equal(a, b) for a, b in zip(view.selected, fresh.selected))
        assert mx.allclose(view.means[1], fresh.means[1])
        model(mx.array([[step + 1]]), cache)  # the top level appends the token to the full cache


def test_gamma2_auto_equals_ar_and_tries_every_length():
    from mlx_specdec.drafters.triforce import Gamma2Chooser

    target = tiny_model(seed=7, scale=3.0)
    prompt = np.random.default_rng(7).integers(3, 97, 70).tolist()
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=80)
    drafter = _triforce(target, gamma2="auto")
    got, steps = generate_ids(target, drafter, prompt, max_tokens=80)
    assert got == expected
    assert {s.max_depth for s in steps if not s.prefill} >= {1, 2, 3, 4}
    chooser = Gamma2Chooser()
    for g in chooser.CANDIDATES:  # 2 tokens/s for gamma2 = 3, 1 for the others
        for _ in range(2):
            chooser.record(g, 2 if g == 3 else 1, 1.0)
    picks = [chooser.choose() for _ in range(16)]
    assert picks.count(3) == 14 and set(picks) - {3} <= {2, 4}


def test_tree_shaped_bottom_drafts_equal_ar():
    """pld with several continuations gives the middle trees (mask over the view's length)."""
    from mlx_specdec.drafters.pld import PromptLookup
    from mlx_specdec.drafters.triforce import TriForce

    target = tiny_model(seed=8, scale=3.0)
    rng = np.random.default_rng(8)
    block = rng.integers(3, 97, 6).tolist()
    prompt = sum(([*block[:3], int(t), *block[3:]] for t in rng.integers(3, 97, 10)), [])  # shared prefixes, varied tails
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=50)
    drafter = TriForce(target, PromptLookup(min_ngram=1, num_draft=3, num_matches=3), budget=24, chunk=4, sinks=4, window=4, gamma2=5)
    trees = []
    original = drafter._forward
    drafter._forward = lambda tree: trees.append(not tree.is_chain) or original(tree)
    got, _ = generate_ids(target, drafter, prompt, max_tokens=50)
    assert got == expected
    assert any(trees)
