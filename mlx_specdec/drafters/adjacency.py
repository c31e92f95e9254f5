"""Token Recycling's adjacency table: for each token, the target's own top-k next tokens.

``tokens`` (V, k) int32 and ``probs`` (V, k) float32: row t holds the k most likely next tokens
(best first) and their probabilities from the last target forward that processed token t.
After every forward, the rows of every token it processed (accepted, rejected and auxiliary
nodes alike; their logits exist already) are refreshed: one top-k on the device over the
forward's logits rows and one small host transfer of (T, k) ids and probabilities. On the MLX CPU
backend host memory is the device's, and numpy's argpartition and exp are several times faster
than MLX's CPU kernels there (12 rows x 49,152: ~3 ms against ~25 ms on this 2-core machine), so
the CPU path runs the same top-k in numpy. When a token
occurs several times in one forward, the accepted path's row wins (it is the context that
continues), otherwise the last occurrence. Rows never written hold ``-1``. Kept for the session
and across prompts: it is a property of the model, not of the prompt.

Memory: V * k * 8 bytes (V = 49,152: 3.1 MB; V = 151,936: 9.7 MB).

Worked example, V = 5, k = 2, one forward over tokens [3, 1] with logits rows
``[[0, 2, 1, 0, 0], [4, 0, 0, 0, 3]]``::

    tokens[3] = [1, 2]   probs[3] = [e^2, e^1] / (e^2 + e^1 + 3) = [0.5638, 0.2074]
    tokens[1] = [0, 4]   probs[1] = [e^4, e^3] / (e^4 + e^3 + 3) = [0.7028, 0.2585]
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np


def top_k_rows_host(logits: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_k_rows` in numpy (the CPU backend's fast path)."""
    logits = np.asarray(logits, dtype=np.float32)
    idx = np.argpartition(-logits, k - 1, axis=-1)[..., :k]
    top = np.take_along_axis(logits, idx, axis=-1)
    order = np.argsort(-top, axis=-1, kind="stable")
    idx, top = np.take_along_axis(idx, order, axis=-1), np.take_along_axis(top, order, axis=-1)
    peak = logits.max(axis=-1, keepdims=True)
    total = np.exp(logits - peak).sum(axis=-1, keepdims=True)
    return idx.astype(np.int32), np.exp(top - peak) / total


def top_k_rows(logits: mx.array, k: int) -> tuple[mx.array, mx.array]:
    """(T, V) logits -> (ids, probs) (T, k): the k most likely tokens of each row, best first,
    and their softmax probabilities. Lazy."""
    logits = logits.astype(mx.float32)
    idx = mx.argpartition(-logits, k - 1, axis=-1)[..., :k].astype(mx.int32)
    top = mx.take_along_axis(logits, idx, axis=-1)
    order = mx.argsort(-top, axis=-1)
    idx, top = mx.take_along_axis(idx, order, axis=-1), mx.take_along_axis(top, order, axis=-1)
    probs = mx.exp(top - mx.logsumexp(logits, axis=-1, keepdims=True))
    return idx, probs


class AdjacencyTable:
    def __init__(self, vocab_size: int, k: int = 8):
        self.k = k = min(k, vocab_size)
        self.tokens = np.full((vocab_size, k), -1, dtype=np.int32)
        self.probs = np.zeros((vocab_size, k), dtype=np.float32)

    @property
    def nbytes(self) -> int:
        return self.tokens.nbytes + self.probs.nbytes

    def update(self, tokens, logits: mx.array, path=()) -> None:
        """Refresh the rows of ``tokens`` (T,) from ``logits`` (T, V) of the same forward;
        ``path``: node ids whose rows win over other occurrences of the same token."""
        tokens = np.asarray(tokens, dtype=np.int64)
        n = min(len(tokens), logits.shape[0])
        if mx.default_device() == mx.cpu:
            ids, probs = top_k_rows_host(np.array(logits[:n].astype(mx.float32)), self.k)
        else:
            ids, probs = (np.array(a) for a in top_k_rows(logits[:n], self.k))
        rows = np.concatenate([np.arange(n), np.asarray(list(path), dtype=np.int64)]) if len(path) else np.arange(n)
        valid = (tokens[rows] >= 0) & (tokens[rows] < len(self.tokens))
        rows = rows[valid]
        self.tokens[tokens[rows]] = ids[rows]  # numpy assigns in order: the last write wins
        self.probs[tokens[rows]] = probs[rows]

    def row(self, token: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, probs) (k,) for ``token``; empty when never seen."""
        ids = self.tokens[token]
        keep = ids >= 0
        return ids[keep], self.probs[token][keep]
