"""The one generate loop every method runs through (DESIGN.md §2).

    prefill(prompt) -> root r
    repeat:
        tree = drafter.propose(r)                   # node 0 = r, not yet in the cache
        logits, hidden = target(tree, cache, mask=tree mask, positions=past + depth)
        path, r = verify(tree, logits)              # one host sync
        cache.keep(past, path)                      # one gather
        drafter.commit(tree, path, hidden, logits)

Autoregressive decoding is the drafter whose tree is the root alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import mlx.core as mx
import numpy as np

from .cache import KVCache
from .errors import UserError
from .sampling import CoupledRows, DeviceRows, Noise, SamplingParams
from .tree import Tree
from .verify import verify_greedy, verify_rejection

PREFILL_CHUNK = 512


@dataclass
class Step:
    """What one target forward produced."""

    tokens: list[int]  # emitted ids: accepted drafts then the next root (cut at EOS / max tokens)
    proposed: int = 0  # drafted nodes in the tree (the root excluded)
    accepted: int = 0  # drafted tokens accepted and produced (a final EOS included; none cut by EOS / max tokens)
    max_depth: int = 0  # depth of the deepest drafted node
    forward_tokens: int = 1  # tokens in the target forward (tree nodes + auxiliary tokens)
    draft_s: float = 0.0
    verify_s: float = 0.0
    bookkeeping_s: float = 0.0
    prefill: bool = False  # the prompt's forward (its time is kept out of tokens/s)
    inner: tuple[int, int, int] | None = None  # Tree.inner: a drafter's middle level (forwards, proposed, accepted)
    finish: str | None = None  # "eos", "length" (max tokens), "context" (the model's context is full) or None

    @property
    def seconds(self) -> float:
        return self.draft_s + self.verify_s + self.bookkeeping_s


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Prefilled:
    """What the last prefill returned for the whole of a prompt of ``length`` tokens."""

    length: int
    logits: mx.array  # (V,) after the prompt's last token
    hidden: mx.array  # (D,)
    tapped: mx.array | None  # (tokens prefilled, len(taps) * D): the last tokens' taps, or None
    taps: tuple | None


class Session:
    """A target model with its KV cache and the token ids that cache holds.

    Successive calls to :meth:`generate` reuse the cached prefix they share (multi-turn chat
    prefills only the new message). The same prompt again (``bench`` runs every method on one
    prompt; chat's /retry) reuses the last prefill's result whole, so every method starts from
    the identical cache and root distribution. The cache always matches ``cached``, also when
    the consumer stops early or an exception (Ctrl-C) interrupts a step.
    """

    def __init__(self, model, max_context: int | None = None, prefill_progress=None):
        """``prefill_progress(done, total)``, when given, is called with the prompt tokens read so far:
        (0, total) before the prefill's first chunk, then after each chunk of PREFILL_CHUNK tokens."""
        self.model = model
        self.prefill_progress = prefill_progress
        self.cache = KVCache(len(model.layers))
        self.cached: list[int] = []
        self.max_context = max_context or getattr(model.args, "max_position_embeddings", None)
        self.last_prefill_tokens = 0
        self.prefilled: Prefilled | None = None

    def reset(self) -> None:
        self.cache.truncate(0)
        self.cached = []
        self.prefilled = None

    def _reusable(self, ids: list[int], keep: int, taps) -> Prefilled | None:
        """The last prefill's result when ``ids`` is exactly that prompt, the cache still holds
        it, and it has every tap the drafter reads (taps over the whole prompt)."""
        done = self.prefilled
        if done is None or keep != len(ids) or done.length != len(ids):
            return None
        if taps and (done.taps != tuple(taps) or done.tapped is None or done.tapped.shape[0] != len(ids)):
            return None
        return done

    def forward(self, tree: Tree, taps=None):
        """One target forward over ``tree`` appended to the cache -> (logits, hidden) (T, ·), plus
        the residual stream entering the layers ``taps``, concatenated (T, len(taps) * D), when asked."""
        past = self.cache.offset
        tokens = mx.array(tree.tokens)[None]
        mask = positions = None
        if not tree.is_chain:
            mask = np.ones((len(tree.tokens), past + len(tree.tokens)), dtype=bool)
            mask[:, past:] = tree.mask()
            mask, positions = mx.array(mask), mx.array(tree.positions(past))
        if taps:
            logits, hidden, tapped = self.model(tokens, self.cache, mask, positions, taps=taps)
            return logits[0], hidden[0], mx.concatenate([tapped[i][0] for i in taps], axis=-1)
        logits, hidden = self.model(tokens, self.cache, mask, positions)
        return logits[0], hidden[0]

    def _prefill(self, ids: Sequence[int], taps=None):
        report = self.prefill_progress or (lambda done, total: None)
        report(0, len(ids))
        tapped = []
        for start in range(0, len(ids), PREFILL_CHUNK):
            chunk = mx.array(ids[start : start + PREFILL_CHUNK])[None]
            if taps:
                _, hidden, t = self.model(chunk, self.cache, taps=taps)
                tapped.append(mx.concatenate([t[i][0] for i in taps], axis=-1))
            else:
                hidden = self.model.hidden(chunk, self.cache)
            hidden = hidden[0, -1]
            mx.eval(hidden, *self.cache.state(), *tapped[-1:])
            report(min(start + PREFILL_CHUNK, len(ids)), len(ids))
        logits = self.model.lm_head_logits(hidden)
        return logits, hidden, (mx.concatenate(tapped) if taps else None)

    def generate(
        self,
        ids: Sequence[int],
        drafter,
        params: SamplingParams = SamplingParams(),
        max_tokens: int = 256,
        eos_ids: Sequence[int] = (),
    ) -> Iterator[Step]:
        """Generate after ``ids`` (the whole context: earlier turns included) with ``drafter``."""
        ids = list(ids)
        if not ids:
            raise UserError("the prompt is empty")
        if self.max_context and len(ids) >= self.max_context:
            raise UserError(f"the prompt has {len(ids)} tokens but the model's context is {self.max_context}")
        rng = np.random.default_rng(params.seed)
        noise = None if params.greedy else Noise(int(rng.integers(2**32)) if params.seed is None else params.seed)
        eos = set(eos_ids)
        taps = getattr(drafter, "taps", None)  # EAGLE-3 heads read intermediate layers
        keep = common_prefix(self.cached, ids)
        done = self._reusable(ids, keep, taps)
        if done is None and keep == len(ids) and taps:
            keep = 0  # the same prompt, but the drafter needs taps over all of it
        keep = len(ids) if done else min(keep, len(ids) - 1)
        self.cache.truncate(keep)
        self.cached = self.cached[:keep]
        if self.prefilled and keep < self.prefilled.length:
            self.prefilled = None
        try:
            t0 = time.perf_counter()
            self.last_prefill_tokens = len(ids) - keep
            if done:
                logits, hidden, tapped = done.logits, done.hidden, done.tapped
            else:
                logits, hidden, tapped = self._prefill(ids[keep:], taps)
                self.prefilled = Prefilled(len(ids), logits, hidden, tapped, tuple(taps) if taps else None)
            self.cached = list(ids)
            root = self._pick(logits[None], params, noise, len(ids))
            if hasattr(drafter, "couple"):  # a drafter that aims at the target's sample (the noise)
                drafter.couple(noise, params)
            if hasattr(drafter, "bind_cache"):  # a drafter that reads the target's cache (TriForce)
                drafter.bind_cache(self.cache)
            drafter.reset(ids, hidden, **({"taps": tapped} if taps else {}))
            finish = "eos" if root in eos else ("length" if max_tokens <= 1 else None)
            yield Step([] if root in eos else [root], verify_s=time.perf_counter() - t0, prefill=True, finish=finish)
            emitted = 1
            while finish is None:
                t0 = time.perf_counter()
                tree = drafter.propose(root)
                t1 = time.perf_counter()
                if self.max_context and self.cache.offset + len(tree.tokens) > self.max_context:
                    tree = Tree.chain(root)  # near the end of the context: a plain step still fits
                past = self.cache.offset
                logits, hidden, *tapped = self.forward(tree, taps)
                path, next_root = self._verify(tree, logits[: tree.num_nodes], params, rng, noise, past)
                t2 = time.perf_counter()
                self.cache.keep(past, path)
                self.cached += tree.tokens[path].tolist()
                drafter.commit(tree, path, hidden, logits, **({"taps": tapped[0]} if taps else {}))
                out = tree.tokens[path[1:]].tolist() + [next_root]
                accepted = len(path) - 1
                cut = next((i for i, t in enumerate(out) if t in eos), None)
                if cut is not None:  # a drafted EOS was produced (tau counts it); drafts after it were not
                    out, finish, accepted = out[:cut], "eos", min(accepted, cut + 1)
                room = max_tokens - emitted
                if len(out) > room:  # cut by max tokens (before any EOS): only the drafts kept count
                    out, finish, accepted = out[:room], "length", min(accepted, room)
                elif len(out) == room:
                    finish = finish or "length"
                if finish is None and self.max_context and self.cache.offset >= self.max_context:
                    finish = "context"  # no room for the next root: the answer ends here, and says why
                emitted += len(out)
                root = next_root
                yield Step(
                    out,
                    proposed=tree.num_nodes - 1,
                    accepted=accepted,
                    max_depth=int(tree.depth.max()),
                    forward_tokens=len(tree.tokens),
                    draft_s=t1 - t0,
                    verify_s=t2 - t1,
                    bookkeeping_s=time.perf_counter() - t2,
                    finish=finish,
                    inner=tree.inner,
                )
        finally:
            self.cache.truncate(len(self.cached))

    @staticmethod
    def _pick(logits: mx.array, params: SamplingParams, noise, position: int) -> int:
        """The token at ``position`` after the last row of ``logits``: argmax, or the sample the noise picks."""
        if params.greedy:
            return int(mx.argmax(logits[-1]).item())
        return CoupledRows(logits[-1:], params, noise, [position])[0]

    @staticmethod
    def _verify(tree: Tree, logits: mx.array, params: SamplingParams, rng, noise, past: int):
        """Greedy: descend while a child is the target's argmax. Sampling with drafts that were not
        sampled (no ``tree.draft_probs``): the same descent with the target's *sample* at each
        node (Gumbel-max over the noise at the next position, :class:`~.sampling.Noise`), so the
        output is ``ar``'s for the same seed and a drafted token is accepted with probability p(x),
        as the sibling rule (``verify_deterministic``) accepts it. Drafts sampled from q
        (``tree.draft_probs``): ``min(1, p/q)`` with the residual (``verify_rejection``)."""
        if params.greedy:
            return verify_greedy(tree, np.array(mx.argmax(logits, axis=-1)))
        if tree.draft_probs is not None:
            return verify_rejection(tree, DeviceRows(logits, params), rng)  # only the rows read come over
        return verify_greedy(tree, CoupledRows(logits, params, noise, past + tree.depth[: tree.num_nodes] + 1))
