"""The two pieces every architecture shares: RoPE at per-token positions and masked attention.

Trees are verified in one forward pass, so token i of a forward may sit at any absolute position
(``past + depth(i)``) and see any subset of the new tokens. Both are explicit arguments here.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import mlx.core as mx

from ..errors import UserError


@dataclass
class BaseArgs:
    @classmethod
    def from_dict(cls, params: dict):
        """Build from a Hugging Face ``config.json`` dict, ignoring keys this class lacks."""
        names = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in params.items() if k in names})


def rope_frequencies(head_dim: int, base: float, scaling: dict | None) -> mx.array | None:
    """Per-pair inverse wavelengths (head_dim/2,) for ``mx.fast.rope(freqs=...)``.

    Returns None for plain RoPE (``mx.fast.rope`` then uses ``base``). Supports "linear" and
    Llama 3's "llama3" scaling; any other type is a UserError at load time, so a model is never
    silently wrong.
    """
    if not scaling:
        return None
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    freqs = base ** (mx.arange(0, head_dim, 2, dtype=mx.float32) / head_dim)
    if kind == "default":
        return None
    if kind == "linear":
        return freqs * scaling["factor"]
    if kind == "llama3":
        factor = scaling["factor"]
        low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
        old_len = scaling.get("original_max_position_embeddings", 8192)
        wavelens = 2 * math.pi * freqs
        scaled = mx.where(wavelens > old_len / low, freqs * factor, freqs)
        medium = (wavelens > old_len / high) & (wavelens < old_len / low)
        smooth = (old_len / wavelens - low) / (high - low)
        return mx.where(medium, scaled / ((1 - smooth) / factor + smooth), scaled)
    raise UserError(f"unsupported rope_scaling type {kind!r} in the model's config (supported: default, linear, llama3)")


def apply_rope(
    x: mx.array,
    head_dim: int,
    base: float,
    freqs: mx.array | None,
    offset: int,
    positions: mx.array | None,
    traditional: bool = False,
) -> mx.array:
    """Rotate x (B, H, L, hd) at positions ``offset + arange(L)`` or at explicit ``positions``.

    ``positions`` (L,) or (B, L) gives each token its own absolute position. ``mx.fast.rope``
    rotates along axis -2 starting at a per-batch offset, so each token becomes its own batch
    row of length 1: (B, H, L, hd) -> (B*L, H, 1, hd) with offsets ``positions.flatten()``.
    """
    kwargs = dict(traditional=traditional, base=None if freqs is not None else base, scale=1.0, freqs=freqs)
    if positions is None:
        return mx.fast.rope(x, head_dim, offset=offset, **kwargs)
    B, H, L, D = x.shape
    flat = x.transpose(0, 2, 1, 3).reshape(B * L, H, 1, D)
    offsets = mx.broadcast_to(positions, (B, L)).reshape(-1).astype(mx.int32)
    rotated = mx.fast.rope(flat, head_dim, offset=offsets, **kwargs)
    return rotated.reshape(B, L, H, D).transpose(0, 2, 1, 3)


def attention(q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None) -> mx.array:
    """Scaled dot-product attention of q (B, H, L, hd) over k, v (B, H_kv, S, hd).

    ``mask`` is None (causal: new token i sees the past and new tokens <= i), a boolean array
    broadcastable to (B, H, L, S) with True = may attend, or an additive float mask.
    """
    if mask is None:
        mask = "causal" if q.shape[2] > 1 else None
    elif mask.dtype != mx.bool_:
        mask = mask.astype(q.dtype)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
