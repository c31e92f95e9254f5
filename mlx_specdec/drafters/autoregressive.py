"""Autoregressive decoding: the drafter that proposes only the root."""

from __future__ import annotations

from ..tree import Tree


class Autoregressive:
    name = "ar"

    def reset(self, context, hidden) -> None:
        pass

    def propose(self, root: int) -> Tree:
        return Tree.chain(root)

    def commit(self, tree, path, hidden, logits) -> None:
        pass
