"""TriForce: hierarchical speculation for long contexts, exactly lossless (DESIGN.md §10).

Three levels, each verifying the one below::

    bottom  a cheap drafter (pld, or a draft model over a StreamingLLM cache) proposes gamma1 tokens
    middle  the target itself attending through a RetrievalView (sinks + top chunks + recent tail,
            ``budget`` slots instead of the whole context) verifies them, until it has gamma2 tokens
    top     the generate loop's normal verify: the target over its full cache

The middle's chain is a *sampled draft* of the middle's own distribution p_r: each of its tokens
is distributed exactly as p_r given the tokens before it, because the middle accepts the bottom's
drafts with a lossless rule (greedy: argmax match; a deterministic bottom like pld: the sibling
rule of ``verify_deterministic``; a sampled bottom: ``min(1, p_r/q)`` with the residual
``max(0, p_r - q)``). So the top level can use rejection sampling with q = p_r (``Tree.draft_probs``).
TriForce's reference code resamples from p_r instead of the residual at the middle level, which
is not lossless (tests/test_triforce_sampling.py shows it failing the chi-square test).

The view is rebuilt once per top-level step: its chunks are scored by the root's query, at every
layer, inside the step's first middle forward.
"""

from __future__ import annotations

import time

import mlx.core as mx
import numpy as np

from ..cache_views import RetrievalView
from ..errors import UserError
from ..sampling import SamplingParams, process_probs
from ..tree import Tree
from ..verify import verify_deterministic, verify_greedy, verify_rejection


class TriForce:
    name = "triforce"

    def __init__(self, target, bottom, params: SamplingParams = SamplingParams(), budget: int = 1024,
                 chunk: int = 16, sinks: int = 16, window: int = 128, gamma2: int | str = 6, gamma1: int | None = None):
        self.chooser = Gamma2Chooser() if gamma2 == "auto" else None
        for flag, value in (("--budget", budget), ("--chunk", chunk), ("--gamma2", 1 if self.chooser else gamma2)):
            if value < 1:
                raise UserError(f"{flag} must be >= 1, got {value}")
        if sinks < 0 or window < 0:
            raise UserError(f"--sinks and --window must be >= 0, got {sinks} and {window}")
        if budget < sinks + window + chunk:
            raise UserError(f"--budget {budget} leaves no chunk to retrieve: it must be at least --sinks + --window "
                            f"+ --chunk ({sinks} + {window} + {chunk})")
        limit = getattr(target.args, "max_position_embeddings", None)
        if limit and budget >= limit:
            raise UserError(f"--budget {budget} is not smaller than the model's context ({limit} tokens)")
        self.target, self.bottom, self.params = target, bottom, params
        self.gamma1 = bottom.num_draft if gamma1 is None else gamma1  # the bottom's drafts per middle forward (0: none)
        self.budget, self.chunk, self.sinks, self.window, self.gamma2 = budget, chunk, sinks, window, gamma2
        self.rng = np.random.default_rng(None if params.seed is None else params.seed + 2)
        self.view: RetrievalView | None = None
        self.history: list[int] = []
        self.last_step = None  # (gamma2, start time, tokens) of the step in flight, for the chooser

    def bind_cache(self, cache) -> None:
        """The target's full KV cache (the generate loop calls this before :meth:`reset`)."""
        self.view = RetrievalView(cache, self.budget, self.chunk, self.sinks, self.window)

    def reset(self, context, hidden) -> None:
        if self.view is None:
            raise RuntimeError("TriForce needs the target's cache: call bind_cache first")
        if len(context) <= self.budget:
            raise UserError(f"--budget {self.budget} is not smaller than the context ({len(context)} tokens): "
                            "triforce needs a context longer than its retrieval budget (lower --budget)")
        self.history = list(context)
        self.last_step = None
        self.view.forget()
        self.bottom.reset(self.history, hidden)

    def propose(self, root: int) -> Tree:
        gamma2 = self.gamma2 if self.chooser is None else self._choose()
        self.view.rebuild()
        drafted, q_rows, forwards, proposed, accepted = [], [], 0, 0, 0
        middle_root = root
        while len(drafted) < gamma2:
            tree = self._bottom_draft(middle_root, gamma2 - len(drafted) - 1)
            drafted_by_bottom = tree is not None
            tree = tree if drafted_by_bottom else Tree.chain(middle_root)
            start = self.view.offset
            logits = self._forward(tree)
            path, next_root, probs = self._verify_middle(tree, logits)
            self.view.keep(start, path)
            if drafted_by_bottom:  # (otherwise the step ends, or has no bottom: commit() resyncs it)
                self.bottom.commit(tree, path, None, logits)
            drafted += tree.tokens[path[1:]].tolist() + [next_root]
            if probs is not None:
                q_rows.append(probs[path])  # row path[i] is the distribution emitted token i was drawn from
            forwards += 1
            proposed += tree.num_nodes - 1
            accepted += len(path) - 1
            middle_root = next_root
        drafted = drafted[:gamma2]
        draft_probs = None
        if q_rows:
            q = np.concatenate(q_rows)[:gamma2]
            draft_probs = np.concatenate([np.zeros_like(q[:1]), q])
        out = Tree.chain(root, drafted, draft_probs=draft_probs)
        out.inner = (forwards, proposed, accepted)
        return out

    def _choose(self) -> int:
        """gamma2 'auto': record the step that just ended (its tokens, the wall time from its
        propose to this one), then ask the chooser."""
        now = time.perf_counter()
        if self.last_step is not None and self.last_step[2] is not None:
            gamma2, start, tokens = self.last_step
            self.chooser.record(gamma2, tokens, now - start)
        gamma2 = self.chooser.choose()
        self.last_step = (gamma2, now, None)
        return gamma2

    def _bottom_draft(self, root: int, room: int) -> Tree | None:
        """The bottom's draft behind ``root``, at most ``room`` tokens deep (a middle forward yields
        its accepted drafts + 1, so the step never drafts past gamma2); None: no draft this time."""
        if room <= 0 or self.gamma1 == 0:
            return None
        if hasattr(self.bottom, "max_depth"):  # a tree drafter (recycle): its depth is bounded
            self.bottom.max_depth = min(self.gamma1, room)
        else:
            self.bottom.num_draft = min(self.gamma1, room)
        return self.bottom.propose(root)

    def _forward(self, tree: Tree) -> mx.array:
        """The target through the view over ``tree`` -> logits (N, V)."""
        tokens = mx.array(tree.tokens)[None]
        if tree.is_chain:
            return self.target(tokens, self.view)[0][0]
        n = len(tree.tokens)
        mask = np.ones((n, self.view.length + n), dtype=bool)
        mask[:, self.view.length :] = tree.mask()
        return self.target(tokens, self.view, mx.array(mask), mx.array(tree.positions(self.view.offset)))[0][0]

    def _verify_middle(self, tree: Tree, logits: mx.array):
        """The middle's lossless acceptance of the bottom's draft -> (path, next_root, probs or None)."""
        logits = logits[: tree.num_nodes]
        if self.params.greedy:
            path, next_root = verify_greedy(tree, np.array(mx.argmax(logits, axis=-1)))
            return path, next_root, None
        probs = process_probs(np.array(logits.astype(mx.float32)), self.params)
        rule = verify_rejection if tree.draft_probs is not None else verify_deterministic
        path, next_root = rule(tree, probs, self.rng)
        return path, next_root, probs

    def commit(self, tree, path, hidden, logits) -> None:
        if self.last_step is not None:
            self.last_step = (*self.last_step[:2], len(path))  # accepted + the target's own token
        self.history += tree.tokens[path].tolist()
        self.bottom.reset(self.history, None)


class Gamma2Chooser:
    """``--gamma2 auto``: the chain length with the most tokens per second so far.

    Each full step's tokens (accepted + 1) and wall time (from its propose to the next, so the
    middle's forwards and the full verify are both in it) are summed per candidate. Every
    candidate is tried twice first; then the best rate is used, and one step in 8 tries a
    neighbour of the best (the costs move as the context grows). The drafter keeps its chooser
    from one prompt to the next.
    """

    CANDIDATES = (1, 2, 3, 4, 6, 8, 12)

    def __init__(self):
        self.tokens = dict.fromkeys(self.CANDIDATES, 0)
        self.seconds = dict.fromkeys(self.CANDIDATES, 0.0)
        self.steps = dict.fromkeys(self.CANDIDATES, 0)
        self.count = 0

    def choose(self) -> int:
        self.count += 1
        untried = [g for g in self.CANDIDATES if self.steps[g] < 2]
        if untried:
            return untried[0]
        best = max(self.CANDIDATES, key=lambda g: self.tokens[g] / self.seconds[g])
        if self.count % 8:
            return best
        i = self.CANDIDATES.index(best)
        neighbours = [self.CANDIDATES[j] for j in (i - 1, i + 1) if 0 <= j < len(self.CANDIDATES)]
        return neighbours[(self.count // 8) % len(neighbours)]

    def record(self, gamma2: int, tokens: int, seconds: float) -> None:
        self.tokens[gamma2] += tokens
        self.seconds[gamma2] += seconds
        self.steps[gamma2] += 1


def make_triforce(target, params: SamplingParams = SamplingParams(), draft=None, num_draft: int | None = None,
                  window: int | None = None, kv_budget: int | None = None, chunk: int | None = None,
                  sinks: int | None = None, gamma2: int | str | None = None, bottom: str | None = None) -> TriForce:
    """TriForce over ``target`` with ``bottom`` ("pld", the default, or "recycle": the automaton
    and Token Recycling's table in a tree the middle verifies, where extra nodes are cheap: it
    attends to ``budget`` slots only) as the bottom, or ``draft`` (a model with the target's
    tokenizer) over a StreamingView of the same ``sinks`` and ``window``. None = the default.
    ``num_draft`` is gamma1 (the bottom's longest draft per middle step; 0 = no bottom, the middle
    drafts alone)."""
    from .draft_model import DraftModel
    from .pld import PromptLookup
    from .recycle import make_recycle
    from ..cache_views import StreamingView

    if window == "auto":
        raise UserError("--window for triforce is a number of recent tokens, not 'auto'")
    if gamma2 is not None and gamma2 != "auto":
        try:
            gamma2 = int(gamma2)
        except ValueError:
            raise UserError(f"--gamma2 must be an integer or 'auto', got {gamma2!r}") from None
    shape = {k: v for k, v in dict(budget=kv_budget, chunk=chunk, sinks=sinks, window=window, gamma2=gamma2).items() if v is not None}
    tf = dict(TRIFORCE_DEFAULTS, **shape)
    gamma1 = GAMMA1 if num_draft is None else num_draft
    if gamma1 < 0:
        raise UserError(f"--num-draft must be >= 0 (0 = the middle drafts alone), got {gamma1}")
    if bottom not in (None, "pld", "recycle"):
        raise UserError(f"--bottom must be pld or recycle, got {bottom!r}")
    if draft is not None and bottom is not None:
        raise UserError("--bottom and --draft-model both name triforce's bottom drafter: give one")
    if draft is None and bottom == "recycle":
        bottom = make_recycle(target)
    elif draft is None:
        bottom = PromptLookup(num_draft=max(gamma1, 1))
    else:
        bottom = DraftModel(draft, num_draft=max(gamma1, 1), params=params, target_vocab=target.args.vocab_size,
                            cache=StreamingView(len(draft.layers), tf["sinks"], tf["window"]))
    return TriForce(target, bottom, params, gamma1=gamma1, **tf)


TRIFORCE_DEFAULTS = dict(budget=1024, chunk=16, sinks=16, window=128, gamma2=6)
GAMMA1 = 4
