"""Train an EAGLE-3 head online: the target reads each batch (taps + its top-k) while the head trains.

Storing the three taps would cost 3.5 KB per token at D = 576 (float16); online, the target
recomputes them for every batch (SpecForge's online mode), so a run sees as many tokens as the
machine can read. A batch is B (prompt, answer) rows right-padded to width W (causal: a real
token never sees the padding after it). Per batch::

    logits, _, taps = target(ids, taps=head.taps)            (B, W, V), {layer: (B, W, D)}
    g    = fc(cat(taps))                                      (B, W, D)  features
    e    = embed(ids[:, 1:])                                  (B, W, D)  row t holds token t + 1
    soft = top-k of logits, softmax over those k, restricted to the draft vocabulary, renormalised
    head.unroll(e, g, 7)  ->  step i at row t predicts the target's distribution at position t + 1 + i
    loss = sum_i 0.8^i * mean over answer positions of cross-entropy(soft, step i)

(training-time test: step i > 0 runs on the head's own outputs, DESIGN.md §8). Labels are the
target's own predictions, never the dataset's tokens, so the head learns the target.

Held-out acceptance is measured on the target's *own* greedy answers to held-out prompts (what
drafting meets): fed teacher-forced, step i's argmax must equal the target's next token, so
``top1[i]`` is the depth-(i+1) agreement and ``chain_tau`` = 1 + mean leading run of agreements
(a greedy chain draft's accepted length + 1). :func:`redrafter_depth_metrics` scores a ReDrafter
head on the same answers, for head-to-head comparisons on equal data.

Checkpoints (``checkpoint/``: head, optimizer, step) make the run resumable; the batch of a step
depends only on (seed, step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_unflatten

from ..drafters.eagle3_head import Eagle3Head, head_config, load_eagle3_head, save_eagle3_head
from ..errors import UserError
from .trainer import TrainEvent, read_checkpoint, write_checkpoint


@dataclass
class EagleTrainConfig:
    steps: int = 400
    batch_tokens: int = 2048  # target tokens per batch (rows x padded width)
    unroll: int = 7  # training-time test steps
    decay: float = 0.8  # loss weight of step i: decay^i
    top_k: int = 8  # the target's top-k as the soft label
    draft_vocab: int = 4096  # most frequent answer tokens of the data (0 = the whole vocabulary)
    lr: float = 5e-4  # 2e-3 diverges in the first 10 steps on SmolLM2-135M (scripts/eagle_init_probe.py)
    weight_decay: float = 0.0
    warmup: int = 20
    eval_every: int = 100
    checkpoint_every: int = 50
    seed: int = 0


def _schedule(config: EagleTrainConfig):
    warmup = max(1, min(config.warmup, config.steps // 10))  # a short run still spends most steps at full rate
    return optim.join_schedules(
        [optim.linear_schedule(config.lr * 0.01, config.lr, warmup), optim.cosine_decay(config.lr, max(1, config.steps - warmup), config.lr * 0.05)],
        [warmup],
    )


def batches_by_length(pairs: Sequence[tuple[list[int], list[int]]], batch_tokens: int, seed: int) -> list[list[int]]:
    """Groups of pair indices whose padded size (rows x longest row) stays within batch_tokens."""
    order = sorted(np.random.default_rng(seed).permutation(len(pairs)).tolist(), key=lambda j: len(pairs[j][0]) + len(pairs[j][1]))
    groups, group, width = [], [], 0
    for j in order:
        n = len(pairs[j][0]) + len(pairs[j][1])
        if group and max(width, n) * (len(group) + 1) > batch_tokens:
            groups.append(group)
            group, width = [], 0
        group.append(j)
        width = max(width, n)
    return groups + ([group] if group else [])


def pad_rows(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, W) int32 right-padded with 0, lengths (B,))."""
    lengths = np.array([len(s) for s in seqs])
    ids = np.zeros((len(seqs), int(lengths.max())), dtype=np.int32)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = s
    return ids, lengths


class EagleTrainer:
    def __init__(self, target, pairs: Sequence[tuple[list[int], list[int]]], out_dir: str | Path,
                 config: EagleTrainConfig = EagleTrainConfig(), eval_answers: Sequence[tuple[list[int], list[int]]] = (),
                 side_shards: str | Path | None = None, torch_target=None):
        """``side_shards``: a directory where each step's batch is also written as a teacher-forced
        ReDrafter shard (``teacher_forced.py``'s format: the target's final hidden state, its argmax
        and top-k), so a ReDrafter head can be trained on exactly the same tokens at no extra target cost.
        ``torch_target``: the target's forward in PyTorch (:mod:`.torch_target`), which gives the
        same taps and labels faster on a CPU; the head still trains in MLX."""
        if not pairs:
            raise UserError("no training pairs (prompt, answer) to read")
        self.target, self.config, self.out_dir = target, config, Path(out_dir)
        self.pairs = [(list(p), list(a)) for p, a in pairs]
        self.eval_answers = [(list(p), list(a)) for p, a in eval_answers]
        V = target.args.vocab_size
        Vd = config.draft_vocab if 0 < config.draft_vocab < V else V
        counts = np.bincount(np.concatenate([np.asarray(a, dtype=np.int64) for _, a in self.pairs]), minlength=V)[:V]
        draft_ids = np.sort(np.argsort(-counts, kind="stable")[:Vd])
        mx.random.seed(config.seed)
        self.head = Eagle3Head(head_config(target, Vd))
        self.head.target_layers = len(target.layers)
        self.head.set_draft_vocab(draft_ids, V)
        self.head.set_dtype(mx.float32)
        mx.eval(self.head.parameters())
        self._set_slots()
        self.groups = batches_by_length(self.pairs, config.batch_tokens, config.seed)
        self.optimizer = optim.AdamW(learning_rate=_schedule(config), weight_decay=config.weight_decay)
        self.step = 0
        self.history: list[dict] = []
        self.side_shards = Path(side_shards) if side_shards is not None else None
        self.torch_target = torch_target
        self._loss_and_grad = nn.value_and_grad(self.head, self._loss)

    def _set_slots(self):
        V = self.target.args.vocab_size
        self.slot = np.full(V, -1, dtype=np.int64)  # target id -> draft id
        ids = np.array(self.head.draft_ids())
        self.slot[ids] = np.arange(len(ids))
        self._slot_mx = mx.array(self.slot.astype(np.int32))

    # -- what the target gives a batch ---------------------------------------------------------
    def read(self, rows: Sequence[tuple[list[int], list[int]]]):
        """One target forward over the rows -> (e, g, soft slots, soft probs, weights, argmax), lazy.

        e, g: (B, W, D); soft slots/probs: (B, W, K) the target's top-k after each position, as
        draft ids (0 where outside, with probability 0) and renormalised probabilities;
        weights: (B, W) 1 where position p's prediction is part of an answer (p >= len(prompt) - 1,
        p < len(row) - 1; the last token's prediction has no token to pair... it is kept: it is the
        target's prediction after the answer, as valid as any); argmax (B, W) the target's token.
        """
        ids, lengths = pad_rows([p + a for p, a in rows])
        starts = np.array([len(p) - 1 for p, _ in rows])
        cols = np.arange(ids.shape[1])[None]
        weights = ((cols >= starts[:, None]) & (cols < lengths[:, None])).astype(np.float32)
        read = self._read_torch if self.torch_target is not None else self._read_mlx
        self._last_hidden, g, top, top_logits, argmax = read(ids, weights)
        nxt = np.concatenate([ids[:, 1:], np.zeros((len(rows), 1), np.int32)], axis=1)
        e = mx.stop_gradient(self.target.embed(mx.array(nxt)))
        probs = mx.softmax(top_logits, axis=-1)
        slots = self._slot_mx[top]
        probs = mx.where(slots >= 0, probs, 0.0)
        probs = probs / mx.maximum(probs.sum(-1, keepdims=True), 1e-9)
        return e, g, mx.maximum(slots, 0), probs, mx.array(weights), argmax

    def _read_mlx(self, ids: np.ndarray, weights: np.ndarray):
        """The target's forward: (hidden (B, W, D), fused-to-be taps g (B, W, 3D), top-k ids and
        logits (B, W, K), argmax (B, W)), lazy mx arrays."""
        logits, hidden, tapped = self.target(mx.array(ids), taps=self.head.taps)
        g = mx.stop_gradient(mx.concatenate([tapped[i] for i in self.head.taps], axis=-1))
        logits = logits.astype(mx.float32)
        top = mx.argpartition(-logits, self.config.top_k - 1, axis=-1)[..., : self.config.top_k]
        return hidden, g, top, mx.take_along_axis(logits, top, axis=-1), mx.argmax(logits, axis=-1)

    def _read_torch(self, ids: np.ndarray, weights: np.ndarray):
        """:meth:`_read_mlx` with the forward in PyTorch; the output layer only where ``weights`` > 0
        (elsewhere id 0, logit 0 and argmax 0: those positions carry no loss)."""
        import torch

        hidden, tapped = self.torch_target.forward(ids, taps=self.head.taps)
        B, W = ids.shape
        K = self.config.top_k
        where = np.flatnonzero(weights.reshape(-1) > 0)
        with torch.inference_mode():
            logits = self.torch_target.logits(hidden.reshape(B * W, -1)[torch.from_numpy(where)])
            top_logits, top = logits.topk(K, dim=-1)
            argmax_at = logits.argmax(-1).numpy()
        all_top, all_logits, argmax = np.zeros((B * W, K), np.int32), np.zeros((B * W, K), np.float32), np.zeros(B * W, np.int32)
        all_top[where], all_logits[where], argmax[where] = top.numpy(), top_logits.numpy(), argmax_at
        g = mx.array(torch.cat([tapped[i] for i in self.head.taps], dim=-1).numpy())
        return (mx.array(hidden.numpy()), g, mx.array(all_top.reshape(B, W, K)), mx.array(all_logits.reshape(B, W, K)),
                mx.array(argmax.reshape(B, W)))

    def _loss(self, e, g, slots, probs, weights):
        outs = self.head.unroll(e, self.head.fuse(g), self.config.unroll)
        total = 0.0
        W = e.shape[1]
        for i, logits in enumerate(outs):
            # step i at row t predicts the target's distribution at position t + 1 + i
            s, p, w = slots[:, 1 + i :], probs[:, 1 + i :], weights[:, 1 + i :]
            lp = logits[:, : W - 1 - i].astype(mx.float32)
            lp = lp - mx.logsumexp(lp, axis=-1, keepdims=True)
            ce = -(mx.take_along_axis(lp, s, axis=-1) * p).sum(-1)
            w = w * (p.sum(-1) > 0)
            total = total + self.config.decay**i * (ce * w).sum() / mx.maximum(w.sum(), 1)
        return total

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def save_checkpoint(self) -> None:
        ckpt = self.checkpoint_dir
        ckpt.mkdir(parents=True, exist_ok=True)
        save_eagle3_head(self.head, ckpt / "head", dtype=mx.float32)
        write_checkpoint(ckpt, self.optimizer, self.step, self.config, self.history)

    def try_resume(self) -> bool:
        ckpt = self.checkpoint_dir
        found = read_checkpoint(ckpt, EagleTrainConfig(), self.config)
        if found is None:
            return False
        saved, state = found
        head = load_eagle3_head(ckpt / "head", self.target, dtype=mx.float32)
        self.head.update(head.parameters())
        self.head.d2t, self.head.t2d, self.head._draft_ids = head.d2t, head.t2d, None
        self._set_slots()
        self.optimizer.state = tree_unflatten(list(state.items()))
        self.step, self.history = int(saved["step"]), saved.get("history", [])
        mx.eval(self.head.parameters(), self.optimizer.state)
        return True

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """Per-depth top-1 agreement and chain tau on the held-out answers (the target's own)."""
        if not self.eval_answers:
            return {}
        return eagle_depth_metrics(self.head, self.target, self.eval_answers, self.config.unroll, self.config.batch_tokens)

    # -- training -------------------------------------------------------------------------------
    def train(self, progress: Callable[[TrainEvent], None] | None = None, max_seconds: float | None = None) -> dict:
        """Train to ``config.steps`` (or until ``max_seconds`` have passed: the run then evaluates,
        checkpoints and returns early, so a time-boxed run still ends with a head)."""
        config = self.config
        self.head.train()
        state = [self.head.state, self.optimizer.state]
        last_eval = {}
        t0 = time.perf_counter()
        while self.step < config.steps:
            epoch, index = divmod(self.step, len(self.groups))
            order = np.random.default_rng([config.seed, epoch]).permutation(len(self.groups))
            rows = [self.pairs[j] for j in self.groups[order[index]]]
            e, g, slots, probs, weights, argmax = self.read(rows)
            mx.eval(e, g, slots, probs)
            if self.side_shards is not None and epoch == 0:  # each pair once: the same tokens the head saw
                self._write_side_shard(rows, argmax)
            loss, grads = self._loss_and_grad(e, g, slots, probs, weights)
            self.optimizer.update(self.head, grads)
            mx.eval(loss, state)
            self.step += 1
            event = TrainEvent(self.step, config.steps, float(loss), float(self.optimizer.learning_rate), time.perf_counter() - t0)
            out_of_time = max_seconds is not None and event.seconds >= max_seconds
            if self.step % config.eval_every == 0 or self.step == config.steps or out_of_time:
                event.eval = last_eval = self.evaluate()
                self.history.append({"step": self.step, "train_loss": round(event.loss, 4), **{k: round(v, 4) for k, v in last_eval.items()}})
            if self.step % config.checkpoint_every == 0 or self.step == config.steps or out_of_time:
                self.save_checkpoint()
            if progress:
                progress(event)
            if out_of_time:
                break
        return last_eval

    def _write_side_shard(self, rows, argmax) -> None:
        from .generate import save_shard

        path = self.side_shards / f"shard-{self.step:05d}.safetensors"
        if path.exists():
            return
        self.side_shards.mkdir(parents=True, exist_ok=True)
        hidden, argmax = np.array(self._last_hidden.astype(mx.float16)), np.array(argmax)
        out = []
        for b, (p, a) in enumerate(rows):
            lo, hi = len(p) - 1, len(p) + len(a)
            seq = np.array(p + a, dtype=np.int32)
            out.append((seq[lo:hi], hidden[b, lo:hi], None, None, argmax[b, lo:hi].astype(np.int32)))
        save_shard(path, out)

    def export(self, path: str | Path, training: dict | None = None) -> Path:
        self.head.config["mlx_specdec"]["training"] = training or {}
        return save_eagle3_head(self.head, path, dtype=mx.float16)


def depth_agreement(preds: np.ndarray, argmax: np.ndarray, weights: np.ndarray, starts, ends):
    """Teacher-forced chain agreement over answer positions.

    preds (B, W, L): the draft's token for depth i + 1 at row t (it predicts position t + 2 + i,
    i.e. the target's argmax at t + 1 + i); argmax (B, W) the target's token after each position.
    A drafted chain starts at row t for t in [start, end - 2): its root is token t + 1.
    Returns ((correct per depth (L,), sum of leading runs), chains counted).
    """
    B, W, L = preds.shape
    correct, runs, count = np.zeros(L), 0.0, 0
    for b in range(B):
        for t in range(starts[b], ends[b] - 2):
            depth = min(L, ends[b] - 2 - t)
            ok = np.array([preds[b, t, i] == argmax[b, t + 1 + i] for i in range(depth)] + [False] * (L - depth))
            correct += ok
            runs += int(np.cumprod(ok).sum())
            count += 1
    return (correct, runs), count


def eagle_depth_metrics(head, target, answers: Sequence[tuple[list[int], list[int]]], depth: int = 7, batch_tokens: int = 2048) -> dict:
    """Teacher-forced chain agreement of an EAGLE-3 head on (prompt, the target's own answer) pairs:
    ``top1_d{i}`` per depth and ``chain_tau`` (see :func:`depth_agreement`)."""
    correct, runs, count = np.zeros(depth), 0.0, 0
    for group in batches_by_length(answers, batch_tokens, 0):
        rows = [answers[j] for j in group]
        ids, _ = pad_rows([p + a for p, a in rows])
        logits, _, tapped = target(mx.array(ids), taps=head.taps)
        g = head.fuse(mx.concatenate([tapped[i] for i in head.taps], axis=-1))
        nxt = np.concatenate([ids[:, 1:], np.zeros((len(rows), 1), np.int32)], axis=1)
        outs = head.unroll(target.embed(mx.array(nxt)), g, depth)
        preds = mx.stack([head.draft_ids()[mx.argmax(o, axis=-1)] for o in outs], axis=-1)  # (B, W, depth)
        argmax = mx.argmax(logits, axis=-1)
        mx.eval(preds, argmax)
        (c, r), n = depth_agreement(np.array(preds), np.array(argmax), None, [len(p) - 1 for p, _ in rows], [len(p) + len(a) for p, a in rows])
        correct += c
        runs += r
        count += n
    return {"chain_tau": 1 + runs / max(count, 1), **{f"top1_d{i + 1}": correct[i] / max(count, 1) for i in range(depth)}, "positions": count}


def redrafter_depth_metrics(head, target, answers: Sequence[tuple[list[int], list[int]]], depth: int = 7, batch_tokens: int = 2048) -> dict:
    """The same held-out measure for a ReDrafter head: the target's final hidden state at t and the
    tokens t + 1 .. t + depth as the head's inputs (teacher-forced)."""
    correct, runs, count = np.zeros(depth), 0.0, 0
    for group in batches_by_length(answers, batch_tokens, 0):
        rows = [answers[j] for j in group]
        ids, lengths = pad_rows([p + a for p, a in rows])
        logits, hidden = target(mx.array(ids))
        argmax = np.array(mx.argmax(logits, axis=-1))
        B, W = ids.shape
        pad = np.concatenate([ids, np.zeros((B, depth + 1), np.int32)], axis=1)
        inputs = np.stack([pad[:, 1 + i : 1 + i + W] for i in range(depth)], axis=-1)  # (B, W, depth)
        h = hidden.reshape(B * W, -1)
        out = head.unroll(target, h, mx.array(inputs.reshape(B * W, depth)))
        preds = np.array(head.vocab_ids[mx.argmax(out, axis=-1)]).reshape(B, W, depth)
        (c, r), n = depth_agreement(preds, argmax, None, [len(p) - 1 for p, _ in rows], [len(p) + len(a) for p, a in rows])
        correct += c
        runs += r
        count += n
    return {"chain_tau": 1 + runs / max(count, 1), **{f"top1_d{i + 1}": correct[i] / max(count, 1) for i in range(depth)}, "positions": count}
