"""One forward over a tree equals running each root-to-node path sequentially with a cache."""

import mlx.core as mx
import numpy as np

from mlx_specdec.cache import KVCache
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
