"""Sparse views over a :class:`~mlx_specdec.cache.KVCache`: attention reads a few slots, not all.

Both views hand mlx-lm's model code per-layer objects (``layer_views``, the seam of
``layer_cache.py``): ``offset`` is the *absolute* position of the forward's first new token (RoPE),
``update_and_fetch`` returns only some cached slots followed by the new tokens, and ``make_mask``
returns the mask columns of those same slots. Keys are stored already rotated at their absolute
positions, so any subset of slots keeps correct positions.

- :class:`StreamingView` (StreamingLLM, for a draft model): a KVCache that keeps every token (so
  rollback stays pointer arithmetic) and whose layers *read* the ``sinks`` first tokens + the
  ``window`` most recent ones (:meth:`StreamingLayer.visible_slots`).
- :class:`RetrievalView` (TriForce's middle level): the sink tokens, the top chunks of the context
  by ``query . mean(chunk keys)`` per KV head, and the recent tail, gathered once per
  :meth:`RetrievalView.rebuild` from a full cache it never writes; new tokens go to its own tail.
  ``length`` is the number of slots attention sees before the new tokens: a tree mask passed with
  this view is ``(L, length + L)``; a chain needs none (the new tokens are last).

What the retrieval view needs from the cache it wraps: per-layer ``keys[layer]``/``values[layer]``
(B, n_kv, capacity, hd) valid on ``[0, offset)``, and ``offset``. From the model it needs, at each
layer, the forward's rotated queries (B, n_heads, L, hd): it says so with ``reads_queries = True``
and the adapter (``models/mlx_lm_adapter.py``) hands its ``layer_views`` a ``queries(keys)``
callable that returns the RoPE output of this layer that is not ``keys``.

Sliding-window layers (Gemma 3) and layers without RoPE (SmolLM3's NoPE layers) are not scored:
their selection is the most recent slots (as many as the scored layers keep), and a sliding
layer's mask also applies its window over the true positions. A view only drafts (the full
target verifies every token), so any selection is lossless; this one keeps what such a layer
can see.
"""

from __future__ import annotations

from typing import Callable, Sequence

import mlx.core as mx

from .cache import KVCache
from .layer_cache import LayerCache

_TAIL = 64  # spare slots allocated behind a fresh selection (grows like a KVCache beyond that)


class StreamingView(KVCache):
    """Sinks + recent window over a KVCache that keeps every token (StreamingLLM for a draft model).

    Example, sinks 2, window 3, 10 tokens cached, a forward over 2 new tokens (slots 10, 11):
    attention sees slots [0, 1, 7, 8, 9, 10, 11]. A prefill chunk longer than ``window`` sees the
    sinks, the window before it and itself (causally), not StreamingLLM's exact sliding window: for
    a drafter only speed matters, the target verifies everything.
    """

    def __init__(self, num_layers: int, sinks: int = 16, window: int = 240):
        super().__init__(num_layers)
        self.sinks, self.window = sinks, window

    @property
    def length(self) -> int:
        return min(self.offset, self.sinks + self.window)

    def layer_views(self, plan, windows: Sequence[int | None]) -> list:
        return [StreamingLayer(self, i, plan, w) for i, w in enumerate(windows)]


class StreamingLayer(LayerCache):
    """One layer of a :class:`StreamingView`: keys, values and mask columns follow
    :meth:`visible_slots` (the base class does the rest)."""

    def visible_slots(self, window: int | None) -> slice | mx.array:
        past, end = self.plan.past, self.plan.past + self.plan.n
        first = 0 if window is None else max(0, past - window + 1)  # the layer's own sliding window
        recent = past - self.kv.window  # first slot of the StreamingLLM window
        if recent <= self.kv.sinks or recent <= first:
            return slice(first, None)
        sinks = [j for j in range(self.kv.sinks) if j >= first]
        return mx.array(sinks + list(range(recent, end)), mx.int32)


def selection_geometry(past: int, budget: int, chunk: int, sinks: int, window: int) -> tuple[int, int, int]:
    """``(num_chunks, keep_chunks, recent_start)`` for a context of ``past`` slots.

    Slots ``[0, sinks)`` are sinks; ``[sinks, sinks + num_chunks * chunk)`` are whole chunks that
    end before the window; ``[recent_start, past)`` is the recent tail (``window`` to
    ``window + chunk - 1`` slots). ``keep_chunks = (budget - sinks - window) // chunk`` of them are
    selected (all when the context is small).

    Example: past 40, budget 16, chunk 4, sinks 4, window 4: chunks 0..7 cover slots 4..35, the
    tail is 36..39, and 2 chunks are kept: 4 + 8 + 4 = 16 slots.
    """
    num_chunks = max(0, (past - sinks - window) // chunk)
    keep = min(num_chunks, max(0, (budget - sinks - window) // chunk))
    return num_chunks, keep, sinks + num_chunks * chunk


class RetrievalView:
    """The target's KV cache seen through a retrieval-selected budget (TriForce's middle level).

    :meth:`rebuild` marks the full cache's current ``offset`` P as the base; the next forward's
    first new token (the step's root) scores, at every layer and per KV head, each whole chunk of
    the context by ``q . mean(chunk keys)`` and keeps the sinks, the ``keep`` best chunks and the
    recent tail (see :func:`selection_geometry`), gathered into this view's own buffer. Tokens the
    view's forwards append (the middle's drafts) are written behind that selection, never into the
    full cache; :meth:`keep` / :meth:`trim` roll them back like a KVCache.

    GQA: the query heads of a group are averaged before scoring. Since the score is linear in the
    query, that equals averaging the per-query-head scores (the sum of the group's scores gives the
    same ranking), so both readings of "per KV head" select the same chunks.

    Example (chunk 2, sinks 2, window 2, budget 8, 12 slots cached): chunks cover slots 2..9 (four
    chunks), the tail is 10, 11; the two chunks whose mean key best matches the root's query are
    kept, e.g. chunks 1 and 3 -> slots [0, 1, 4, 5, 8, 9, 10, 11] (``selected[layer]``).
    """

    reads_queries = True  # the adapter passes each layer's rotated queries to layer_views

    def __init__(self, cache: KVCache, budget: int = 1024, chunk: int = 16, sinks: int = 16, window: int = 128):
        self.full = cache
        self.budget, self.chunk, self.sinks, self.window = budget, chunk, sinks, window
        self.slots = KVCache(len(cache.keys))
        self.base = 0  # the full cache's offset at the last rebuild
        self.num_selected = 0  # context slots in the view
        self.pending: list[bool] = [False] * len(cache.keys)
        self.selected: list[mx.array | None] = [None] * len(cache.keys)  # (B, n_kv, num_selected) full-cache slots
        self.means: list[mx.array | None] = [None] * len(cache.keys)  # (B, n_kv, chunks, hd) mean key per chunk

    def rebuild(self) -> None:
        """Select again at the next forward (once per top-level step); drops the view's tail."""
        self.base = self.full.offset
        _, keep, recent = selection_geometry(self.base, self.budget, self.chunk, self.sinks, self.window)
        self.num_selected = min(self.sinks, self.base) + keep * self.chunk + max(0, self.base - recent)
        self.slots.offset = self.num_selected
        self.pending = [True] * len(self.pending)

    @property
    def offset(self) -> int:
        return self.base + self.slots.offset - self.num_selected

    @property
    def length(self) -> int:
        return self.slots.offset

    def layer_views(self, plan, windows: Sequence[int | None], queries: Callable | None = None) -> list:
        """Per-layer objects for one forward of mlx-lm's model code (``plan.past`` = :attr:`offset`).
        ``queries(keys)``: the layer's rotated queries or None (the adapter's hook)."""
        return [RetrievalLayer(self, i, plan, w, queries) for i, w in enumerate(windows)]

    def update(self, layer: int, keys: mx.array, values: mx.array, queries: mx.array | None = None,
               scored: bool = True):
        """Write the new tokens behind the selection (selecting first after a rebuild) and return
        the view's keys/values (B, n_kv, length + L, hd). ``scored=False`` (a sliding-window or
        NoPE layer) or no ``queries``: the selection is the most recent slots."""
        if self.pending[layer]:
            if scored and queries is not None:
                self._select(layer, queries[:, :, 0, :], keys.shape[2])
            else:
                self._select_recent(layer, keys.shape[2])
            self.pending[layer] = False
        return self.slots.update(layer, keys, values)

    def _select(self, layer: int, query: mx.array, new: int) -> None:
        """Gather the sinks, the top chunks for ``query`` (B, n_heads, hd) and the tail of ``full``."""
        past, c = self.base, self.chunk
        num_chunks, keep, recent = selection_geometry(past, self.budget, c, self.sinks, self.window)
        k_full = self.full.keys[layer][..., :past, :]
        B, n_kv, _, hd = k_full.shape
        parts = [mx.broadcast_to(mx.arange(min(self.sinks, past)), (B, n_kv, min(self.sinks, past)))]
        if keep:
            means = self._chunk_means(layer, k_full, num_chunks)  # (B, n_kv, num_chunks, hd)
            q = query.reshape(B, n_kv, -1, query.shape[-1]).mean(axis=2)  # (B, n_kv, hd)
            scores = (means @ q[..., None])[..., 0]  # (B, n_kv, num_chunks)
            top = mx.sort(mx.argpartition(-scores, keep - 1, axis=-1)[..., :keep], axis=-1)
            slots = self.sinks + top[..., None] * c + mx.arange(c)  # (B, n_kv, keep, c)
            parts.append(slots.reshape(B, n_kv, keep * c))
        parts.append(mx.broadcast_to(mx.arange(max(self.sinks, recent), past), (B, n_kv, max(0, past - max(self.sinks, recent)))))
        self._gather(layer, mx.concatenate(parts, axis=-1).astype(mx.int32), new)

    def _select_recent(self, layer: int, new: int) -> None:
        """The ``num_selected`` slots before the base: positions ``[base - num_selected, base)``."""
        B, n_kv = self.full.keys[layer].shape[:2]
        start = self.base - self.num_selected
        self._gather(layer, mx.broadcast_to(mx.arange(start, self.base, dtype=mx.int32), (B, n_kv, self.num_selected)), new)

    def _gather(self, layer: int, index: mx.array, new: int) -> None:
        """The selection ``index`` (B, n_kv, num_selected) of the full cache, then room for the
        view's own tokens."""
        self.selected[layer] = index

        def gather(a):
            a = a[..., : self.base, :]
            spare = mx.zeros((*index.shape[:2], new + _TAIL, a.shape[3]), a.dtype)
            return mx.concatenate([mx.take_along_axis(a, index[..., None], axis=2), spare], axis=2)

        self.slots.keys[layer], self.slots.values[layer] = gather(self.full.keys[layer]), gather(self.full.values[layer])

    def _chunk_means(self, layer: int, keys: mx.array, num_chunks: int) -> mx.array:
        """Mean key of chunks ``0 .. num_chunks - 1``; chunks already averaged at an earlier rebuild
        are reused (the full cache's slots before its offset do not change within a generation;
        :meth:`forget` drops them when a new context starts)."""
        B, n_kv, _, hd = keys.shape
        known = self.means[layer]
        have = 0 if known is None else known.shape[2]
        if have < num_chunks:
            start, end = self.sinks + have * self.chunk, self.sinks + num_chunks * self.chunk
            new = keys[..., start:end, :].reshape(B, n_kv, num_chunks - have, self.chunk, hd).mean(axis=3)
            known = new if known is None else mx.concatenate([known, new], axis=2)
            self.means[layer] = known
        return known[:, :, :num_chunks]

    def forget(self) -> None:
        """A new context: drop the cached chunk means."""
        self.means = [None] * len(self.means)

    def advance(self, n: int) -> None:
        self.slots.advance(n)

    def keep(self, start: int, indices: Sequence[int]) -> None:
        """As :meth:`KVCache.keep`, ``start`` an absolute position (>= the base)."""
        self.slots.keep(start - self.base + self.num_selected, indices)

    def trim(self, n: int) -> int:
        return self.slots.trim(min(n, self.slots.offset - self.num_selected))

    def state(self) -> list[mx.array]:
        return self.slots.state()


class RetrievalLayer(LayerCache):
    """One layer of a :class:`RetrievalView` in mlx-lm's cache protocol.

    ``offset`` is the absolute position (``plan.past``); keys/values live in the view's own
    ``slots`` cache. Masks: a chain's new tokens are last (None / "causal"); a tree brings its mask
    (N, length + N); a sliding window (``window_size``) is applied over the true positions of the
    view's slots, which for the (unscored, recent) sliding layers are ``[offset - length, offset)``.
    """

    def __init__(self, view: RetrievalView, layer: int, plan, window: int | None, queries: Callable | None):
        super().__init__(view.slots, layer, plan, window)
        self.view, self.queries = view, queries

    def visible_slots(self, window: int | None) -> slice:
        return slice(0, None)

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        q = self.queries(keys) if self.queries is not None else None  # every layer takes its own (clears the hook)
        return self.view.update(self.layer, keys, values, q, scored=self.window is None)

    def make_mask(self, N: int, window_size: int | None = None, return_array: bool = False):
        plan, length = self.plan, self.view.length
        if N != plan.n:
            raise ValueError(f"make_mask({N}) in a forward of {plan.n} tokens")
        if plan.mask is None and window_size is None and not return_array:
            return None if N == 1 else "causal"
        if plan.mask is not None:
            mask = plan.mask
        else:
            new = mx.arange(N)
            mask = mx.concatenate([mx.ones((N, length), mx.bool_), new[:, None] >= new[None]], axis=1)
        if mask.shape[-1] != length + N:
            raise ValueError(f"a mask over {mask.shape[-1]} slots for a view of {length} + {N}")
        if window_size is not None:
            query = plan.query_positions().astype(mx.int32)
            slot = mx.concatenate([mx.arange(plan.past - length, plan.past, dtype=mx.int32), query], axis=-1)
            ok = query[..., :, None] - slot[..., None, :] < window_size
            mask = mask & (ok if ok.ndim == mask.ndim else ok[:, None])
        return mask

    def size(self) -> int:
        return self.view.length

