"""TriForce on mlx-lm architectures other than Llama, through the adapter's seam: a full-budget
retrieval view equals the full cache (so sliding-window and NoPE layers get their masks right,
chain and tree), the view scores chunks with the layer's true rotated query (the adapter's hook),
and greedy triforce equals ar on every architecture of test_zoo (gemma3_text and llama-sliding:
sliding-window layers; smollm3: NoPE layers; glm4: partial RoPE)."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.cache import KVCache
from mlx_specdec.cache_views import RetrievalView, StreamingView
from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.triforce import make_triforce
from mlx_specdec.tree import Tree

from conftest import generate_ids
from test_zoo import ZOO, zoo_model

ARCHS = ["qwen3", "gemma3_text", "smollm3", "llama-sliding"]


@pytest.mark.parametrize("arch", ARCHS)
def test_full_budget_view_equals_full_cache(arch):
    """Budget above the context: every slot is selected, so the view's logits must equal the full
    cache's, for a chain and for a tree (sliding layers: the window is applied over true positions)."""
    model = zoo_model(arch, seed=1, scale=1.0)
    ids = mx.array(np.random.default_rng(0).integers(0, 97, (1, 40)))
    layers = len(model.layers)
    full = KVCache(layers)
    model(ids, full)
    view = RetrievalView(full, budget=64, chunk=4, sinks=4, window=4)
    stream = StreamingView(layers, sinks=4, window=64)
    model(ids, stream)
    chain = mx.array([[5, 7, 9]])
    view.rebuild()
    assert mx.allclose(model(chain, view)[0], model(chain, full)[0], atol=1e-5), arch
    full.trim(3)
    assert mx.allclose(model(chain, stream)[0], model(chain, full)[0], atol=1e-5), arch
    full.trim(3)
    stream.trim(3)
    tree = Tree(np.array([5, 7, 9, 11, 13]), np.array([-1, 0, 0, 2, 3]))
    positions = mx.array(tree.positions(full.offset))
    view.rebuild()
    mask = np.ones((tree.num_nodes, view.length + tree.num_nodes), dtype=bool)
    mask[:, view.length :] = tree.mask()
    got = model(mx.array(tree.tokens)[None], view, mx.array(mask), positions)[0]
    full_mask = np.ones((tree.num_nodes, full.offset + tree.num_nodes), dtype=bool)
    full_mask[:, full.offset :] = tree.mask()
    expected = model(mx.array(tree.tokens)[None], full, mx.array(full_mask), positions)[0]
    assert mx.allclose(got, expected, atol=1e-5), arch


def test_view_scores_with_the_layers_rotated_query():
    """qwen3 layer 0: the query the view scored with is q_norm(q_proj(x)) rotated at the root's
    position, computed here by hand from mlx-lm's own modules."""
    model = zoo_model("qwen3", seed=2, scale=1.0)
    ids = mx.array(np.random.default_rng(2).integers(0, 97, (1, 60)))
    cache = KVCache(len(model.layers))
    model(ids, cache)
    view = RetrievalView(cache, budget=24, chunk=4, sinks=4, window=4)
    seen = {}
    original = view.update
    view.update = lambda layer, k, v, q=None, scored=True: (seen.setdefault(layer, q), original(layer, k, v, q, scored))[1]
    view.rebuild()
    root = mx.array([[42]])
    model(root, view)
    attn = model.layers[0].self_attn
    x = model.layers[0].input_layernorm(model.model.embed_tokens(root))
    q = attn.q_norm(attn.q_proj(x).reshape(1, 1, attn.n_heads, -1)).transpose(0, 2, 1, 3)
    q = attn.rope(q, offset=60)  # mlx-lm's own rotary module (the adapter's wrapper passes the chain path through)
    assert mx.allclose(seen[0], q, atol=1e-5)
    assert all(seen[layer] is not None for layer in range(len(model.layers)))
    # and the selection is the top chunks for it, not the recent slots
    assert view.selected[0].shape[-1] == 24 and not mx.array_equal(view.selected[0][0, 0], mx.arange(36, 60))


@pytest.mark.parametrize("arch", list(ZOO))
@pytest.mark.parametrize("seed", [0, 1])
def test_greedy_triforce_equals_ar(arch, seed):
    target = zoo_model(arch, seed=seed)
    draft = zoo_model(arch, seed=seed + 100) if seed == 1 else None  # a StreamingLLM draft model once
    rng = np.random.default_rng(seed)
    prompt = rng.integers(3, 97, 30).tolist() * 2 + rng.integers(3, 97, 20).tolist()
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens=40)
    drafter = make_triforce(target, draft=draft, kv_budget=24, chunk=4, sinks=4, window=4, gamma2=5, num_draft=3)
    got, steps = generate_ids(target, drafter, prompt, max_tokens=40)
    assert got == expected, arch
    assert sum(s.accepted for s in steps) > 0 and any(s.inner for s in steps)
