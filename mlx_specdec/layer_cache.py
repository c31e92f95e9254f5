"""One layer's view of a :class:`~mlx_specdec.cache.KVCache`, speaking mlx-lm's cache protocol.

mlx-lm's attention code does, per layer (``mlx_lm/models/llama.py``)::

    mask = cache[0].make_mask(N, window_size=...)          # once per forward, in the model
    q = rope(q, offset=cache.offset); k = rope(k, offset=cache.offset)
    k, v = cache.update_and_fetch(k, v)                    # all keys this layer's queries may see
    out = sdpa(q, k, v, mask=mask)

A :class:`LayerCache` answers those calls from our pre-allocated cache, for a forward described by
a :class:`ForwardPlan` (N new tokens behind ``past`` cached ones, their tree mask and positions).
It is the seam for other cache layouts: a view that returns a subset of the slots from
``update_and_fetch`` (a StreamingLLM window, TriForce's retrieved chunks) must return the mask
columns of the same slots from ``make_mask``; :meth:`LayerCache.visible_slots` is the one place
both read (a slice, or an index array for a sparse selection). Rollback (``keep``, ``trim``) stays on the KVCache, shared by all layers.

Sliding-window layers (Gemma 3, Mistral's ``sliding_window``) keep every slot, like global ones;
the window is a mask (query at position p sees keys at positions q with ``p - q < window``), and
``update_and_fetch`` drops the slots no query of this forward can see. Worked example, window 4,
past 6, a tree of 3 nodes [root, child, grandchild] at positions 6, 7, 8::

    slots      0 1 2 3 4 5 | 6 7 8        visible_slots = 3..8 (the root at 6 sees 3..6)
    root  (6)        x x x | x            key positions 3 4 5 6 7 8
    child (7)          x x | x x          mask = tree mask[:, 3:] & (p - q < 4)
    grand (8)            x | x x x
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass
class ForwardPlan:
    """N new tokens appended at slots ``[past, past + N)`` of every layer.

    mask: None (causal) or bool (N, past + N) / (B, 1, N, past + N), True = may attend.
    positions: None (``past + arange(N)``) or absolute positions (N,) / (B, N) int32 (``past + depth``).
    Slot j < past holds position j (``KVCache.keep`` compacts accepted paths so this holds).
    """

    past: int
    n: int
    mask: mx.array | None = None
    positions: mx.array | None = None

    @property
    def is_chain(self) -> bool:
        return self.mask is None and self.positions is None

    def query_positions(self) -> mx.array:
        """(N,) or (B, N)."""
        return self.positions if self.positions is not None else mx.arange(self.past, self.past + self.n)

    def slot_positions(self) -> mx.array:
        """Positions (past + N,) or (B, past + N) of every slot after this forward's writes."""
        new = self.query_positions().astype(mx.int32)
        old = mx.broadcast_to(mx.arange(self.past, dtype=mx.int32), (*new.shape[:-1], self.past))
        return mx.concatenate([old, new], axis=-1)

    def full_mask(self) -> mx.array:
        """The tree mask, or the causal one: (N, past + N) / (B, 1, N, past + N) bool."""
        if self.mask is not None:
            return self.mask
        new = mx.arange(self.n)
        return mx.concatenate([mx.ones((self.n, self.past), mx.bool_), new[:, None] >= new[None]], axis=1)

    def window_mask(self, window: int) -> mx.array:
        """True where query i may see slot j under a sliding window: (N, S) or (B, 1, N, S)."""
        ok = self.query_positions()[..., :, None] - self.slot_positions()[..., None, :] < window
        return ok if ok.ndim == 2 else ok[:, None]


class LayerCache:
    """mlx-lm's per-layer cache protocol (``offset``, ``update_and_fetch``, ``make_mask``, ``state``)
    over layer ``layer`` of ``kv``; ``window`` is this layer's sliding window (None = global).

    ``offset`` is the number of cached tokens before this forward, for every layer and for the
    whole forward: the KVCache advances once, after the last layer (the adapter calls ``advance``).
    A subclass for another cache layout overrides :meth:`visible_slots` (and ``KVCache.layer_views``
    to hand it out): keys, values and mask columns then all follow it.
    """

    def __init__(self, kv, layer: int, plan: ForwardPlan, window: int | None = None):
        self.kv, self.layer, self.plan, self.window = kv, layer, plan, window

    @property
    def offset(self) -> int:
        return self.plan.past

    def visible_slots(self, window: int | None) -> slice | mx.array:
        """The slots this forward's queries may read under ``window``: a slice, or ascending slot
        ids (past + N - 1, the last new token, included). Here: all, or from the first slot the
        earliest query (position ``past``) still sees."""
        return slice(0 if window is None else max(0, self.plan.past - window + 1), None)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write keys/values (B, n_kv, N, hd) at ``[past, past + N)``; return the visible slots' KV."""
        k, v = self.kv.update(self.layer, keys, values)
        slots = self.visible_slots(self.window)
        return _select(k, slots, 2), _select(v, slots, 2)

    def make_mask(self, N: int, window_size: int | None = None, return_array: bool = False):
        """The mask over the visible slots: None / "causal" on the chain path (mlx-lm's fast
        paths), else bool (N, slots) from the plan's tree mask and positions, windowed."""
        plan = self.plan
        if N != plan.n:
            raise ValueError(f"make_mask({N}) in a forward of {plan.n} tokens")
        slots = self.visible_slots(window_size)
        if plan.is_chain and N == 1:
            return None  # one query sees every visible slot
        if plan.is_chain and window_size is None and not return_array and isinstance(slots, slice):
            return "causal"  # sdpa aligns it to the last keys
        mask = plan.full_mask()
        if window_size is not None:
            mask = mask & plan.window_mask(window_size)
        return _select(mask, slots, mask.ndim - 1)

    @property
    def state(self):
        return self.kv.keys[self.layer], self.kv.values[self.layer]

    @property
    def keys(self):
        return self.kv.keys[self.layer]

    @property
    def values(self):
        return self.kv.values[self.layer]

    def empty(self) -> bool:
        return self.kv.keys[self.layer] is None

    def size(self) -> int:
        return self.plan.past

    def is_trimmable(self) -> bool:
        return False  # rollback is the KVCache's (keep / trim), for all layers at once

    @property
    def nbytes(self) -> int:
        k, v = self.kv.keys[self.layer], self.kv.values[self.layer]
        return 0 if k is None else k.nbytes + v.nbytes


def _select(x: mx.array, slots: slice | mx.array, axis: int) -> mx.array:
    if isinstance(slots, slice):
        if slots == slice(0, None):
            return x
        index = [slice(None)] * x.ndim
        index[axis] = slots
        return x[tuple(index)]
    return mx.take(x, slots, axis=axis)
