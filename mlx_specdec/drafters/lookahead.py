"""Lookahead decoding (Fu et al. 2023): Jacobi iteration drafts n-grams, no draft model.

A 2-D window of ``W`` columns x ``L = N - 1`` levels rides in every target forward as auxiliary
tokens, next to the verification tree. Level r, column j sits at depth ``j + r + 1`` below the
root and attends to the cache, the root, level 0 up to column j, and levels 1..r of column j: one
token at each depth ``0 .. j + r + 1``, the causal sequence ``root, L0[0..j], L1[j], .., Lr[j]``.
Worked example, W = 3, L = 2 (window rows only, over the root and the six window tokens; ``xy`` =
level x, column y)::

    token  depth   r  00 01 02 10 11 12
    00       1     1  1  .  .  .  .  .
    01       2     1  1  1  .  .  .  .
    02       3     1  1  1  1  .  .  .
    10       2     1  1  .  .  1  .  .
    11       3     1  1  1  .  .  1  .
    12       4     1  1  1  1  .  .  1

One forward is one Jacobi iteration: the target's argmax at the newest level, column j, is a
guess for depth ``j + L + 1``. The levels shift up (level 0 is dropped), the guesses become the
newest level, and every column gives an n-gram ``L0[j], .., L_{L-1}[j], guess[j]`` for the pool.
The root moves on by at least one token per step, so relative to it every level sits one depth
lower than a step ago: the shift keeps the depths consistent. When more tokens are accepted the
window simply goes on (as in the paper); it only feeds drafts, so this never affects the output.

The window's KV is never kept (the loop keeps the accepted path), so it is fed again each step.

The pool maps a first token to at most G continuations (the most recent first). It is seeded
with the context's own n-grams, and takes the n-grams of the emitted text and of the window. The
verification branch is the pool's continuations of the root, merged into one prefix tree and
checked by the shared rules: greedy and sampling stay exact whatever the pool holds.

``window="auto"``: where a forward's cost grows with its tokens (a CPU), the window only pays
while it is nearly free. The first steps time each step's forward and verification (from the end
of ``propose`` to the start of ``commit``) for w = 1, 2, 4, 8, 16 columns in turn, each against no
window: steps alternate w = 0 and w, three pairs per w (so a load spike hits both sides), and the
fastest step of each side counts. Widening stops at the first w whose step costs more than
``1 + slack`` times the step without a window; the drafter keeps the widest w within that budget
(:func:`pick_window`) for the rest of its life. On a GPU extra tokens are nearly free and the
whole ladder passes; on a 2-core CPU the window shrinks to none or a column or two (the pool then
holds mostly the text's n-grams). ``slack = 0.1`` because on SmolLM2-135M the window raised tau by
only 5-20% (``scripts/lookahead_sweep.py``).

Defaults (``window="auto", ngram=4, guesses=4``) were picked with that script on SmolLM2-135M,
float32, OpenBLAS, 2 CPU cores: without a window N = 3..5 and G = 2..4 all gave 1.1-1.2x over
autoregressive decoding (tau 1.6-1.8); fixed windows of 4 columns or more were slower than none.
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np

from ..errors import UserError
from ..tree import Tree, beams_to_tree

AUTO_LADDER = (1, 2, 4, 8, 16)  # widths window="auto" times against no window, narrowest first
AUTO_REPEATS = 3  # timed (no window, w) pairs per width


def window_mask(levels: int, width: int) -> np.ndarray:
    """(A, A) bool, A = levels * width, level-major: what window token (r, j) attends to."""
    mask = np.zeros((levels, width, levels, width), dtype=bool)
    for r in range(levels):
        for j in range(width):
            mask[r, j, 0, : j + 1] = True
            mask[r, j, 1 : r + 1, j] = True
    return mask.reshape(levels * width, levels * width)


def window_depth(levels: int, width: int) -> np.ndarray:
    """(A,) depth below the root of window token (r, j): ``j + r + 1``."""
    return (np.arange(levels)[:, None] + np.arange(width)[None, :] + 1).reshape(-1)


def pick_window(step_seconds: dict[int, float], slack: float) -> int:
    """The widest w whose step costs at most ``(1 + slack)`` x the step with w = 0.

    Example: ``pick_window({0: 0.10, 2: 0.11, 4: 0.12, 8: 0.16}, 0.25) == 4``.
    """
    budget = (1 + slack) * step_seconds[0]
    return max(w for w, s in step_seconds.items() if s <= budget)


class Lookahead:
    name = "lookahead"

    def __init__(self, window: int | str = "auto", ngram: int = 4, guesses: int = 4, slack: float = 0.1, seed: int = 0):
        if ngram < 2:
            raise UserError(f"--ngram must be >= 2, got {ngram}")
        if guesses < 0:
            raise UserError(f"--guesses must be >= 0, got {guesses}")
        if window != "auto" and (not isinstance(window, int) or window < 0):
            raise UserError(f"--window must be an integer >= 0 or 'auto', got {window!r}")
        self.auto = window == "auto"
        self.width = max(AUTO_LADDER) if self.auto else window  # columns held in the window
        self.levels, self.guesses, self.slack = ngram - 1, guesses, slack
        # widths of the steps still to time: 0, 1, 0, 1, 0, 1, 0, 2, ...
        self.calibration = [x for w in AUTO_LADDER for _ in range(AUTO_REPEATS) for x in (0, w)] if self.auto else []
        self.timings: dict[int, list[float]] = {}
        self.rng = np.random.default_rng(seed)
        self.pool: dict[int, list[tuple[int, ...]]] = {}
        self.history: list[int] = []
        self.window = np.zeros((self.levels, self.width), dtype=np.int64)
        self._fed = 0  # columns fed in the last proposed tree
        self._t_proposed = 0.0
        self._masks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # -- pool -----------------------------------------------------------------------------------

    def _remember(self, ngram) -> None:
        """Add an n-gram (N tokens): its continuation becomes the most recent for its first token."""
        key, rest = int(ngram[0]), tuple(int(t) for t in ngram[1:])
        entries = self.pool.setdefault(key, [])
        if rest in entries:
            entries.remove(rest)
        entries.insert(0, rest)
        del entries[self.guesses :]

    def _remember_text(self, start: int) -> None:
        """Add the n-grams of ``history`` that end at index >= start + levels."""
        for i in range(max(0, start - self.levels), len(self.history) - self.levels):
            self._remember(self.history[i : i + self.levels + 1])

    # -- protocol -------------------------------------------------------------------------------

    def reset(self, context, hidden) -> None:
        self.history = list(context)
        self.pool = {}
        self._remember_text(0)
        self.window = self.rng.choice(np.asarray(self.history), size=(self.levels, self.width))

    def propose(self, root: int) -> Tree:
        continuations = self.pool.get(int(root), [])[: self.guesses]
        tree = beams_to_tree(root, continuations)[0] if continuations else Tree.chain(root)
        width = self.calibration[0] if self.calibration else self.width
        self._fed = width
        if width:
            n = tree.num_nodes
            aux_mask, aux_depth = self._geometry(width)
            rows = np.zeros((len(aux_depth), n + len(aux_depth)), dtype=bool)
            rows[:, 0] = True  # the root
            rows[:, n:] = aux_mask
            tree = Tree(np.concatenate([tree.tokens, self.window[:, :width].reshape(-1)]), tree.parents,
                        aux_depth=aux_depth, aux_mask=rows)
        self._t_proposed = time.perf_counter()
        return tree

    def _geometry(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        if width not in self._masks:
            self._masks[width] = window_mask(self.levels, width), window_depth(self.levels, width)
        return self._masks[width]

    def _calibrate(self, width: int, elapsed: float) -> None:
        self.timings.setdefault(width, []).append(elapsed)
        self.calibration.pop(0)
        fastest = {w: min(s) for w, s in self.timings.items()}
        if width and len(self.timings[width]) == AUTO_REPEATS and fastest[width] > (1 + self.slack) * fastest[0]:
            self.calibration = []  # wider windows cost even more
        if not self.calibration:
            self.width = pick_window(fastest, self.slack)

    def commit(self, tree, path, hidden, logits) -> None:
        elapsed = time.perf_counter() - self._t_proposed
        start = len(self.history)
        self.history += tree.tokens[path].tolist()
        self._remember_text(start)
        if self._fed and tree.num_aux:  # (a tree without the window: the session fell back to a plain step)
            self._jacobi_step(tree.num_nodes, logits, self._fed)
        if self.calibration and (tree.num_aux or not self._fed):
            self._calibrate(self._fed, elapsed)
            self.window = self.window[:, : self.width]

    def _jacobi_step(self, num_nodes: int, logits: mx.array, width: int) -> None:
        """Shift the first ``width`` columns one level up, append the target's guesses, and pool
        each column's n-gram. logits: (N + A, V); the newest level's rows hold the guesses."""
        newest = num_nodes + (self.levels - 1) * width
        guesses = np.array(mx.argmax(logits[newest : newest + width], axis=-1))  # argmax even when sampling
        column = np.concatenate([self.window[:, :width], guesses[None]], axis=0)  # (L + 1, width) n-grams
        for j in range(width):
            self._remember(column[:, j])
        self.window[:, :width] = column[1:]
