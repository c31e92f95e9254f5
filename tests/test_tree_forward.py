"""One forward over a tree equals running each root-to-node path sequentially with a cache."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.cache import _CHUNK, KVCache
from mlx_specdec.generate import Session
from mlx_specdec.tree import Tree

from conftest import tiny_model


def test_tree_forward_matches_sequential_paths(arch):
    model = tiny_model(arch, seed=1)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 97, size=11).tolist()
    # 10 nodes: root, two branches, a deep chain and a sibling fan-out
    parents = np.array([-1, 0, 1, 2, 0, 4, 4, 3, 7, 1])
    tree = Tree(rng.integers(0, 97, size=10), parents)

    session = Session(model)
    session._prefill(prompt)
    logits, _ = session.forward(tree)
    mx.eval(logits)

    for node in range(tree.num_nodes):
        path = tree.path_to(node)
        cache = KVCache(len(model.layers))
        model(mx.array(prompt)[None], cache)
        ref, _ = model(mx.array(tree.tokens[path])[None], cache)
        diff = mx.abs(ref[0, -1] - logits[node]).max().item()
        assert diff <= 1e-4, (arch, node, diff)


def test_positions_and_mask_default_to_causal(arch):
    model = tiny_model(arch, seed=2)
    tokens = mx.array([[5, 9, 11, 3, 7]])
    plain, _ = model(tokens, KVCache(len(model.layers)))
    mask = mx.array(np.tril(np.ones((5, 5), dtype=bool)))
    explicit, _ = model(tokens, KVCache(len(model.layers)), mask, mx.arange(5))
    assert mx.abs(plain - explicit).max().item() <= 1e-5


@pytest.mark.parametrize("past", [_CHUNK - 6, 2 * _CHUNK - 3, 2 * _CHUNK + 10])
def test_tree_forward_across_the_cache_growth_boundary(past):
    """The cache grows in chunks of _CHUNK slots; a tree appended across a chunk's end (the cache
    grows inside the tree's forward) gives, at every node, the logits of one chain forward over
    prompt + the node's path from an empty cache."""
    model = tiny_model("llama", seed=3)
    rng = np.random.default_rng(past)
    prompt = rng.integers(0, 97, size=past).tolist()
    parents = np.array([-1, 0, 1, 2, 0, 4, 4, 3, 7, 1, 9, 10])
    tree = Tree(rng.integers(0, 97, size=len(parents)), parents)
    session = Session(model)
    session._prefill(prompt)
    capacity = session.cache.capacity
    logits, _ = session.forward(tree)
    mx.eval(logits)
    assert (past + len(parents) > capacity) == (past % _CHUNK > _CHUNK - len(parents))  # the case is the one named
    for node in range(tree.num_nodes):
        chain, _ = model(mx.array(prompt + tree.tokens[tree.path_to(node)].tolist())[None], KVCache(len(model.layers)))
        diff = mx.abs(chain[0, -1] - logits[node]).max().item()
        assert diff <= 1e-4, (past, node, diff)


def test_greedy_decoding_across_the_growth_boundary_equals_ar():
    from conftest import generate_ids
    from mlx_specdec.drafters import make_drafter

    model = tiny_model("qwen2", seed=5, scale=3.0)
    rng = np.random.default_rng(1)
    prompt = (rng.integers(0, 97, size=12).tolist() * 21)[: _CHUNK - 4]  # repeats: lookup drafts trees
    expected, _ = generate_ids(model, make_drafter("ar"), prompt, 40)
    got, steps = generate_ids(model, make_drafter("pld", max_ngram=2, min_ngram=1, num_draft=5, num_matches=4), prompt, 40)
    assert got == expected
    assert any(s.proposed > 0 for s in steps if not s.prefill)
