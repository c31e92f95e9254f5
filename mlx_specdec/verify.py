"""Lossless acceptance rules: which drafted nodes the target accepts, and the next root.

Each returns ``(path, next_root)``: accepted node ids, root (node 0) first, and the token that
follows the last accepted node (the target's own "bonus" token).
"""

from __future__ import annotations

import numpy as np

from .sampling import sample
from .tree import Tree


def verify_greedy(tree: Tree, target_argmax: np.ndarray) -> tuple[list[int], int]:
    """Descend while the target's argmax at the current node is one of its children.

    target_argmax: (N,) the target's greedy token after each node.
    """
    children = tree.children()
    path = [0]
    while True:
        want = int(target_argmax[path[-1]])
        match = next((c for c in children[path[-1]] if tree.tokens[c] == want), None)
        if match is None:
            return path, want
        path.append(match)


def verify_deterministic(tree: Tree, probs: np.ndarray, rng: np.random.Generator) -> tuple[list[int], int]:
    """Sampling with drafts that were not sampled, by an explicit random stream (TriForce's middle
    level; the generate loop itself compares drafts with the target's position-keyed sample).

    At each node with target distribution p, try the children in order: accept child x with
    probability p(x); on rejection set p(x) = 0 and renormalise. If all are rejected, the next root
    is sampled from what is left. Every emitted token is then distributed exactly as p.
    probs: (N, V) the target's processed distribution after each node.
    """
    children = tree.children()
    path = [0]
    while True:
        p = probs[path[-1]].copy()
        accepted = None
        for child in children[path[-1]]:
            x = tree.tokens[child]
            total = p.sum()
            if total <= 0:
                break
            if rng.random() * total < p[x]:
                accepted = child
                break
            p[x] = 0.0
        if accepted is None:
            return path, sample(p, rng)
        path.append(accepted)


def verify_rejection(tree: Tree, probs: np.ndarray, rng: np.random.Generator) -> tuple[list[int], int]:
    """Sampling with a chain whose tokens were sampled from q (``tree.draft_probs``).

    Accept x with probability min(1, p(x) / q(x)); on rejection the next root is sampled from
    norm(max(0, p - q)). When every drafted token is accepted, the bonus is sampled from p.
    """
    path = [0]
    for node in range(1, tree.num_nodes):
        p, q = probs[node - 1], tree.draft_probs[node]
        x = tree.tokens[node]
        if rng.random() * q[x] < p[x]:
            path.append(node)
            continue
        residual = np.maximum(p - q, 0.0)
        return path, sample(residual if residual.sum() > 0 else p, rng)
    return path, sample(probs[path[-1]], rng)
