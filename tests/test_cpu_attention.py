"""The CPU attention (numpy softmax on wide scores, powers of two on narrow ones) against mx.fast.scaled_dot_product_attention."""

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.models import cpu_attention
from mlx_specdec.models.cpu_attention import attention


@pytest.fixture(autouse=True, params=["powers of two", "numpy"])
def softmax_path(request, monkeypatch):
    """Every test runs both softmax paths: MLX's powers of two (narrow scores) and numpy's (wide)."""
    monkeypatch.setattr(cpu_attention, "HOST_SOFTMAX_MIN", 0 if request.param == "numpy" else 10**12)
    return request.param


def _qkv(T, S, H=6, KH=2, D=8, seed=0):
    mx.random.seed(seed)
    return mx.random.normal((1, H, T, D)) * 2, mx.random.normal((1, KH, S, D)) * 2, mx.random.normal((1, KH, S, D))


def _close(a, b):
    assert np.allclose(np.array(a), np.array(b), atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("T,S", [(1, 1), (1, 37), (5, 37), (16, 16)])
def test_matches_sdpa_without_mask_and_causal(T, S):
    q, k, v = _qkv(T, S)
    _close(attention(q, k, v, 0.3), mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3))
    _close(attention(q, k, v, 0.3, "causal"), mx.fast.scaled_dot_product_attention(q, k, v, scale=0.3, mask="causal"))


def test_matches_sdpa_with_tree_masks():
    T, S = 4, 12
    q, k, v = _qkv(T, S, seed=1)
    rng = np.random.default_rng(0)
    bool_mask = rng.random((T, S)) < 0.6
    bool_mask[:, 0] = True  # every query sees at least one key
    for mask in (mx.array(bool_mask), mx.array(bool_mask)[None, None], mx.array(np.where(bool_mask, 0.0, -1e9).astype(np.float32))):
        _close(attention(q, k, v, 0.5, mask), mx.fast.scaled_dot_product_attention(q, k, v, scale=0.5, mask=mask))
    per_head = mx.array(rng.random((1, 6, T, S)) < 0.7) | mx.array(np.eye(T, S, dtype=bool))
    _close(attention(q, k, v, 0.5, per_head), mx.fast.scaled_dot_product_attention(q, k, v, scale=0.5, mask=per_head))


def test_causal_mask_aligns_queries_to_the_last_keys_by_hand():
    # 2 queries over 3 keys: query 0 sees keys 0-1, query 1 sees all; values are one-hot per key
    q = mx.zeros((1, 1, 2, 3))  # equal scores: the output is the mean of the visible values
    k = mx.zeros((1, 1, 3, 3))
    v = mx.eye(3)[None, None]
    out = np.array(attention(q, k, v, 1.0, "causal"))[0, 0]
    assert np.allclose(out, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]])


def test_installed_only_for_the_apps_own_forwards(monkeypatch):
    import importlib

    from mlx_lm.models.cache import make_prompt_cache

    from conftest import tiny_model
    from mlx_specdec.generate import Session
    from mlx_specdec.tree import Tree

    target = tiny_model("llama", seed=0)
    module = importlib.import_module(type(target.module).__module__)
    assert getattr(module.scaled_dot_product_attention, "_cpu_attention", False)
    calls = []
    monkeypatch.setattr(cpu_attention, "attention", lambda *a, **k: calls.append(1) or attention(*a, **k))
    mx.eval(Session(target).forward(Tree.chain(3, [4, 5]))[0])
    assert calls  # the app's cache: the CPU attention
    calls.clear()
    mx.eval(target.module(mx.array([[1, 2, 3]]), cache=make_prompt_cache(target.module)))
    assert not calls  # mlx-lm's own cache (a peer run): mlx-lm's own path
