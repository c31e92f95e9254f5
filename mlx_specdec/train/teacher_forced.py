"""The target reads existing answers: a second kind of distillation data (EAGLE's recipe).

Generating answers (``generate.py``) costs one target forward per token and batch row; reading a
(prompt, answer) pair costs one forward for the whole answer, where a parallel device makes long
forwards cheap. On a 2-core CPU it is no faster (measured: ~100 stored tokens/s either way; the
prompt is read too, and MLX's CPU exponentials, ~40M/s, make attention over long answers and the
vocabulary softmax dominate), but it adds human-written contexts to the target's own.

The labels stay the target's own: at every position the shard stores what the *target* predicts
next (``labels``, its argmax, and its top-k probabilities), not the dataset's next token. So the
head still learns the target's behaviour, in the contexts of human-written answers.

A shard has the fields of ``generate.py`` plus ``labels``::

    tokens   (T,)     int32    per sample: the last prompt token, then the answer's tokens
    hidden   (T, D)   float16  the target's final (normed) hidden state at each of those tokens
    labels   (T,)     int32    the target's most likely next token after each of them
    starts   (S + 1,) int64
    topk_ids (T, K), topk_probs (T, K)   optional, as in generate.py

Example: prompt ids [1, 2, 3], answer ids [7, 8] -> tokens [3, 7, 8]; labels[0] is the target's
argmax after [1, 2, 3] (which need not be 7).

Sequences are right-padded into batches of about ``batch_tokens`` tokens: under the causal mask a
real token never sees the padding that follows it, so no mask or position bookkeeping is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np

from .generate import write_shards


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], max_prompt_tokens: int = 384, max_answer_tokens: int = 512) -> list[tuple[list[int], list[int]]]:
    """(prompt ids with the generation prompt, answer ids up to and including the end of turn).

    Pairs whose prompt is longer than ``max_prompt_tokens`` are dropped; answers are cut to
    ``max_answer_tokens``. The answer's ids are the chat template's rendering of the whole turn
    minus the prompt's (pairs where the prompt is not a prefix of the whole are dropped).
    """
    eos = set(tokenizer.eos_ids)
    out = []
    for prompt, answer in pairs:
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.chat_ids(user)
        if len(head) > max_prompt_tokens:
            continue
        whole = tokenizer.chat_ids(user + [{"role": "assistant", "content": answer}], add_generation_prompt=False)
        if whole[: len(head)] != head or len(whole) == len(head):
            continue
        tail = whole[len(head) :]
        end = next((i + 1 for i, t in enumerate(tail) if t in eos), len(tail))
        out.append((head, tail[: min(end, max_answer_tokens)]))
    return out


def _read_batch(model, batch: list[tuple[list[int], list[int]]], top_k: int, torch_target=None):
    """One forward over right-padded prompt+answer rows. Returns per row (tokens, hidden, ids, probs, labels).
    ``torch_target`` (a :class:`~.torch_target.TorchTarget` of ``model``) runs the forward in PyTorch."""
    seqs = [p + a for p, a in batch]
    width = max(len(s) for s in seqs)
    ids = np.zeros((len(seqs), width), dtype=np.int32)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = s
    if torch_target is not None:
        spans = [(len(p) - 1, len(p) + len(a)) for p, a in batch]
        read = torch_target.read_rows(ids, spans, top_k)
        return [(np.array(seqs[b][lo:hi], dtype=np.int32), *read[b]) for b, (lo, hi) in enumerate(spans)]
    hidden = model.hidden(mx.array(ids))  # (B, width, D), causal
    rows = []
    for b, (prompt, answer) in enumerate(batch):
        lo, hi = len(prompt) - 1, len(prompt) + len(answer)  # last prompt token .. last answer token
        h = hidden[b, lo:hi]
        logits = model.lm_head_logits(h).astype(mx.float32)
        labels = mx.argmax(logits, axis=-1)
        extra = []
        if top_k:  # exp over the vocabulary once (exp is what costs on a CPU), argpartition on logits
            kid = mx.argpartition(-logits, top_k - 1, axis=-1)[:, :top_k]
            top = mx.take_along_axis(logits, kid, axis=-1)
            extra = [kid, mx.exp(top - mx.logsumexp(logits, axis=-1, keepdims=True))]
        mx.eval(h, labels, *extra)
        rows.append(
            (
                np.array(seqs[b][lo:hi], dtype=np.int32),
                np.array(h.astype(mx.float16)),
                np.array(extra[0]).astype(np.int32) if top_k else None,
                np.array(extra[1]).astype(np.float16) if top_k else None,
                np.array(labels).astype(np.int32),
            )
        )
    return rows


def read_dataset(
    model,
    encoded: Sequence[tuple[list[int], list[int]]],
    out_dir: str | Path,
    shard_samples: int = 128,
    batch_tokens: int = 2048,
    top_k: int = 0,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    torch_target=None,
) -> Path:
    """Teacher-force ``model`` over the (prompt, answer) pairs; one shard per ``shard_samples``.
    ``torch_target``: run the forwards in PyTorch (:mod:`.torch_target`; the same fields stored).

    Resumable like ``generate_dataset``: shards on disk are skipped; with ``max_seconds`` no new
    shard starts after that much time. progress(done_pairs, total, tokens_so_far) after each shard.
    """
    order = np.random.default_rng(seed).permutation(len(encoded)).tolist()
    shards = [order[i : i + shard_samples] for i in range(0, len(order), shard_samples)]
    meta = dict(source="teacher-forced", pairs=len(encoded), shards=len(shards), shard_samples=shard_samples, top_k=top_k, seed=seed)

    def read_shard(members: list[int]) -> list:
        members = sorted(members, key=lambda j: len(encoded[j][0]) + len(encoded[j][1]))
        rows, batch, width = [], [], 0
        for j in members:
            n = len(encoded[j][0]) + len(encoded[j][1])
            if batch and max(width, n) * (len(batch) + 1) > batch_tokens:
                rows += _read_batch(model, batch, top_k, torch_target)
                batch, width = [], 0
            batch.append(encoded[j])
            width = max(width, n)
        return rows + (_read_batch(model, batch, top_k, torch_target) if batch else [])

    return write_shards(out_dir, shards, read_shard, meta, max_seconds, progress)
