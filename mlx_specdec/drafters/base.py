"""The drafter protocol: three methods, one tree per step.

Optional: ``bind_cache(cache)``, called by the generate loop before ``reset`` with the target's
full KV cache, for a drafter that reads it (TriForce's retrieval view).
"""

from __future__ import annotations

from typing import Protocol, Sequence

import mlx.core as mx

from ..tree import Tree


class Drafter(Protocol):
    name: str

    def reset(self, context: Sequence[int], hidden: mx.array) -> None:
        """Start over after a prefill. context: every token id now in the target's cache;
        hidden: (D,) the target's final hidden state at the last of them."""

    def propose(self, root: int) -> Tree:
        """A tree whose node 0 is ``root`` (the last emitted token, not yet in the cache)."""

    def commit(self, tree: Tree, path: list[int], hidden: mx.array, logits: mx.array) -> None:
        """Roll forward after verification. path: accepted node ids (root first); hidden, logits:
        (N + A, ·) the target's outputs for every token of the tree's forward."""
