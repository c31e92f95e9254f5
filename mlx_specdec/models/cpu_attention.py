"""Attention for the MLX CPU backend with a faster softmax: numpy's on wide scores, powers of two on narrow ones.

On the CPU, ``mx.fast.scaled_dot_product_attention`` is composed of generic ops and its softmax
calls MLX's scalar ``exp``: ~45 M values/s on a 2-core Xeon, ~100 M/s on a 2-core EPYC, against
~86 / ~280 M/s for ``mx.power(2, x)`` and ~1 G/s for numpy's vectorised ``exp``. Behind a long
context the exponentials are most of a forward (one layer of SmolLM2-135M over 8,192 keys costs
8.6 ms for 7 queries through ``sdpa`` and 4.4 ms with powers of two on the EPYC), and they grow
with the tokens a tree verify adds. So the scores are computed by MLX's matmul, and their softmax

- on wide scores (at least ``HOST_SOFTMAX_MIN`` values a layer: query heads x queries x keys) by
  numpy on the scores' own buffer (the CPU backend's arrays are host memory: ``np.asarray`` reads
  them without a copy), which makes each layer wait for its scores;
- on narrow ones by ``mx.power(2, x)``, where that wait costs more than numpy saves.

The weighted sum of the values is MLX's matmul again. Measured on the Xeon, whole forwards of
the default model (tree verifies, median of 7 interleaved pairs, numpy softmax against powers of
two everywhere): behind 2,048 tokens 0.95 / 0.93 / 0.84 / 0.77 for 1 / 4 / 8 / 16 tokens, behind
1,024 0.98 / 0.98 / 0.89 / 0.82, behind 512 1.03 / 0.97 / 0.90 / 0.93, and behind 256 1.03 /
1.04 / 1.05 / 0.99 (9 x 16 x 272 = 39 K values a layer): the threshold sits at 32 K.

Exact up to float32 rounding (a few ulps between the exponentials; max |difference| 2e-7 over
8K keys). Every method, ``ar`` included, runs the same attention, so greedy equality with ``ar``
is unaffected.

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
import numpy as np

from ..layer_cache import LayerCache


LOG2_E = 1.4426950408889634
HOST_SOFTMAX_MIN = 32_768  # score values a layer (H x T x S) from which numpy's softmax is faster


def attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask=None) -> mx.array:
    """softmax(scale * q k^T + mask) v, (B, H, T, Dv). Example: T = 7 queries over S = 8,192 keys,
    H = 9, KH = 3: scores are computed as (B, 3, 21, 8192), three query heads per KV head."""
    B, H, T, D = queries.shape
    KH, S = keys.shape[1], keys.shape[2]
    group = H // KH
    q = (queries * scale).reshape(B, KH, group * T, D)
    scores = (q @ keys.swapaxes(-1, -2)).reshape(B, KH, group, T, S)
    if H * T * S >= HOST_SOFTMAX_MIN:
        weights = mx.array(_host_softmax(np.asarray(scores), _host_mask(mask, KH, group, T, S)))
        return (weights.reshape(B, KH, group * T, S) @ values).reshape(B, H, T, -1)
    mask = _device_mask(mask, KH, group, T, S)
    if mask is not None:
        scores = mx.where(mask, scores, -mx.inf) if mask.dtype == mx.bool_ else scores + mask
    weights = mx.power(2.0, (scores - mx.max(scores, axis=-1, keepdims=True)) * LOG2_E)
    total = weights.sum(axis=-1, keepdims=True)
    out = (weights.reshape(B, KH, group * T, S) @ values).reshape(B, KH, group, T, -1) / total
    return out.reshape(B, H, T, -1)


def _device_mask(mask, KH: int, group: int, T: int, S: int):
    """``mask`` as an MLX array broadcastable to the scores (B, KH, group, T, S), or None."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"unknown mask {mask!r}")
        return mx.arange(S)[None] <= (S - T + mx.arange(T))[:, None]
    if mask.ndim == 4:
        return mask[:, :, None] if mask.shape[1] == 1 else mask.reshape(mask.shape[0], KH, group, T, S)
    return mask


def _host_mask(mask, KH: int, group: int, T: int, S: int):
    """:func:`_device_mask` as a numpy array."""
    mask = _device_mask(mask, KH, group, T, S)
    return None if mask is None else np.asarray(mask)


def _host_softmax(scores: np.ndarray, mask) -> np.ndarray:
    """The softmax over the last axis of ``scores`` (left as it is: it is MLX's buffer) with
    ``mask`` applied: bool (True = may attend) or additive."""
    if mask is None:
        weights = scores - scores.max(axis=-1, keepdims=True)
    else:
        weights = np.where(mask, scores, -np.inf) if mask.dtype == np.bool_ else scores + mask
        weights -= weights.max(axis=-1, keepdims=True)
    np.exp(weights, out=weights)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights


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
