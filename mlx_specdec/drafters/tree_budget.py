"""Tree size per device: the size that maximises expected tokens per second.

The target's forward time for n new tokens is measured once per (model, dtype, device, CPU model, BLAS and
its thread count) and cached as JSON under the model store (``<models_home>/.tree-costs/<key>.json``):
a Mac GPU or a 2-core CPU wants narrow trees, a datacenter GPU wide ones. It is timed behind 256
and behind 2,048 cached tokens, and the budget reads it at the context the drafter reports
(``budget.context``), linear in the context between and beyond: every extra tree token attends
over the whole cache, so on a 2-core CPU a 16-token tree costs 1.6 one-token forwards at 128
tokens of context and 3.0 at 2K (DESIGN's figures), and a tree sized for a short context is too
wide for a long one. During generation the
drafter reports every verified tree; for each size m the budget keeps the mean number of tokens
that a tree cut to its m best head nodes (by draft confidence) would have had accepted. Nodes from
a free source (prompt-lookup chains, rank 0) are in every cut. With a tree of n head nodes the
accepted path is known for every m <= n (a cut tree accepts the prefix of the path whose nodes all
rank <= m), so every ``explore_every``-th step drafts a larger tree (twice the best size, at least
``default``) to keep the estimates fresh. The next size is then::

    argmax_m  (1 + accepted(m)) / (forward_s(1 + lookup_nodes + m) + (draft_s if m > 0 else 0))

Padding: the timed curve need not be monotone (2-core CPU, OpenBLAS, before the Linears' own row
padding of ``models/row_padding.py``: 12 tokens 123 ms, 16 tokens 88 ms; its small matrix products
run a slower kernel below 16 rows), so where a larger size is timed cheaper a tree runs padded to
it (:meth:`TreeBudget.pad`: root copies that see only the cache and themselves), and every choice
here reads :meth:`TreeBudget.costs`, the cost after padding. With row padding the matrix products
no longer need it, and the curve is nearly flat from 5 to 16 tokens (74 ms, against 46 for one).
So where row padding is on, the budget reads the timed curve as non-decreasing (``monotone``):
its remaining dips are load on a shared machine, and a tree padded into one costs what its size
costs (a 2-core Xeon VM: 14 tokens timed at 170 ms between 195 and 203, run at 230 in the loop).

m = 0 means "no head this step": no draft search, only the free chains (or plain decoding). So
where the head does not pay for its draft and its tree (a slow CPU), ReDrafter falls back to what
prompt lookup alone gives, and the explore steps keep checking whether the head pays again.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..measurements import machine_key
from ..tree import Tree

SIZES = tuple(range(1, 25)) + (28, 32)  # every size a budget may pick (the curve is not monotone)
LONG_SIZES = (1, 2, 4, 8, 12, 16, 24, 32)  # sizes timed again behind a long context
SHORT_PAST, LONG_PAST = 256, 2048  # cached tokens behind the timed trees
PAD_GAIN = 0.03  # pad a tree to a larger size only where that forward is at least 3% cheaper
COSTS_VERSION = "tree-v6"  # v6: numpy softmax on wide attention scores; v1 timed the causal chain path at 128 tokens; v2 kept medians; v3 one context; v4 before row padding


def cost_key(target) -> str:
    """The name of this (model, dtype, device, BLAS and threads)'s cost table."""
    return f"{machine_key(target)}-{COSTS_VERSION}"


def timing_tree(n: int) -> Tree:
    """An n-node tree of the shape the loop verifies (a chain for n = 1, which takes the causal
    path; a branching tree otherwise, which takes the masked path with per-token positions)."""
    if n == 1:
        return Tree.chain(0)
    parents = [-1] + [(i - 1) // 2 for i in range(1, n)]  # binary: depth ~log2 n, siblings at every level
    return Tree(np.arange(n) % 97, np.array(parents))


def measure_forward_costs(target, sizes=SIZES, past: int = SHORT_PAST, repeats: int = 7) -> dict[int, float]:
    """Seconds of the forward the loop runs (``Session.forward``: tree mask and per-token positions
    for every tree but a chain) over an n-node tree behind ``past`` cached tokens: the fastest of
    ``repeats`` rounds after a warm-up round. Sizes are timed round-robin, so a load spike hits
    every size alike, and the minimum, not the median, is kept: load only ever adds time, and on a
    shared 2-core machine a median of 5 measured under other jobs' load was noise (1 token 217 ms,
    16 tokens 900 ms, 28 tokens 453 ms). The curve's remaining bumps are the device's own (on a
    2-core CPU with OpenBLAS 16 nodes can cost less than 12)."""
    from ..generate import Session

    rng = np.random.default_rng(0)
    session = Session(target)
    vocab = target.args.vocab_size
    mx.eval(target(mx.array(rng.integers(0, vocab, (1, past))), session.cache)[0], *session.cache.state())
    trees = {n: timing_tree(n) for n in sizes}
    for tree in trees.values():
        tree.tokens = rng.integers(0, vocab, len(tree.tokens))
    times = {n: [] for n in sizes}
    for round_ in range(repeats + 1):
        for n in sizes:
            start = time.perf_counter()
            logits, hidden = session.forward(trees[n])
            mx.eval(logits, hidden, *session.cache.state())
            if round_:
                times[n].append(time.perf_counter() - start)
            session.cache.truncate(past)
    return {n: float(min(times[n])) for n in sizes}


def cached_forward_costs(target, store: Path | None = None) -> tuple[dict[int, float], dict[int, float]]:
    """The cost tables for this (model, dtype, device) behind SHORT_PAST and LONG_PAST cached
    tokens, measured on first use and cached as JSON. A model whose context is shorter than
    LONG_PAST + 32 gets no long table (empty)."""
    from ..measurements import measured_once, measurement_file

    def measure() -> dict:
        context = getattr(target.args, "max_position_embeddings", None) or 0
        long = measure_forward_costs(target, LONG_SIZES, past=LONG_PAST) if context >= LONG_PAST + max(LONG_SIZES) else {}
        return {"key": cost_key(target), "past": [SHORT_PAST, LONG_PAST],
                "forward_s": measure_forward_costs(target, past=SHORT_PAST), "long_forward_s": long}

    def read(saved: dict):
        return tuple({int(k): float(v) for k, v in saved[name].items()} for name in ("forward_s", "long_forward_s"))

    return measured_once(measurement_file(cost_key(target), store), measure, read)


def isotonic(values) -> np.ndarray:
    """The non-decreasing sequence nearest ``values`` in least squares (pool adjacent violators).
    Example: [5, 7, 6, 9, 8, 8] -> [5, 6.5, 6.5, 8.33, 8.33, 8.33]."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled run
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return np.concatenate([np.full(int(count), total / count) for total, count in blocks]) if blocks else np.zeros(0)


class TreeBudget:
    def __init__(self, forward_s: dict[int, float], max_nodes: int = 24, default: int = 12, explore_every: int = 8, warmup: int = 8,
                 long_forward_s: dict[int, float] | None = None, monotone: bool = False):
        """``forward_s``: seconds of a forward over n tree tokens behind SHORT_PAST cached ones;
        ``long_forward_s`` the same behind LONG_PAST (optional: without it the cost ignores the context).
        ``monotone``: read both tables as non-decreasing in n (:func:`isotonic`, no tree padding), for
        a device whose Linears already run at their cheapest row count (``models/row_padding.py``):
        there a dip in the timed curve is the machine's load, not the kernel. Example: a 2-core Xeon
        VM timed 12 / 13 / 14 / 15 tokens at 197 / 195 / 170 / 203 ms; padded to 14, the loop's own
        14-token forwards then took 230 ms."""
        sizes = sorted(forward_s)
        self.timed, self.timed_max = set(sizes), max(sizes)  # the sizes a tree may be padded to
        by_tokens = np.arange(max_nodes + 64)
        smooth = isotonic if monotone else np.asarray
        short = smooth([forward_s[n] for n in sizes])
        self.forward_s = np.interp(by_tokens, sizes, short)  # by token count, at SHORT_PAST
        self.per_context_token = np.zeros(len(by_tokens))  # extra seconds per cached token, by token count
        if long_forward_s:
            long_sizes = sorted(long_forward_s)
            long = smooth([long_forward_s[n] for n in long_sizes])
            extra = smooth(np.maximum(long - np.interp(long_sizes, sizes, short), 0.0))  # at the long table's sizes
            self.per_context_token = np.interp(by_tokens, long_sizes, extra) / (LONG_PAST - SHORT_PAST)
        self.context = 0  # tokens in the target's cache: the drafter sets it before each choice
        self.max_nodes, self.default = max_nodes, min(default, max_nodes)
        self.explore_every, self.warmup = explore_every, warmup
        self.accepted = np.zeros(max_nodes + 1)  # [m]: sum over steps of tokens accepted with the m best head nodes
        self.count = np.zeros(max_nodes + 1)  # [m]: steps whose tree had >= m head nodes
        self.free_nodes = 0.0  # running mean of the free (rank 0) nodes per tree
        self.draft_s = 0.0  # running mean of the head's draft time
        self.steps = 0
        self._drafts = 0

    @classmethod
    def for_target(cls, target, **kwargs) -> "TreeBudget":
        from ..models import row_padding

        short, long = cached_forward_costs(target)
        return cls(short, long_forward_s=long, monotone=row_padding.applies(target), **kwargs)

    def raw_costs(self) -> np.ndarray:
        """Seconds of a forward by token count at the current context, as timed. Example: 60 ms
        for 8 tokens behind 256, 150 ms behind 2,048 -> 105 ms behind 1,152."""
        return self.forward_s + max(0, self.context - SHORT_PAST) * self.per_context_token

    def costs(self) -> np.ndarray:
        """Seconds of a forward by token count when every tree is padded (:meth:`pad`) to the
        cheapest timed size at least as large (the smallest of those within PAD_GAIN of it): the
        running minimum from the right of :meth:`raw_costs` over the timed sizes. Example (2-core
        CPU): 12 tokens timed at 123 ms and 16 at 88 ms, so 9 to 16 tokens all cost 88 ms."""
        return self._padding()[0]

    def pad_size(self, tokens: int) -> int:
        """The forward size to run ``tokens`` tree tokens at (``tokens`` itself or a larger timed
        size that costs at least PAD_GAIN less)."""
        sizes = self._padding()[1]
        return int(sizes[tokens]) if tokens < len(sizes) else tokens

    def pad(self, tree: Tree) -> Tree:
        """``tree`` padded to :meth:`pad_size` (root copies, see :meth:`Tree.padded`)."""
        return tree.padded(self.pad_size(len(tree.tokens)))

    def _padding(self) -> tuple[np.ndarray, np.ndarray]:
        raw = self.raw_costs()
        costs, sizes = raw.copy(), np.arange(len(raw))
        best = self.timed_max
        for t in range(self.timed_max, 0, -1):  # scan down: the cheapest timed size >= t so far
            if t in self.timed and raw[t] <= (1 + PAD_GAIN) * raw[best]:  # (the smaller on near-ties)
                best = t
            if raw[best] < (1 - PAD_GAIN) * raw[t]:
                costs[t], sizes[t] = raw[best], best
        return costs, sizes

    def choose(self) -> int:
        """Head nodes for the next tree; 0 = skip the head this step. Warm-up steps draft the
        largest tree; later, every ``explore_every``-th step drafts twice the current best size
        (at least ``default``), which keeps the estimates fresh where the choice can move without
        paying for the largest tree where narrow ones win (a CPU)."""
        self.steps += 1
        if self.steps <= self.warmup:
            return self.max_nodes
        seen = self.count > 0
        if not seen[1:].any():
            return self.default
        m = np.arange(self.max_nodes + 1)
        rate = self.expected_rates()
        best = int(m[seen][np.argmax(rate[seen])])
        if self.steps % self.explore_every == 0:
            return min(self.max_nodes, max(self.default, 2 * best))
        return best

    def expected_rates(self) -> np.ndarray:
        """(max_nodes + 1,) expected tokens per second of a tree with the m best head nodes (plus
        the free ones), for m = 0 .. max_nodes."""
        m = np.arange(self.max_nodes + 1)
        tokens = np.minimum(np.round(1 + self.free_nodes + m).astype(np.int64), len(self.forward_s) - 1)
        return (1 + self.accepted / np.maximum(self.count, 1)) / (self.costs()[tokens] + np.where(m > 0, self.draft_s, 0.0))

    def observe(self, ranks: np.ndarray, path: list[int], draft_s: float | None) -> None:
        """ranks: (N,) of each tree node: 1 = the head's best, 0 = a free node (prompt lookup; node 0
        unused); path: the accepted nodes; draft_s: the head's draft time, None when it was skipped."""
        n = min(int(ranks.max(initial=0)), self.max_nodes)
        prefix_max = np.maximum.accumulate(ranks[path[1:]]) if len(path) > 1 else np.zeros(0)
        m = np.arange(n + 1)
        self.accepted[: n + 1] += (prefix_max[None, :] <= m[:, None]).sum(axis=1)
        self.count[: n + 1] += 1
        free = float(np.sum(ranks[1:] == 0))
        self.free_nodes = free if self.steps <= 1 else 0.9 * self.free_nodes + 0.1 * free
        if draft_s is not None:
            self._drafts += 1
            self.draft_s = draft_s if self._drafts == 1 else 0.9 * self.draft_s + 0.1 * draft_s

    def best_cut(self, values: np.ndarray, overhead_s: float = 0.0) -> int:
        """How many nodes of a ranked candidate list to verify: ``values`` (M,) are the nodes'
        estimated probabilities of being accepted, in the order they would join the tree (each
        after its parent), so a cut to n nodes accepts ``sum(values[:n])`` tokens on average::

            argmax_n (1 + sum(values[:n])) / (forward_s(1 + n) + overhead_s),  n = 0 .. M

        Example: forward 50 ms for 1 token, 60 ms for 2, 100 ms for 3, values [0.6, 0.3]:
        n = 0 -> 1/0.05 = 20, n = 1 -> 1.6/0.06 = 26.7, n = 2 -> 1.9/0.1 = 19: one node.
        """
        values = np.asarray(values, dtype=np.float64)[: min(len(values), self.max_nodes, len(self.forward_s) - 2)]
        tokens = 1 + np.concatenate([[0.0], np.cumsum(values)])
        rate = tokens / (self.costs()[1 : len(values) + 2] + overhead_s)
        return int(np.argmax(rate))
