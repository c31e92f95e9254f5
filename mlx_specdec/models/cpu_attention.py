"""Attention for the MLX CPU backend with the softmax's exponentials computed as powers of two.

On the CPU, ``mx.fast.scaled_dot_product_attention`` is composed of generic ops and its softmax
calls MLX's scalar ``exp`` (~100 M/s on a 2-core x86 machine, against ~280 M/s for
``mx.power(2, x)``). Behind a long context the exponentials are most of a forward: one layer of
SmolLM2-135M (9 query heads, 3 KV heads) over 8,192 keys costs 8.6 ms for 7 queries through
``sdpa`` and 4.4 ms here (``scripts/attention_cost.py``); a 7-token verify over 8K tokens spends
~260 of its ~450 ms in attention. So every tree, chain and TriForce verify is cheaper here, and
plain decoding too (2.1 -> 1.1 ms per layer for one query over 8K keys).

Exact up to float32 rounding: ``softmax(s)_j = 2^((s_j - max s) * log2 e) / sum``, which differs
from ``exp`` by a few ulps (max |difference| 2e-7 over 8K keys). Every method, ``ar`` included,
runs the same attention, so greedy equality with ``ar`` is unaffected.

Used only where it is measured faster: the default device is the CPU, float32 queries, no
attention sinks, no quantized cache, and only inside the app's own forwards (the cache is a
:class:`~mlx_specdec.layer_cache.LayerCache`): mlx-lm run as a peer keeps its own path.

Shapes: queries (B, H, T, D), keys / values (B, KH, S, D) with H a multiple of KH (grouped
queries), mask None, ``"causal"`` (queries aligned to the last T keys), bool (True = may attend)
or additive, broadcastable to (B, H, T, S) as (T, S), (B, 1, T, S) or (B, H, T, S).
"""

from __future__ import annotations

import functools
import sys

import mlx.core as mx

from ..layer_cache import LayerCache

LOG2_E = 1.4426950408889634


def attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask=None) -> mx.array:
    """softmax(scale * q k^T + mask) v, (B, H, T, Dv). Example: T = 7 queries over S = 8,192 keys,
    H = 9, KH = 3: scores are computed as (B, 3, 21, 8192), three query heads per KV head."""
    B, H, T, D = queries.shape
    KH, S = keys.shape[1], keys.shape[2]
    group = H // KH
    q = (queries * scale).reshape(B, KH, group * T, D)
    scores = (q @ keys.swapaxes(-1, -2)).reshape(B, KH, group, T, S)
    if mask is not None:
        if isinstance(mask, str):
            if mask != "causal":
                raise ValueError(f"unknown mask {mask!r}")
            mask = mx.arange(S)[None] <= (S - T + mx.arange(T))[:, None]
        if mask.ndim == 4:
            mask = mask[:, :, None] if mask.shape[1] == 1 else mask.reshape(mask.shape[0], KH, group, T, S)
        if mask.dtype == mx.bool_:
            scores = mx.where(mask, scores, -mx.inf)
        else:
            scores = scores + mask
    peak = mx.max(scores, axis=-1, keepdims=True)
    weights = mx.power(2.0, (scores - peak) * LOG2_E)
    total = weights.sum(axis=-1, keepdims=True)
    out = (weights.reshape(B, KH, group * T, S) @ values).reshape(B, KH, group, T, -1) / total
    return out.reshape(B, H, T, -1)


def _fast_here(queries, cache, sinks) -> bool:
    return (sinks is None and isinstance(cache, LayerCache) and queries.dtype == mx.float32
            and mx.default_device() == mx.cpu)


def _wrap(original):
    @functools.wraps(original)
    def scaled_dot_product_attention(queries, keys, values, cache, scale, mask, sinks=None):
        if _fast_here(queries, cache, sinks):
            return attention(queries, keys, values, scale, mask)
        return original(queries, keys, values, cache, scale=scale, mask=mask, sinks=sinks)

    scaled_dot_product_attention._cpu_attention = True
    return scaled_dot_product_attention


def install(model) -> None:
    """Route the attention of ``model``'s mlx-lm modules through :func:`attention` where it is
    faster (see the module docstring). Idempotent: a module already switched stays as it is."""
    from mlx_lm.models import base

    for name in {type(m).__module__ for m in model.modules()}:
        module = sys.modules.get(name)
        if getattr(module, "scaled_dot_product_attention", None) is base.scaled_dot_product_attention:
            module.scaled_dot_product_attention = _wrap(base.scaled_dot_product_attention)
