"""Prompt lookup decoding: copy what followed the last n-gram the last time it appeared.

No weights. The last ``n`` tokens (root included), for n from ``max_ngram`` down to
``min_ngram``, are searched for in the context and the output so far; the ``num_draft`` tokens
that followed the most recent earlier occurrences are proposed. Up to ``num_matches`` distinct
continuations are merged into one prefix tree (the most recent match is tried first).
"""

from __future__ import annotations

import numpy as np

from ..tree import Tree, beams_to_tree


class PromptLookup:
    name = "pld"

    # Defaults measured with scripts/pld_sweep.py on SmolLM2-135M (fp32, OpenBLAS, 2-core CPU, 13
    # Spec-Bench categories): 4:2:6:1 had the best median speedup (1.10; 3:1:8:2 gave 0.85 because
    # one-token matches draft long, mostly rejected runs that cost verification time).
    def __init__(self, max_ngram: int = 4, min_ngram: int = 2, num_draft: int = 6, num_matches: int = 1):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.num_draft, self.num_matches = num_draft, num_matches
        self.history: list[int] = []

    def reset(self, context, hidden) -> None:
        self.history = list(context)

    def propose(self, root: int) -> Tree:
        return beams_to_tree(root, self.continuations(self.history + [root]))[0]

    def continuations(self, seq: list[int]) -> list[list[int]]:
        """Distinct continuations of the latest earlier occurrences of seq's last n-gram."""
        arr = np.asarray(seq)
        found: list[list[int]] = []
        for n in range(min(self.max_ngram, len(seq) - 1), self.min_ngram - 1, -1):
            windows = np.lib.stride_tricks.sliding_window_view(arr[:-1], n)
            starts = np.flatnonzero((windows == arr[-n:]).all(axis=1))
            for start in starts[::-1]:
                follow = seq[start + n : start + n + self.num_draft]
                if follow and follow not in found:
                    found.append(follow)
                if len(found) == self.num_matches:
                    return found
            if found:
                return found
        return found

    def commit(self, tree, path, hidden, logits) -> None:
        self.history += tree.tokens[path].tolist()
