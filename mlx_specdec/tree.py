"""Draft trees: tokens and parents, and what the target needs to verify them in one pass.

A draft is ``tokens[N]`` and ``parents[N]``; node 0 is the root (the last emitted token, not yet in
the target's cache) with ``parents[0] == -1``, and every parent comes before its children. A chain
of k drafted tokens is the tree ``parents = [-1, 0, 1, ..., k-1]``.

Worked example, two beams ``[a, b, c]`` and ``[a, d, e]`` behind root r, merged into one prefix
tree (``a`` is shared, so 6 nodes instead of 7)::

    node    0  1  2  3  4  5          ancestor mask (row = query node, 1 = may attend)
    token   r  a  b  c  d  e               r a b c d e
    parent -1  0  1  2  1  4          r    1 . . . . .
    depth   0  1  2  3  2  3          a    1 1 . . . .
                                      b    1 1 1 . . .
                                      c    1 1 1 1 . .
                                      d    1 1 . . 1 .
                                      e    1 1 . . 1 1

Every node also sees the whole cache, and sits at position ``past + depth``.

Auxiliary tokens (Lookahead's Jacobi window) ride in the same forward after the N nodes. They are
never accepted; the drafter gives their depths and their mask rows over all N + A new tokens.
Padding (:meth:`Tree.padded`) is auxiliary too: copies of the root that see only the cache and
themselves, so a forward can run at a size the device computes faster (on a 2-core CPU with
OpenBLAS a forward over 16 tokens costs less than one over 12).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tree:
    tokens: np.ndarray  # (N + A,) int: the N tree nodes, then A auxiliary tokens
    parents: np.ndarray  # (N,) int, parents[0] == -1, parents[i] < i
    aux_depth: np.ndarray | None = None  # (A,) depth of each auxiliary token below the root
    aux_mask: np.ndarray | None = None  # (A, N + A) bool, rows of the auxiliary tokens
    draft_probs: np.ndarray | None = None  # (N, V) q the token of node i was *sampled* from (row 0 unused)
    inner: tuple[int, int, int] | None = None  # a drafter's own verifier level (TriForce's middle): forwards, proposed, accepted
    depth: np.ndarray = field(init=False)

    def __post_init__(self):
        self.tokens = np.asarray(self.tokens, dtype=np.int64)
        self.parents = np.asarray(self.parents, dtype=np.int64)
        n = len(self.parents)
        if n == 0 or self.parents[0] != -1 or np.any(self.parents[1:] >= np.arange(1, n)) or np.any(self.parents[1:] < 0):
            raise ValueError(f"invalid parents {self.parents.tolist()}: need parents[0] == -1 and 0 <= parents[i] < i")
        depth = np.zeros(n, dtype=np.int64)
        for i in range(1, n):
            depth[i] = depth[self.parents[i]] + 1
        self.depth = depth

    @classmethod
    def chain(cls, root: int, drafted=(), draft_probs=None) -> "Tree":
        drafted = list(drafted)
        return cls(np.array([root] + drafted), np.arange(-1, len(drafted)), draft_probs=draft_probs)

    @property
    def num_nodes(self) -> int:
        return len(self.parents)

    @property
    def num_aux(self) -> int:
        return len(self.tokens) - self.num_nodes

    @property
    def is_chain(self) -> bool:
        return self.num_aux == 0 and bool(np.all(self.parents == np.arange(-1, self.num_nodes - 1)))

    def padded(self, total: int) -> "Tree":
        """This tree with auxiliary copies of the root appended up to ``total`` forward tokens.

        Each pad sits at the root's position and attends to the cache and itself only, so its
        logits are the root's again and it changes nothing else. Example: the 3-node chain
        r -> a -> b padded to 5 gives tokens [r a b r r], aux_depth [0 0], and pad rows that are
        True only on their own column."""
        extra = total - len(self.tokens)
        if extra <= 0:
            return self
        width = total
        rows = np.zeros((self.num_aux + extra, width), dtype=bool)
        if self.num_aux:
            rows[: self.num_aux, : len(self.tokens)] = self.aux_mask
        rows[self.num_aux :, len(self.tokens) :] = np.eye(extra, dtype=bool)
        depth = np.concatenate([self.aux_depth if self.num_aux else np.zeros(0, np.int64), np.zeros(extra, np.int64)])
        tokens = np.concatenate([self.tokens, np.full(extra, self.tokens[0])])
        return Tree(tokens, self.parents, aux_depth=depth, aux_mask=rows, draft_probs=self.draft_probs, inner=self.inner)

    def children(self) -> list[list[int]]:
        """children[i] = node ids whose parent is i, in ascending order (draft preference order)."""
        out = [[] for _ in range(self.num_nodes)]
        for i in range(1, self.num_nodes):
            out[self.parents[i]].append(i)
        return out

    def ancestor_mask(self) -> np.ndarray:
        """(N, N) bool: mask[i, j] is True when j is i or an ancestor of i."""
        n = self.num_nodes
        mask = np.eye(n, dtype=bool)
        for i in range(1, n):
            mask[i] |= mask[self.parents[i]]
        return mask

    def mask(self) -> np.ndarray:
        """(N + A, N + A) bool over the new tokens: tree rows, then the auxiliary rows."""
        n, total = self.num_nodes, len(self.tokens)
        mask = np.zeros((total, total), dtype=bool)
        mask[:n, :n] = self.ancestor_mask()
        if self.num_aux:
            mask[n:] = self.aux_mask
        return mask

    def positions(self, past: int) -> np.ndarray:
        """(N + A,) absolute positions: past + depth."""
        depth = self.depth if not self.num_aux else np.concatenate([self.depth, self.aux_depth])
        return past + depth

    def path_to(self, node: int) -> list[int]:
        """Node ids from the root to ``node``, root first."""
        path = [node]
        while path[-1] != 0:
            path.append(int(self.parents[path[-1]]))
        return path[::-1]


def beams_to_tree(root: int, beams) -> tuple[Tree, np.ndarray]:
    """Merge beams (W, L) of drafted tokens behind ``root`` into a deduplicated prefix tree.

    Returns the tree and ``index`` (W, L): the tree node holding ``beams[w][l]``. Beams that share
    a prefix share nodes, so shared prefixes are verified once (ReDrafter's dynamic tree attention).
    Children keep the order of the beams they first appear in (beam 0 is the most likely). Beams
    may have different lengths (a list of lists); ``index`` is then padded with -1.

    Example: ``beams_to_tree(r, [[a, b, c], [a, d, e]])`` gives the 6-node tree of the module
    docstring and ``index = [[1, 2, 3], [1, 4, 5]]``.
    """
    return merge_beams(Tree.chain(root), beams)


def merge_beams(tree: Tree, beams) -> tuple[Tree, np.ndarray]:
    """``tree`` with token chains (each behind its root) merged in; existing nodes keep their ids.
    Returns the merged tree and ``index`` as in :func:`beams_to_tree`.

    Example: tree r -> a -> b plus the chains [a, c], [d] gives r -> a -> {b, c}, r -> d (tokens
    [r a b c d], parents [-1 0 1 1 0]) and ``index = [[1, 3], [4, -1]]``.
    """
    beams = [list(map(int, b)) for b in beams]
    tokens, parents = tree.tokens[: tree.num_nodes].tolist(), tree.parents.tolist()
    node_of = {(p, t): i for i, (p, t) in enumerate(zip(parents, tokens)) if i}  # (parent node, token) -> node
    index = np.full((len(beams), max((len(b) for b in beams), default=0)), -1, dtype=np.int64)
    for w, beam in enumerate(beams):
        parent = 0
        for l, token in enumerate(beam):
            key = (parent, token)
            if key not in node_of:
                node_of[key] = len(tokens)
                tokens.append(token)
                parents.append(parent)
            parent = index[w, l] = node_of[key]
    return Tree(np.array(tokens), np.array(parents)), index
