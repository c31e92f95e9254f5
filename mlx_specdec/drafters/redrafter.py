"""ReDrafter: a recurrent draft head on the target's last hidden state, drafting trees.

``--tree beam`` (the paper): beam search over the head's log-probs, width W and length L. Only
beam 0 (the root) expands at the first step. The W beams are merged into a prefix tree
(:func:`~mlx_specdec.tree.beams_to_tree`, "dynamic tree attention"): shared prefixes are verified
once. Example with W=3, L=3: beams ``[a b c] [a b d] [e f g]`` are 9 tokens but 7 tree nodes
(``a``, ``b`` shared), so ``saved`` = 2/9.

``--tree dynamic`` (EAGLE-2's idea on this head): expand the root's top-k children; then, for
``depth - 1`` rounds, expand the k frontier nodes with the highest path confidence (sum of draft
log-probs) into their top-k children each, and make the best k of those k^2 the next frontier.
Finally keep the global top-n nodes by path confidence (a child never scores above its parent, and
parents are always kept). Each round is one batched head step.

The draft vocabulary is the head's frequency-ranked subset plus every token of the context
(``context_vocab``, on by default): names, numbers and terms that an answer copies from its prompt
are rare in any training set, and the head's output rows are the target's own, so they can join at
``reset`` without retraining (padded in buckets of 256 slots so the compiled search rarely retraces).

Both searches run lazily in MLX and read the result with one host sync. Drafts are deterministic,
so under sampling a node is accepted when it is the token the target samples there
(``Session._verify``: Gumbel-max over position-keyed noise), never by ``min(1, p/q)``.

The head needs h, the target's hidden state at the token *before* the root (the one whose logits
gave the root): ``reset`` receives it from the prefill and ``commit`` takes ``hidden[path[-1]]``.
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np

from ..errors import UserError
from ..tree import Tree, beams_to_tree, merge_beams
from .redrafter_head import DraftVocab, ReDrafterHead


def _top(x: mx.array, k: int) -> mx.array:
    """Indices of the k largest entries of each row of x (..., V), best first."""
    k = min(k, x.shape[-1])
    idx = mx.argpartition(-x, k - 1, axis=-1)[..., :k]
    order = mx.argsort(-mx.take_along_axis(x, idx, axis=-1), axis=-1)
    return mx.take_along_axis(idx, order, axis=-1)


def _log_softmax(logits: mx.array) -> mx.array:
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def beam_search(head: ReDrafterHead, target, h: mx.array, root: int, width: int, length: int, vocab: DraftVocab | None = None):
    """Beams (W, L) of token ids, best first, and their scores (W,) (sum of log-probs). Lazy.
    ``vocab``: the draftable tokens (default: the head's own vocabulary)."""
    vocab = vocab or head.draft_vocabulary(target)
    V = vocab.size
    s = head.step(h, target.embed(root if isinstance(root, mx.array) else mx.array([root])), None)  # (1, D)
    logprobs = _log_softmax(head.logits(target, h, s, vocab))[0]
    first = _top(logprobs, width)  # (W,) subset ids: only the root expands at step 1
    scores, seqs = logprobs[first], first[:, None]
    s = mx.broadcast_to(s, (first.shape[0], s.shape[-1]))
    for _ in range(length - 1):
        s = head.step(h, target.embed(vocab.ids[seqs[:, -1]]), s)
        cand = (scores[:, None] + _log_softmax(head.logits(target, h, s, vocab))).reshape(-1)
        best = _top(cand, width)
        beam, token = best // V, best % V
        seqs = mx.concatenate([seqs[beam], token[:, None]], axis=1)
        s, scores = s[beam], cand[best]
    return vocab.ids[seqs], scores


def dynamic_candidates(head: ReDrafterHead, target, h: mx.array, root: int, topk: int, depth: int, vocab: DraftVocab | None = None):
    """Candidate nodes of an EAGLE-2 style tree: (tokens, parents, scores) arrays, lazy.

    Node ids start at 1 (0 is the root). Depth 1 holds k nodes, each later depth k^2 nodes, so
    ``k + (depth - 1) k^2`` candidates, each with its parent id and path score.
    """
    vocab = vocab or head.draft_vocabulary(target)
    s = head.step(h, target.embed(root if isinstance(root, mx.array) else mx.array([root])), None)
    logprobs = _log_softmax(head.logits(target, h, s, vocab))[0]
    first = _top(logprobs, topk)
    k = first.shape[0]
    tokens, parents, scores = [first], [mx.zeros((k,), mx.int32)], [logprobs[first]]
    frontier_ids = mx.arange(1, k + 1)
    frontier_tok, frontier_score = first, logprobs[first]
    frontier_state = mx.broadcast_to(s, (k, s.shape[-1]))
    offset = 1 + k
    for _ in range(depth - 1):
        s = head.step(h, target.embed(vocab.ids[frontier_tok]), frontier_state)  # (k, D)
        cand = frontier_score[:, None] + _log_softmax(head.logits(target, h, s, vocab))  # (k, V')
        child = _top(cand, topk)  # (k, k) per frontier node
        child_score = mx.take_along_axis(cand, child, axis=-1)
        tokens.append(child.reshape(-1))
        parents.append(mx.repeat(frontier_ids, child.shape[1]).astype(mx.int32))
        scores.append(child_score.reshape(-1))
        best = _top(child_score.reshape(-1), topk)  # next frontier: best k of the k^2
        frontier_ids = offset + best
        frontier_tok, frontier_score = child.reshape(-1)[best], child_score.reshape(-1)[best]
        frontier_state = s[best // child.shape[1]]
        offset += child.size
    return vocab.ids[mx.concatenate(tokens)], mx.concatenate(parents), mx.concatenate(scores)


def select_tree(root: int, tokens: np.ndarray, parents: np.ndarray, scores: np.ndarray, n: int):
    """Keep the n best candidates (parents always kept) as a Tree; returns (tree, kept ids).

    Candidates are nodes 1..M (``tokens[i - 1]`` is node i's token, ``parents[i - 1]`` its parent,
    0 = root). Kept nodes are ordered by depth, then score (siblings best first).

    Example: tokens [a b c], parents [0 0 1], scores [-0.1 -2 -0.5], n = 2 keeps a and c (c under a).
    """
    M = len(tokens)
    order = np.lexsort((np.arange(M), -scores))  # best first; parents win ties (smaller ids)
    keep = np.zeros(M + 1, dtype=bool)
    keep[0] = True
    count = 0
    for i in order:
        node = i + 1
        chain = []
        while not keep[node]:
            chain.append(node)
            node = int(parents[node - 1])
        if count + len(chain) > n:
            if count >= n:
                break
            continue
        keep[chain] = True
        count += len(chain)
        if count >= n:
            break
    kept = np.flatnonzero(keep[1:]) + 1
    depth = np.zeros(M + 1, dtype=np.int64)
    for node in range(1, M + 1):  # parents have smaller ids than children
        depth[node] = depth[parents[node - 1]] + 1
    kept = kept[np.lexsort((-scores[kept - 1], depth[kept]))]
    new_id = {0: 0}
    for i, node in enumerate(kept):
        new_id[int(node)] = i + 1
    tree_parents = [-1] + [new_id[int(parents[node - 1])] for node in kept]
    return Tree(np.array([root] + tokens[kept - 1].tolist()), np.array(tree_parents)), kept


class ReDrafter:
    name = "redrafter"

    def __init__(
        self,
        target,
        head: ReDrafterHead,
        tree: str = "beam",
        beam_width: int = 4,
        beam_length: int = 4,
        topk: int = 4,
        depth: int = 5,
        num_nodes: int = 12,
        budget=None,
        lookup: int = 0,
        context_vocab: bool = True,
    ):
        if tree not in ("beam", "dynamic"):
            raise UserError(f"--tree must be 'beam' or 'dynamic', got {tree!r}")
        for label, value in (("beam width", beam_width), ("beam length", beam_length), ("top-k", topk), ("depth", depth), ("tree size", num_nodes)):
            if value < 1:
                raise UserError(f"ReDrafter {label} must be >= 1, got {value}")
        self.target, self.head, self.tree = target, head, tree
        self.beam_width, self.beam_length = beam_width, beam_length
        self.topk, self.depth, self.num_nodes = topk, depth, num_nodes
        self.budget = budget  # a TreeBudget choosing num_nodes per step (dynamic trees), or None
        self.lookup = None
        if lookup:  # prompt-lookup continuations merged into the same tree (an extension, off by default)
            from .pld import PromptLookup

            self.lookup = PromptLookup(max_ngram=3, min_ngram=2, num_draft=max(beam_length, depth), num_matches=lookup)
        self.context_vocab = context_vocab  # the context's tokens join the draft vocabulary at reset
        self.vocab = None
        self.history: list[int] = []
        self.context_length = 0
        self.h = None
        self.drafted_tokens = 0  # beam tokens before merging, for the dedup share
        self.tree_nodes = 0  # drafted tree nodes after merging

    def reset(self, context, hidden) -> None:
        self.h = hidden.reshape(-1)
        self.vocab = self.head.draft_vocabulary(self.target, context if self.context_vocab else ())
        self.history = list(context) if self.lookup is not None else []
        self.context_length = len(context)  # tokens in the target's cache (the budget's cost depends on it)

    @property
    def saved_share(self) -> float:
        """Share of beam tokens that prefix merging removed from verification (beam trees)."""
        return 1 - self.tree_nodes / self.drafted_tokens if self.drafted_tokens else 0.0

    def _search(self):
        """The compiled search for these options, shared by drafters of the same head (traced once
        per shape; the root and the vocabulary are passed as arrays so a new root does not retrace,
        and a new context only when its vocabulary needs another bucket of slots)."""
        key = (id(self.target), self.tree) + ((self.beam_width, self.beam_length) if self.tree == "beam" else (self.topk, self.depth))
        cache = self.head.__dict__.setdefault("_searches", {})
        if key not in cache:
            head, target, (a, b) = self.head, self.target, key[2:]
            head.output_rows(target)  # materialise before tracing
            search = beam_search if self.tree == "beam" else dynamic_candidates
            cache[key] = mx.compile(lambda h, root, ids, rows, bias: search(head, target, h, root, a, b, DraftVocab(ids, rows, bias)))
        return cache[key]

    def propose(self, root: int) -> Tree:
        t0 = time.perf_counter()
        extra = self.lookup.continuations(self.history + [root]) if self.lookup is not None else []
        n = self.num_nodes
        if self.tree == "dynamic" and self.budget is not None:
            self.budget.context = self.context_length
            n = self.budget.choose()
            if n == 0:  # the head does not pay here: the free chains alone (or a plain step)
                tree, _ = beams_to_tree(root, extra)
                self._ranks, self._draft_s = np.zeros(tree.num_nodes, dtype=np.int64), None
                return self.budget.pad(tree)
        out = self._run_search(root)
        if self.tree == "beam":
            beams = out[0]
            tree, _ = beams_to_tree(root, beams)
            self.drafted_tokens += beams.size
        else:
            tokens, parents, scores = out
            tree, kept = select_tree(root, tokens, parents, scores, n)
            ranks = np.zeros(tree.num_nodes, dtype=np.int64)
            ranks[1:] = np.argsort(np.argsort(-scores[kept - 1], kind="stable"), kind="stable") + 1
            self.drafted_tokens += tree.num_nodes - 1
        self.tree_nodes += tree.num_nodes - 1
        if extra:
            tree, index = merge_beams(tree, extra)
            if self.tree == "dynamic":  # lookup nodes are free: rank 0, in every cut of the budget
                ranks = np.pad(ranks, (0, tree.num_nodes - len(ranks)))
                ranks[index[index >= 0]] = 0
        if self.tree == "dynamic":
            self._ranks = ranks
        self._draft_s = time.perf_counter() - t0
        return self.budget.pad(tree) if self.tree == "dynamic" and self.budget is not None else tree

    def _run_search(self, root: int) -> tuple[np.ndarray, ...]:
        vocab = self.vocab or self.head.draft_vocabulary(self.target)
        out = self._search()(self.h, mx.array([root]), vocab.ids, vocab.rows, vocab.bias)
        mx.eval(out)  # the one host sync of the draft
        return tuple(np.array(a) for a in out)

    def draft(self, root: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The dynamic tree's candidates after ``root`` as a head source of another drafter's tree
        (``recycle``): (tokens, parents, path log-probs) of nodes 1..M, parent 0 = the root."""
        if self.tree != "dynamic":
            raise UserError("a ReDrafter head joins a merged tree with --tree dynamic only")
        return self._run_search(root)

    def skip(self, root: int) -> None:
        """A step whose tree leaves the head out: nothing to keep (the head reads only the last hidden state)."""

    def commit(self, tree, path, hidden, logits) -> None:
        self.h = hidden[path[-1]]
        self.context_length += len(path)
        if self.lookup is not None:
            self.history += tree.tokens[path].tolist()
        if self.budget is not None and self.tree == "dynamic":
            self.budget.observe(self._ranks, path, self._draft_s)


def shipped_heads_dir():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / "heads"


def find_shipped_head(target):
    """The directory of a head shipped in the package that was trained for ``target``, or None."""
    from .redrafter_head import check_target, read_head_config

    for config_file in sorted(shipped_heads_dir().glob("*/config.json")):
        try:
            check_target(read_head_config(config_file.parent), target)
        except UserError:
            continue
        return config_file.parent
    return None


def make_redrafter(target, head_path=None, budget=None, sources: str = "pld", **options):
    """A ReDrafter for ``target`` with the head at ``head_path`` (default: the shipped head for it).

    ``budget``: None, a TreeBudget, or True to measure/load the per-device cost table.
    ``sources="recycle"``: the head's dynamic tree becomes a source of ``recycle``'s merged tree
    (:func:`~.head_source.with_head`); ``"pld"``: ``lookup`` prompt-lookup chains join the head's tree.
    """
    from .redrafter_head import load_head

    if target is None:
        raise UserError("--method redrafter needs the target model")
    if head_path is None:
        head_path = find_shipped_head(target)
        if head_path is None:
            raise UserError(
                "no shipped ReDrafter head fits this model; train one with `mlx-specdec train-drafter` and pass --drafter PATH"
            )
    if sources == "recycle":
        from .head_source import with_head

        return with_head(target, lambda **shape: ReDrafter(target, load_head(head_path, target), tree="dynamic", **shape), budget, **options)
    if budget is True:
        from .tree_budget import TreeBudget

        budget = TreeBudget.for_target(target)
    return ReDrafter(target, load_head(head_path, target), budget=budget, **options)
