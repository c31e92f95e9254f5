"""``--method eagle``: an EAGLE-3 head drafting EAGLE-2's dynamic tree, sized by the tree budget.

The target returns the three taps (the residual stream entering layers ``head.taps``) from the
same forward that verifies the tree: the loop passes ``taps=self.taps`` and hands them to
``reset``/``commit`` (DESIGN.md §8). The head keeps its own KV cache over the draft context, one
entry per position t of the accepted text (the feature of t paired with token t + 1).

One step, with the accepted path's features not yet in the head's cache (``pending``)::

    propose(root):
      entries  = pending features, paired with their next tokens (the last one with ``root``)
      h, k, v  = head.step(entries) over the cache          -> k, v join the cache (accepted text)
      depth 1  = top-k of head.logits(h[-1])                 (children of the root)
      round d  = the k frontier nodes (best path log-prob) step once more, each attending to the
                 cache and to its own draft ancestors; their top-k children are candidates, the best
                 k of those k^2 the next frontier
      tree     = the global top-n candidates (parents kept), n from the tree budget; prompt-lookup
                 chains merged in (free nodes)
    commit(path): the taps of the accepted nodes become the next ``pending``; the draft rounds'
                 keys and values were never written to the cache, so it holds only the accepted path.

Example: cache holds positions 0..9; the tree r -> {a, b}, a -> c is verified and the path is
[r, a] (next root x): pending = features of r (position 10, paired with a) and a (position 11,
paired with x), written at the next propose(x); c and b leave no trace.

Drafts are deterministic, so under sampling a node is accepted when it is the token the target
samples there (``Session._verify``: Gumbel-max over position-keyed noise).
"""

from __future__ import annotations

import time
from pathlib import Path

import mlx.core as mx
import numpy as np

from ..errors import UserError
from ..tree import Tree, beams_to_tree, merge_beams
from .eagle3_head import Eagle3Head
from .redrafter import _log_softmax, _top, select_tree


class Eagle:
    name = "eagle"

    def __init__(self, target, head: Eagle3Head, topk: int = 6, depth: int = 6, num_nodes: int = 16, budget=None, lookup: int = 0):
        for label, value in (("top-k", topk), ("depth", depth), ("tree size", num_nodes)):
            if value < 1:
                raise UserError(f"eagle {label} must be >= 1, got {value}")
        self.target, self.head = target, head
        self.taps = head.taps  # the loop passes these to the target's forward
        self.topk, self.depth, self.num_nodes, self.budget = topk, depth, num_nodes, budget
        self.lookup = None
        if lookup:
            from .pld import PromptLookup

            self.lookup = PromptLookup(max_ngram=3, min_ngram=2, num_draft=depth, num_matches=lookup)
        self.history: list[int] = []
        self.k = self.v = None  # (1, H_kv, S, hd) the head's cache: one entry per accepted position
        self.positions = np.zeros(0, dtype=np.int64)  # (S,) the position of each cache entry
        self.pending: list[tuple[mx.array, list[int], int]] = []  # (features (m, D), next tokens, first position)
        self.offset = 0  # tokens in the target's cache

    # -- the head's cache -------------------------------------------------------------------------
    def reset(self, context, hidden, taps=None) -> None:
        if taps is None:
            raise UserError("--method eagle needs the target's taps (the loop passes them when the drafter has .taps)")
        context = list(context)
        start = len(context) - taps.shape[0]  # position of the first new feature
        keep = int(np.sum(self.positions < start - 1))  # entry t pairs feature t with token t + 1
        if self.history[: start] != context[: start]:
            keep = 0
        self.k, self.v = (None, None) if keep == 0 else (self.k[:, :, :keep], self.v[:, :, :keep])
        self.positions = self.positions[:keep]
        self.pending = [(self.head.fuse(taps), context[start + 1 :], start)]
        self.offset = len(context)
        self.history = context

    def _write_pending(self, root: int):
        """Run the head over the pending entries (the last paired with ``root``); their keys and
        values join the cache. Returns (h (1, D) of the last entry, its position). Lazy."""
        g = mx.concatenate([p[0] for p in self.pending])
        tokens = [t for p in self.pending for t in p[1]] + [root]
        positions = np.concatenate([p[2] + np.arange(p[0].shape[0]) for p in self.pending])
        self.pending = []
        h, k, v = self.head.step(self.target.embed(mx.array(tokens)), g, mx.array(positions), self.k, self.v, None)
        self.k = k if self.k is None else mx.concatenate([self.k, k], axis=2)
        self.v = v if self.v is None else mx.concatenate([self.v, v], axis=2)
        self.positions = np.concatenate([self.positions, positions])
        return h[-1:], int(positions[-1])

    # -- drafting ---------------------------------------------------------------------------------
    def candidates(self, root: int):
        """(tokens, parents, scores) of the candidate nodes 1..M (target ids, parent ids, path
        log-probs), lazy: depth 1 holds k nodes, each later depth k^2."""
        head, k = self.head, self.topk
        ids = head.draft_ids()
        h, pos = self._write_pending(root)
        logprobs = _log_softmax(head.logits(h))[0]
        first = _top(logprobs, k)
        k = first.shape[0]
        tokens, parents, scores = [first], [mx.zeros((k,), mx.int32)], [logprobs[first]]
        frontier_ids, frontier_tok, frontier_score = mx.arange(1, k + 1), first, logprobs[first]
        frontier_h = mx.broadcast_to(h, (k, h.shape[-1]))
        keys, values = self.k, self.v
        S = keys.shape[2]
        ancestors = mx.zeros((k, 0), mx.bool_)  # (k, draft entries so far): which the frontier sees
        offset = 1 + k
        for d in range(1, self.depth):
            mask = mx.concatenate([mx.ones((k, S), mx.bool_), ancestors, mx.eye(k, dtype=mx.bool_)], axis=1)
            e = self.target.embed(ids[frontier_tok])
            h_new, k_new, v_new = head.step(e, frontier_h, mx.full((k,), pos + d, mx.int32), keys, values, mask)
            keys, values = mx.concatenate([keys, k_new], axis=2), mx.concatenate([values, v_new], axis=2)
            cand = frontier_score[:, None] + _log_softmax(head.logits(h_new))  # (k, V_d)
            child = _top(cand, k)  # (k, k)
            child_score = mx.take_along_axis(cand, child, axis=-1)
            tokens.append(child.reshape(-1))
            parents.append(mx.repeat(frontier_ids, k).astype(mx.int32))
            scores.append(child_score.reshape(-1))
            if d == self.depth - 1:
                break
            best = _top(child_score.reshape(-1), k)
            parent = best // k
            own = mx.arange(k)[None] == parent[:, None]  # (k, k): the new frontier's parent entry
            ancestors = mx.concatenate([ancestors[parent], own], axis=1)
            frontier_ids, frontier_tok = offset + best, child.reshape(-1)[best]
            frontier_score, frontier_h = child_score.reshape(-1)[best], h_new[parent]
            offset += child.size
        return ids[mx.concatenate(tokens)], mx.concatenate(parents), mx.concatenate(scores)

    def propose(self, root: int) -> Tree:
        t0 = time.perf_counter()
        extra = self.lookup.continuations(self.history + [root]) if self.lookup is not None else []
        if self.budget is not None:
            self.budget.context = self.offset
        n = self.num_nodes if self.budget is None else self.budget.choose()
        if n == 0:  # the head does not pay here: the free chains alone; pending waits for the next head step
            self.skip(root)
            tree, _ = beams_to_tree(root, extra)
            self._ranks, self._draft_s = np.zeros(tree.num_nodes, dtype=np.int64), None
            return self.budget.pad(tree)
        out = self.candidates(root)
        mx.eval(*out, self.k, self.v)  # the one host sync of the draft
        tokens, parents, scores = (np.array(a) for a in out)
        tree, kept = select_tree(root, tokens, parents, scores, n)
        ranks = np.zeros(tree.num_nodes, dtype=np.int64)
        ranks[1:] = np.argsort(np.argsort(-scores[kept - 1], kind="stable"), kind="stable") + 1
        if extra:
            tree, index = merge_beams(tree, extra)
            ranks = np.pad(ranks, (0, tree.num_nodes - len(ranks)))
            ranks[index[index >= 0]] = 0
        self._ranks, self._draft_s = ranks, time.perf_counter() - t0
        return tree if self.budget is None else self.budget.pad(tree)

    def draft(self, root: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates after ``root`` as a head source of another drafter's tree (``recycle``):
        (tokens, parents, path log-probs) of nodes 1..M, parent 0 = the root, on the host."""
        out = self.candidates(root)
        mx.eval(*out, self.k, self.v)  # the one host sync of the draft
        return tuple(np.array(a) for a in out)

    def skip(self, root: int) -> None:
        """A step that drafts without the head: the last pending feature pairs with ``root``, and
        the pending entries wait for the next head step."""
        if self.pending:
            self.pending[-1][1].append(root)

    def commit(self, tree, path, hidden, logits, taps=None) -> None:
        accepted = tree.tokens[path].tolist()
        self.pending.append((self.head.fuse(taps[mx.array(path)]), accepted[1:], self.offset))
        self.offset += len(path)
        self.history += accepted
        if self.budget is not None:
            self.budget.observe(self._ranks, path, self._draft_s)


def find_shipped_eagle_head(target) -> Path | None:
    """A head shipped in the package (``heads/<name>-eagle3``) that fits ``target``, or None."""
    from .eagle3_head import check_eagle3_target, is_eagle3_dir, read_eagle3_config
    from .redrafter import shipped_heads_dir

    for config_file in sorted(shipped_heads_dir().glob("*/config.json")):
        if not is_eagle3_dir(config_file.parent):
            continue
        try:
            check_eagle3_target(read_eagle3_config(config_file.parent), target, config_file.parent)
        except UserError:
            continue
        return config_file.parent
    return None


def make_eagle(target, head_path=None, budget=None, sources: str = "pld", **options):
    """An EAGLE drafter for ``target`` with the EAGLE-3 head directory at ``head_path`` (default:
    the shipped one). ``budget``: None, a TreeBudget, or True (the per-device cost table).
    ``sources="recycle"``: the head's tree becomes a source of ``recycle``'s merged tree
    (:func:`~.head_source.with_head`); ``"pld"``: ``lookup`` prompt-lookup chains join the head's tree."""
    from .eagle3_head import load_eagle3_head

    if target is None:
        raise UserError("--method eagle needs the target model")
    if head_path is None:
        head_path = find_shipped_eagle_head(target)
        if head_path is None:
            raise UserError("no shipped EAGLE-3 head fits this model; train one with `mlx-specdec train-drafter --arch eagle3` and pass --drafter PATH")
    if sources == "recycle":
        from .head_source import with_head

        return with_head(target, lambda **shape: Eagle(target, load_eagle3_head(head_path, target), **shape), budget, **options)
    if budget is True:
        from .tree_budget import TreeBudget

        budget = TreeBudget.for_target(target)
    return Eagle(target, load_eagle3_head(head_path, target), budget=budget, **options)
