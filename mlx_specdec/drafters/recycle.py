"""Training-free draft trees: a suffix automaton and Token Recycling merged into one budgeted tree.

No weights, so it serves any model from its first prompt. Two sources propose candidates:

- **context** (:class:`~.suffix_automaton.SuffixAutomaton` over the prompt, earlier turns and the
  answer so far): the longest earlier match of the current suffix and what followed it, one chain
  per distinct next token (up to ``branches``, the most frequent first), up to ``max_chain``
  tokens each. Prompt lookup's fixed n-gram match is the special case of one chain.
- **table** (:class:`~.adjacency.AdjacencyTable`, Token Recycling): the target's own top-8 next
  tokens for every token it processed, with their probabilities, kept across prompts; grown from
  the root best-first by path confidence (EAGLE-2's rule) instead of a fixed template.

Every candidate node gets an estimated probability of being accepted, the product along its path
of conditional acceptance rates that are *measured* as the session runs (Beta counts, each node
whose parent was accepted is one trial, pooled by key prefix: :class:`AcceptanceStats`): per
(short or long match, copy in progress, depth, match length, branch rank) for context chains, per
(stored-probability bin, also proposed by a chain) for table nodes. A key's first element is the
source with the feature its prior depends on most (("ctx", 3+ token match), ("tab", probability
bin)), so short matches (1-2 tokens, common and mostly wrong in free text) and long ones never
pool their evidence: a session whose first prompt rejects every short match still drafts a long
one. Keyed by the source alone, the rejections of short matches pulled every key
to ~0.003 and the drafter never drafted again that session (seen on the 13 first turns of the
Spec-Bench dev split, writing first: greedy tau 1.01). Long matches of every length still pool:
one key per match bucket measured tau 3.08 and 1.09x over pld where the context repeats, against
3.11 and 1.11x with them pooled. A node both sources propose takes the higher
estimate. Candidates are merged into one prefix tree (shared prefixes verified once), ranked by
that estimate, and cut by :meth:`~.tree_budget.TreeBudget.best_cut`: expected accepted tokens
(the sum of the kept nodes' estimates) per second of the timed forward for that many tokens plus
the drafter's own time, with the tree padded to the size the device runs fastest
(:meth:`~.tree_budget.TreeBudget.pad`). So a node joins only where it pays for the forward it costs: on a 2-core
CPU that is mostly long context matches; where extra nodes are nearly free (a GPU) the table's
guesses join too.

Worked example (root r = 7; context chain [8, 9, 4] with estimates 0.9, 0.8, 0.5; table row of
7 = [8, 5] whose estimates are 0.6, 0.3, and row of 5 = [6] at 0.1)::

    candidates  8 (0.9, both)  9 (0.8)  4 (0.5)  5 (0.3)  6 (0.03)
    tree        node   0  1  2  3  4          (cut to 4 drafted nodes)
                token  7  8  5  9  4
                parent -1 0  0  1  3
                depth  0  1  1  2  3

Nodes are ordered by depth, siblings best first.
Drafts are deterministic: under sampling a node is accepted when it is the token the target
samples there (the loop's position-keyed noise, ``Session._verify``), and the table aims at that
sample (:meth:`Recycle.couple`).
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from ..tree import Tree
from .adjacency import AdjacencyTable
from .head_source import HeadArm
from .suffix_automaton import SuffixAutomaton

MATCH_BUCKETS = (1, 2, 3, 5, 9, 17)  # match length lower bounds: 1, 2, 3-4, 5-8, 9-16, 17+
MATCH_PRIOR = (0.2, 0.35, 0.5, 0.65, 0.75, 0.85)  # acceptance per node before any evidence
PROB_BINS = np.array([0.0, 0.05, 0.15, 0.3, 0.5, 0.7, 0.9])  # table probability bin lower bounds
PRIOR_TRIALS = 4.0
LONG_BUCKET = 2  # context matches of 3+ tokens pool their evidence apart from those of 1-2
HEAD_PRIOR = 0.8  # a head node's acceptance before any evidence: this share of its draft probability


def key_source(key) -> str:
    """The source of an acceptance key: "ctx", "tab" or "head" (its first element leads with it)."""
    return key[0][0]


def _bucket(length: int) -> int:
    return int(np.searchsorted(MATCH_BUCKETS, length, side="right")) - 1


class AcceptanceStats:
    """Beta counts of "accepted given its parent was" per source key, pooled by key prefix.

    A key is a tuple, most telling feature first; a rare key (a long match at depth 7) starts from
    what its coarser keys have measured instead of a fixed guess (PRIOR_TRIALS pseudo-trials per
    level, from ``prior``). Two poolings:

    - ``nested`` (greedy, what the greedy bench measured): each level shrinks towards its parent's
      rate, its own trials included. Example, prior 0.5, 3 hits in 4 trials of ("ctx", True, 9)
      (so also of ("ctx", True) and ("ctx",)), none of other keys: rate(("ctx",)) =
      (3 + 4 * 0.5) / 8 = 0.625, rate(("ctx", True)) = (3 + 4 * 0.625) / 8 = 0.6875 =
      rate(("ctx", True, 5)). It compounds early rejections (9 of them -> 0.003 over five levels).
    - siblings (``nested=False``, sampling, where early rejections are common): each level
      shrinks towards what its *siblings* measured (the parent's trials that are not its own), so
      no trial counts twice. The same counts: rate(("ctx",)) = 0.625 = rate(("ctx", True)) (no
      sibling data there: the prior), rate(("ctx", True, 5)) = 0.625 (its sibling ("ctx", True, 9)
      measured 3 of 4); 9 rejections of one key and nothing else: 4 * 0.5 / 13 = 0.15.

    On the greedy 40-prompt bench the sibling pooling measured recycle / pld 1.05x (repeat
    categories 1.04x) against the nested pooling's 1.09x (1.11x), so greedy keeps the nested one."""

    def __init__(self, nested: bool = True):
        self.nested = nested
        self.hits: dict = {}
        self.trials: dict = {}

    def rate(self, key, prior: float) -> float:
        mean = prior
        for i in range(1, len(key) + 1):
            part = key[:i]
            hits, trials = self.hits.get(part, 0.0), self.trials.get(part, 0.0)
            if not self.nested and i < len(key):  # the siblings' trials only
                hits, trials = hits - self.hits.get(key[: i + 1], 0.0), trials - self.trials.get(key[: i + 1], 0.0)
            mean = (hits + PRIOR_TRIALS * mean) / (trials + PRIOR_TRIALS)
        return mean

    def totals(self, source: str) -> tuple[float, float]:
        """(hits, trials) of every key of ``source`` ("ctx", "tab", "head")."""
        firsts = [k for k in self.trials if len(k) == 1 and key_source(k) == source]
        return sum(self.hits[k] for k in firsts), sum(self.trials[k] for k in firsts)

    def observe(self, key, accepted: bool) -> None:
        for i in range(1, len(key) + 1):
            part = key[:i]
            self.hits[part] = self.hits.get(part, 0.0) + accepted
            self.trials[part] = self.trials.get(part, 0.0) + 1.0


class Candidates:
    """A prefix trie of candidate nodes (node 0 = the root) with estimates and source keys."""

    def __init__(self, root: int):
        self.tokens, self.parents, self.values = [root], [-1], [1.0]
        self.keys: list[list] = [[]]
        self.children: dict[tuple[int, int], int] = {}

    def depth(self, node: int) -> int:
        d = 0
        while node > 0:
            node, d = self.parents[node], d + 1
        return d

    def add(self, parent: int, token: int, value: float, key) -> int:
        node = self.children.get((parent, token))
        value = min(value, self.values[parent])
        if node is None:
            node = len(self.tokens)
            self.children[(parent, token)] = node
            self.tokens.append(token)
            self.parents.append(parent)
            self.values.append(value)
            self.keys.append([])
        else:
            self.values[node] = max(self.values[node], value)
        self.keys[node].append(key)
        return node

    def ranked(self) -> list[int]:
        """Node ids (root excluded) best first, every parent before its children."""
        values = np.asarray(self.values)
        parents = np.asarray(self.parents)
        depth = np.zeros(len(values), dtype=np.int64)
        for i in range(1, len(values)):
            depth[i] = depth[parents[i]] + 1
        return [int(i) for i in np.lexsort((depth, -values)) if i]  # value desc, shallower first on ties

    def tree(self, kept: list[int]) -> tuple[Tree, np.ndarray]:
        """The tree of ``kept`` nodes (closed under parents); returns it and its candidate ids."""
        values = np.asarray(self.values)
        depth = {0: 0}
        for i in sorted(kept):
            depth[i] = depth[self.parents[i]] + 1
        order = sorted(kept, key=lambda i: (depth[i], -values[i], i))
        new_id = {0: 0}
        for j, i in enumerate(order):
            new_id[i] = j + 1
        tokens = [self.tokens[0]] + [self.tokens[i] for i in order]
        parents = [-1] + [new_id[self.parents[i]] for i in order]
        return Tree(np.array(tokens), np.array(parents)), np.array([0] + order)


class Recycle:
    name = "recycle"

    def __init__(self, vocab_size: int, budget=None, num_nodes: int | None = None, max_chain: int = 16,
                 branches: int = 3, table: bool = True, table_nodes: int = 16, k: int = 8, head=None):
        self.head = head  # a trained head's drafter (ReDrafter, Eagle) as a third source, or None
        self.taps = getattr(head, "taps", None)  # the loop passes an EAGLE-3 head's taps through us
        self.sam = SuffixAutomaton()
        self.table = AdjacencyTable(vocab_size, k) if table else None
        self.greedy_stats, self.sampled_stats = AcceptanceStats(), AcceptanceStats(nested=False)
        self.stats = self.greedy_stats  # the ones for the current decoding (see couple)
        self.budget, self.num_nodes = budget, num_nodes  # a TreeBudget, or a fixed node count
        self.max_chain, self.branches, self.table_nodes = max_chain, branches, table_nodes
        self.max_depth: int | None = None  # deepest node drafted (None: unbounded; TriForce bounds it)
        self.overhead_s = 0.0  # running mean of propose + commit time
        self._t_propose = 0.0
        self._candidates: Candidates | None = None
        self._ids = np.zeros(1, dtype=np.int64)
        self._hot = False  # the last step accepted two or more context-chain tokens (a copy in progress)
        self.noise, self.temperature = None, 1.0  # sampling: the loop's noise (see couple)
        self.arm = HeadArm()  # whether the head runs this step (head_source.py)
        self._with_head, self._step_started = False, 0.0

    def couple(self, noise, params) -> None:
        """Sampling (``noise`` is the loop's :class:`~..sampling.Noise`; None when greedy): the
        target will emit ``argmax(log p + noise)`` at each position, so the table's guesses are
        ranked by ``log p / temperature + noise`` (its pick is the token the target samples when
        the stored row is right, keyed by that aimed rank). Sampled acceptance is measured apart
        from greedy (``sampled_stats``, sibling pooling)."""
        self.noise, self.temperature = noise, max(params.temperature, 1e-6)
        self.stats = self.greedy_stats if noise is None else self.sampled_stats

    def _aim(self, ids: np.ndarray, probs: np.ndarray, position: int) -> np.ndarray:
        """The order of a table row's tokens by how likely each is the target's sample at ``position``."""
        scores = np.log(np.maximum(probs, 1e-30)) / self.temperature + self.noise.at(position, ids)
        return np.argsort(-scores, kind="stable")

    def reset(self, context, hidden, taps=None) -> None:
        if self.head is not None:
            self.head.reset(context, hidden, **({"taps": taps} if self.taps else {}))
        self._hot = False
        context = [int(t) for t in context]
        history = self.sam.history
        if len(history) <= len(context) and context[: len(history)] == history:
            self.sam.extend_all(context[len(history) :])  # the next turn of the same conversation
        else:
            self.sam = SuffixAutomaton(context)

    def _context_candidates(self, cands: Candidates) -> None:
        length = self.sam.match_length
        if not length:
            return
        bucket = _bucket(length)
        longest = self.max_chain if self.max_depth is None else min(self.max_chain, self.max_depth)
        for rank, chain in enumerate(self.sam.continuations(longest, self.branches)):
            node, value = 0, 1.0
            for d, token in enumerate(chain, start=1):
                key = (("ctx", bucket >= LONG_BUCKET), self._hot, min(d, 8), bucket, min(rank, 1))
                value *= self.stats.rate(key, MATCH_PRIOR[bucket])
                node = cands.add(node, token, value, key)

    def _table_candidates(self, cands: Candidates, floor: float) -> None:
        """Best-first growth from the root: expand the most probable frontier node into its row."""
        heap = [(-1.0, 0)]
        added = 0
        root_position = len(self.sam.history) - 1
        while heap and added < self.table_nodes:
            neg, node = heapq.heappop(heap)
            depth = cands.depth(node)
            if self.max_depth is not None and depth >= self.max_depth:
                continue
            ids, probs = self.table.row(cands.tokens[node])
            if self.noise is not None and len(ids):
                order = self._aim(ids, probs, root_position + depth + 1)
                ids, probs = ids[order], probs[order]
            for rank, (token, p) in enumerate(zip(ids.tolist(), probs.tolist())):
                shared = (node, token) in cands.children  # a context chain proposed it too: judged apart
                bin_ = int(np.searchsorted(PROB_BINS, p, side="right")) - 1
                key = (("tab", bin_), shared) if self.noise is None else (("tab", bin_), min(rank, 2), shared)
                value = -neg * self.stats.rate(key, 0.8 * p)
                if value < floor:
                    if self.noise is None:
                        break  # rows are best first
                    continue  # aimed rows are not ordered by p
                child = cands.add(node, token, value, key)
                added += 1
                heapq.heappush(heap, (-cands.values[child], child))

    def _head_candidates(self, cands: Candidates, root: int) -> None:
        """The head's tree (tokens, parents, path log-probs), each node keyed by its conditional
        draft probability (bin) and whether another source proposed it too."""
        tokens, parents, scores = self.head.draft(root)
        node_of = np.zeros(len(tokens) + 1, dtype=np.int64)
        path_score = np.concatenate([[0.0], scores.astype(np.float64)])
        for i, (token, parent) in enumerate(zip(tokens.tolist(), parents.tolist()), start=1):
            above = int(node_of[parent])
            q = float(np.exp(path_score[i] - path_score[parent]))
            shared = (above, token) in cands.children
            key = (("head", int(np.searchsorted(PROB_BINS, q, side="right")) - 1), shared)
            value = cands.values[above] * self.stats.rate(key, HEAD_PRIOR * q)
            node_of[i] = cands.add(above, token, value, key)

    def _head_pays(self) -> bool:
        return self.arm.choose(self._hot)

    def propose(self, root: int) -> Tree:
        t0 = self._step_started = time.perf_counter()
        self.sam.extend(int(root))
        cands = Candidates(int(root))
        self._context_candidates(cands)
        if self.table is not None:
            self._table_candidates(cands, floor=0.02)
        if self.head is not None:
            self._with_head = self._head_pays()
            if self._with_head:
                self._head_candidates(cands, int(root))
            else:
                self.head.skip(int(root))
        ranked = cands.ranked()
        if self.num_nodes is not None:
            n = min(self.num_nodes, len(ranked))
        elif self.budget is not None:
            self.budget.context = len(self.sam.history)
            n = self.budget.best_cut([cands.values[i] for i in ranked], self.overhead_s)
        else:
            n = len(ranked)
        kept = _close_under_parents(cands, ranked[:n])
        tree, self._ids = cands.tree(kept)
        if self.budget is not None and self.num_nodes is None:
            tree = self.budget.pad(tree)  # a larger forward where the device runs it faster
        self._candidates = cands
        self._t_propose = time.perf_counter() - t0
        return tree

    def commit(self, tree, path, hidden, logits, taps=None) -> None:
        t0 = time.perf_counter()
        if self.head is not None:
            self.head.commit(tree, path, hidden, logits, **({"taps": taps} if self.taps else {}))
        cands, ids = self._candidates, self._ids
        accepted = set(path)
        for node in range(1, tree.num_nodes):  # a trial for each node whose parent was accepted
            if int(tree.parents[node]) in accepted:
                for key in cands.keys[ids[node]]:
                    self.stats.observe(key, node in accepted)
        copied = sum(any(key_source(k) == "ctx" for k in cands.keys[ids[node]]) for node in path[1:])
        hot_before, self._hot = self._hot, copied >= 2
        if self.table is not None:
            self.table.update(tree.tokens[: tree.num_nodes], logits, path)  # pads repeat the root
        self.sam.extend_all(tree.tokens[path[1:]].tolist())
        now = time.perf_counter()
        if self.head is not None:
            self.arm.observe(hot_before, self._with_head, len(path), now - self._step_started)
        spent = self._t_propose + now - t0
        self.overhead_s = spent if not self.overhead_s else 0.9 * self.overhead_s + 0.1 * spent


def _close_under_parents(cands: Candidates, nodes: list[int]) -> list[int]:
    kept = set(nodes)
    for i in nodes:
        p = cands.parents[i]
        while p > 0 and p not in kept:  # cannot happen for ranked prefixes; kept for safety
            kept.add(p)
            p = cands.parents[p]
    return sorted(kept)


def make_recycle(target=None, vocab_size: int | None = None, budget=True, **options) -> Recycle:
    """A Recycle drafter for ``target``; ``budget=True`` loads/measures this device's cost table."""
    if vocab_size is None:
        vocab_size = target.args.vocab_size
    if budget is True:
        from .tree_budget import TreeBudget

        budget = TreeBudget.for_target(target, max_nodes=24)
    return Recycle(vocab_size, budget=budget, **options)

