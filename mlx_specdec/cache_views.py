"""Sparse views over a :class:`~mlx_specdec.cache.KVCache`: attention reads a few slots, not all.

A view implements the protocol the models call on a cache (``offset``, ``update(layer, k, v,
queries)``, ``advance(n)``, ``state()``) but returns from ``update`` only some of the cached slots,
followed by the forward's new tokens. Keys are stored already rotated at their absolute positions,
so any subset of slots keeps correct positions; ``offset`` stays the *absolute* position of the
next token (RoPE), while ``length`` is the number of slots attention sees before the new tokens:
a mask passed with a view is ``(L, length + L)``. A chain needs no mask (the new tokens are last,
so the causal mask is right).

- :class:`StreamingView` (StreamingLLM): ``sinks`` first tokens + the ``window`` most recent ones.
  It owns a whole KVCache (so rollback stays pointer arithmetic) and only *reads* a window of it.
- :class:`RetrievalView` (TriForce): the sink tokens, the top chunks of the context by
  ``query . mean(chunk keys)`` per KV head, and the recent tail, gathered once per
  :meth:`RetrievalView.rebuild` from a full cache it never writes; new tokens go to its own tail.

What a view needs from the cache it wraps: per-layer ``keys[layer]``/``values[layer]`` arrays
(B, n_kv, capacity, hd) whose slots ``[0, offset)`` are valid, and ``offset``. The retrieval view
also needs, at each layer, the forward's rotated queries (B, n_heads, L, hd): the models pass them
as ``update(..., queries=q)`` (a plain KVCache ignores them).
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

from .cache import KVCache

_TAIL = 64  # spare slots allocated behind a fresh selection (grows like a KVCache beyond that)


class StreamingView:
    """Sinks + recent window over a KVCache that keeps every token (StreamingLLM for a draft model).

    Example, sinks 2, window 3, 10 tokens cached, a forward over 2 new tokens (slots 10, 11):
    attention sees slots [0, 1, 7, 8, 9, 10, 11]. A prefill chunk longer than ``window`` sees the
    sinks, the window before it and itself (causally), not StreamingLLM's exact sliding window: for
    a drafter only speed matters, the target verifies everything.
    """

    def __init__(self, num_layers: int, sinks: int = 16, window: int = 240):
        self.cache = KVCache(num_layers)
        self.sinks, self.window = sinks, window

    @property
    def offset(self) -> int:
        return self.cache.offset

    @property
    def length(self) -> int:
        return min(self.cache.offset, self.sinks + self.window)

    def update(self, layer: int, keys: mx.array, values: mx.array, queries: mx.array | None = None):
        k, v = self.cache.update(layer, keys, values)
        end = k.shape[2]
        recent = end - keys.shape[2] - self.window  # first slot of the window
        if recent <= self.sinks:
            return k, v
        return (mx.concatenate([k[..., : self.sinks, :], k[..., recent:, :]], axis=2),
                mx.concatenate([v[..., : self.sinks, :], v[..., recent:, :]], axis=2))

    def advance(self, n: int) -> None:
        self.cache.advance(n)

    def trim(self, n: int) -> int:
        return self.cache.trim(n)

    def truncate(self, length: int) -> None:
        self.cache.truncate(length)

    def state(self) -> list[mx.array]:
        return self.cache.state()


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

    def update(self, layer: int, keys: mx.array, values: mx.array, queries: mx.array | None = None):
        if self.pending[layer]:
            if queries is None:
                raise ValueError("RetrievalView needs the forward's queries to select chunks (update(..., queries=q))")
            self._select(layer, queries[:, :, 0, :], keys.shape[2])
            self.pending[layer] = False
        return self.slots.update(layer, keys, values)

    def _select(self, layer: int, query: mx.array, new: int) -> None:
        """Gather the sinks, the top chunks for ``query`` (B, n_heads, hd) and the tail of ``full``."""
        past, c = self.base, self.chunk
        num_chunks, keep, recent = selection_geometry(past, self.budget, c, self.sinks, self.window)
        k_full, v_full = self.full.keys[layer][..., :past, :], self.full.values[layer][..., :past, :]
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
        index = mx.concatenate(parts, axis=-1).astype(mx.int32)  # (B, n_kv, num_selected)
        self.selected[layer] = index

        def gather(a):  # the selection, then room for the view's own tokens
            spare = mx.zeros((B, n_kv, new + _TAIL, a.shape[3]), a.dtype)
            return mx.concatenate([mx.take_along_axis(a, index[..., None], axis=2), spare], axis=2)

        self.slots.keys[layer], self.slots.values[layer] = gather(k_full), gather(v_full)

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
