"""Classic speculative decoding with a smaller draft model sharing the target's tokenizer.

The draft model runs k steps autoregressively on its own KV cache and proposes the chain. Under
greedy decoding it drafts its argmax (the graph stays lazy: one sync for all k tokens). Under
sampling it samples each token from its own processed distribution q and hands q to the
verifier for exact rejection sampling (``min(1, p/q)``, residual ``norm(max(0, p - q))``).
After verification its cache is rolled back to the accepted prefix (pointer arithmetic).
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np

from ..cache import KVCache
from ..errors import UserError
from ..generate import PREFILL_CHUNK, common_prefix
from ..sampling import SamplingParams, process_probs, sample
from ..tree import Tree


class DraftModel:
    name = "draft-model"

    def __init__(self, model, num_draft: int = 4, params: SamplingParams = SamplingParams(), target_vocab: int | None = None,
                 cache=None):
        """``cache``: the draft model's cache (default a KVCache; TriForce gives a StreamingView)."""
        if num_draft < 1:
            raise UserError(f"--num-draft must be >= 1, got {num_draft}")
        self.model, self.num_draft, self.params = model, num_draft, params
        self.width = target_vocab or model.args.vocab_size  # logits are fitted to the target's rows
        self.cache = cache if cache is not None else KVCache(len(model.layers))
        self.cached: list[int] = []  # ids whose KV is in the draft cache
        self.history: list[int] = []  # ids in the target's cache
        self.rng = np.random.default_rng(None if params.seed is None else params.seed + 1)

    def reset(self, context, hidden) -> None:
        self.history = list(context)
        self._rollback()

    def _rollback(self) -> None:
        keep = common_prefix(self.cached, self.history)
        self.cache.truncate(keep)
        self.cached = self.cached[:keep]

    def _feed(self, ids: list[int]) -> mx.array:
        """Append ``ids`` to the draft cache; returns the logits after the last one."""
        for start in range(0, len(ids), PREFILL_CHUNK):
            hidden = self.model.hidden(mx.array(ids[start : start + PREFILL_CHUNK])[None], self.cache)
        self.cached += ids
        return self._fit(self.model.lm_head_logits(hidden[0, -1]))

    def _fit(self, logits: mx.array) -> mx.array:
        """(V_draft,) -> (V_target,): the same tokenizer padded to a different number of embedding
        rows; the extra rows are no token, so they are cut, or padded with -inf (probability 0)."""
        extra = self.width - logits.shape[-1]
        if extra < 0:
            return logits[: self.width]
        return mx.concatenate([logits, mx.full((extra,), -mx.inf, logits.dtype)]) if extra else logits

    def propose(self, root: int) -> Tree:
        logits = self._feed(self.history[len(self.cached) :] + [root])
        if self.params.greedy:
            drafted = []
            for i in range(self.num_draft):
                token = mx.argmax(logits)
                drafted.append(token)
                if i + 1 < self.num_draft:
                    logits, _ = self.model(token.reshape(1, 1), self.cache)
                    logits = self._fit(logits[0, -1])
            drafted = np.array(mx.stack(drafted)).tolist()
            self.cached += drafted[:-1]
            return Tree.chain(root, drafted)
        drafted, q = [], [np.zeros(1)]
        for i in range(self.num_draft):
            probs = process_probs(np.array(logits.astype(mx.float32)), self.params)
            drafted.append(sample(probs, self.rng))
            q.append(probs)
            if i + 1 < self.num_draft:
                logits = self._feed([drafted[-1]])
        q[0] = np.zeros_like(q[1])
        return Tree.chain(root, drafted, draft_probs=np.stack(q))

    def commit(self, tree, path, hidden, logits) -> None:
        self.history += tree.tokens[path].tolist()
        self._rollback()
