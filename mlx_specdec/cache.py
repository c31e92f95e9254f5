"""Pre-allocated KV cache with a length pointer; rollback is pointer arithmetic.

Layout per layer: keys and values of shape (B, n_kv_heads, capacity, head_dim). All layers share
one length pointer, ``offset``: slots ``[0, offset)`` hold the KV of the tokens the model has seen.
A forward over L new tokens writes slots ``[offset, offset + L)`` in every layer and then advances
``offset`` by L (the model calls :meth:`advance` once, after its last layer).

Speculative decoding appends a whole draft tree, then keeps only the accepted path::

    offset = 5, tree of 4 nodes appended at slots 5..8, accepted nodes [0, 2]
    keep(5, [0, 2])  ->  slot 5 <- slot 5, slot 6 <- slot 7, offset = 7

which is one gather per layer (and none at all when the accepted nodes are already contiguous).
"""

from __future__ import annotations

from typing import Sequence

import mlx.core as mx

_CHUNK = 256


class KVCache:
    def __init__(self, num_layers: int, max_length: int | None = None):
        self.keys: list[mx.array | None] = [None] * num_layers
        self.values: list[mx.array | None] = [None] * num_layers
        self.offset = 0
        self.max_length = max_length

    @property
    def capacity(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer: int, keys: mx.array, values: mx.array, queries: mx.array | None = None) -> tuple[mx.array, mx.array]:
        """Write ``keys``/``values`` (B, n_kv, L, hd) at ``[offset, offset + L)`` of ``layer``.

        ``queries`` (the forward's rotated queries) are for views that select slots by them
        (cache_views.RetrievalView); the full cache ignores them.

        Returns the keys and values of slots ``[0, offset + L)``. The pointer moves only in
        :meth:`advance`, so every layer of one forward writes to the same slots.
        """
        start, end = self.offset, self.offset + keys.shape[2]
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:
            self._grow(layer, keys, values, end)
        self.keys[layer][..., start:end, :] = keys
        self.values[layer][..., start:end, :] = values
        return self.keys[layer][..., :end, :], self.values[layer][..., :end, :]

    def _grow(self, layer: int, keys: mx.array, values: mx.array, needed: int) -> None:
        B, n_kv, _, k_dim = keys.shape
        v_dim = values.shape[3]
        capacity = ((needed + _CHUNK - 1) // _CHUNK) * _CHUNK
        new_k = mx.zeros((B, n_kv, capacity, k_dim), keys.dtype)
        new_v = mx.zeros((B, n_kv, capacity, v_dim), values.dtype)
        if self.keys[layer] is not None and self.offset > 0:
            new_k[..., : self.offset, :] = self.keys[layer][..., : self.offset, :]
            new_v[..., : self.offset, :] = self.values[layer][..., : self.offset, :]
        self.keys[layer], self.values[layer] = new_k, new_v

    def advance(self, n: int) -> None:
        self.offset += n

    def keep(self, start: int, indices: Sequence[int]) -> None:
        """Keep the slots ``start + indices`` (ascending) as ``[start, start + len(indices))``.

        Everything after them is dropped. ``indices`` are relative to ``start`` (tree node ids
        when a tree was appended at ``start``); the first is usually 0, the root.

        Example: offset 9, ``keep(5, [0, 2, 3])`` moves slots 5, 7, 8 to 5, 6, 7; offset = 8.
        """
        indices = list(indices)
        if any(b <= a for a, b in zip(indices, indices[1:])):
            raise ValueError(f"keep() needs ascending indices, got {indices}")
        if indices and start + indices[-1] >= self.offset:
            raise ValueError(f"keep({start}, {indices}) is past the cache length {self.offset}")
        if indices != list(range(len(indices))):
            src = mx.array([start + i for i in indices])
            end = start + len(indices)
            for layer in range(len(self.keys)):
                k, v = self.keys[layer], self.values[layer]
                k[..., start:end, :] = mx.take(k, src, axis=2)
                v[..., start:end, :] = mx.take(v, src, axis=2)
        self.offset = start + len(indices)

    def trim(self, n: int) -> int:
        """Drop the last ``n`` tokens; returns how many were dropped."""
        n = max(0, min(n, self.offset))
        self.offset -= n
        return n

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` tokens."""
        self.trim(self.offset - length)

    def state(self) -> list[mx.array]:
        """Arrays to pass to ``mx.eval`` so pending cache writes are materialised."""
        return [a for a in self.keys + self.values if a is not None]
