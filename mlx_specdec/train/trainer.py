"""Train a ReDrafter head on the target's own generations (knowledge distillation).

A training example is a position i of a generated sample (see ``generate.py``): the target's
hidden state ``h_i``, the root ``x_{i+1}`` (what the target emitted from ``h_i``) and the next L
tokens. The head is unrolled over L steps with teacher forcing::

    inputs  x_{i+1} ... x_{i+L}          (the RNN sees the previous draft token)
    targets x_{i+2} ... x_{i+L+1}        loss = mean cross-entropy (+ kl_weight * soft CE to the
                                          target's top-k probabilities, when the shards have them)

Targets beyond the end of a sample are masked out. Targets outside the head's vocabulary subset
join that batch's softmax (their rows of the target's frozen output layer are appended), so the
head also learns the rarer tokens that drafting adds from the context (``rare_targets``; without
it they are masked out).
``feature_noise`` perturbs the target's hidden state during training (EAGLE's regulariser). The
shipped head's data does not need it: the head agrees with the target on 68% of training positions
and 42% of held-out ones, yet noise 0.3 lowered held-out agreement (36.9% vs 38.9% at step 750 of a
1,000-step run on the same 373k tokens); more data is what raises it.
AdamW with linear warm-up then cosine decay. Every ``eval_every`` steps the head is evaluated on
held-out samples: ``chain_tau`` = 1 + expected number of leading draft steps whose argmax equals
the target's token (what a greedy chain draft of length L would get accepted).

Checkpoints (``checkpoint/``: head, optimizer state, step) make the run resumable; the batch of a
step depends only on (seed, step), so a resumed run follows the same path.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np
from mlx.utils import tree_flatten, tree_unflatten

from ..drafters.redrafter_head import HeadConfig, ReDrafterHead, lm_head_rows, load_head, save_head
from ..errors import UserError
from .generate import load_shard


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 256
    length: int = 4  # draft steps unrolled
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 50
    num_blocks: int = 2
    vocab_subset: int = 8192  # 0 = whole vocabulary
    kl_weight: float = 0.0
    rare_targets: bool = True  # targets outside the subset join the batch's softmax
    feature_noise: float = 0.0  # training only: h += N(0, (feature_noise * RMS(h))^2)
    eval_every: int = 250
    eval_fraction: float = 0.05
    eval_positions: int = 4000
    checkpoint_every: int = 250
    seed: int = 0


@dataclass
class TrainEvent:
    step: int
    steps: int
    loss: float
    lr: float
    seconds: float
    eval: dict | None = None  # {"loss", "chain_tau", "step1_top1", ...} at evaluation steps


class DistillData:
    """All shards of one or more data directories in memory: tokens (T,), hidden (T, D) float16,
    labels (T,) (the target's next token), sample ends.

    Generated shards (``generate.py``) hold the target's own answers, so their label is the next
    token; teacher-forced shards (``teacher_forced.py``) store it. Held-out samples (5%, chosen by
    a hash of where they end) are never trained on; acceptance is evaluated on the held-out
    generated samples only, when there are any (they are what drafting meets).
    """

    def __init__(self, data_dir: str | Path | list, eval_fraction: float = 0.05):
        dirs = [Path(d) for d in (data_dir if isinstance(data_dir, (list, tuple)) else [data_dir])]
        shards = [s for d in dirs if d.is_dir() for s in sorted(d.glob("shard-*.safetensors"))]
        if not shards:
            raise UserError(f"no training data in {', '.join(map(str, dirs))} (expected shard-*.safetensors from the generation step)")
        tokens, hidden, ends, labels, generated, topk_ids, topk_probs = [], [], [], [], [], [], []
        offset = 0
        for shard in shards:
            data = load_shard(shard)
            if not {"tokens", "hidden", "starts"} <= data.keys():
                raise UserError(f"{shard} is not a distillation shard (missing tokens/hidden/starts)")
            starts = data["starts"].astype(np.int64)
            tokens.append(data["tokens"].astype(np.int64))
            hidden.append(data["hidden"])
            ends.append(np.repeat(starts[1:], np.diff(starts)) + offset)
            own = "labels" not in data  # generated: the next token is the target's own
            labels.append(np.append(tokens[-1][1:], 0) if own else data["labels"].astype(np.int64))
            generated.append(np.full(len(tokens[-1]), own))
            if "topk_ids" in data:
                topk_ids.append(data["topk_ids"])
                topk_probs.append(data["topk_probs"])
            offset += len(data["tokens"])
        self.tokens, self.hidden, self.end = np.concatenate(tokens), np.concatenate(hidden), np.concatenate(ends)
        self.labels = np.concatenate(labels)  # (T,) the target's next token after each token
        self.topk_ids = np.concatenate(topk_ids) if len(topk_ids) == len(shards) else None
        self.topk_probs = np.concatenate(topk_probs) if self.topk_ids is not None else None
        usable = np.arange(len(self.tokens)) + 1 < self.end  # a root token follows
        held = (self.end * 2654435761 % 1000) < eval_fraction * 1000  # held-out samples, by hash
        if not (held & usable).any() and len(np.unique(self.end)) > 1:
            held = self.end == self.end.max()  # a data set too small for the hash: its last sample is held out
        self.generated = generated = np.concatenate(generated)  # (T,) True where the target wrote the text
        scored = generated if generated.any() else np.ones_like(generated)  # acceptance is measured on the target's own answers
        self.train_positions = np.flatnonzero(usable & ~held)
        self.eval_positions = np.flatnonzero(usable & held & scored)
        if len(self.train_positions) == 0:
            raise UserError(f"{', '.join(map(str, dirs))} holds no usable training positions")

    @property
    def hidden_size(self) -> int:
        return self.hidden.shape[1]

    def token_counts(self, vocab_size: int) -> np.ndarray:
        return np.bincount(self.labels[self.train_positions], minlength=vocab_size)[:vocab_size]

    def batch(self, positions: np.ndarray, length: int):
        """(h (B, D) float32, inputs (B, L), targets (B, L), valid (B, L), topk or None)."""
        steps = positions[:, None] + 1 + np.arange(length)  # input token indices
        valid = steps + 1 < self.end[positions][:, None]
        inputs = self.tokens[np.minimum(steps, len(self.tokens) - 1)]
        targets = np.where(valid, self.labels[np.minimum(steps, len(self.tokens) - 1)], 0)
        topk = None
        if self.topk_ids is not None:
            at = np.minimum(steps, len(self.tokens) - 1)  # distribution after input token = next target
            topk = (self.topk_ids[at].astype(np.int64), self.topk_probs[at].astype(np.float32))
        return self.hidden[positions].astype(np.float32), inputs, targets, valid, topk


def _schedule(config: TrainConfig):
    warmup = max(1, min(config.warmup, config.steps - 1))
    return optim.join_schedules(
        [optim.linear_schedule(config.lr * 0.01, config.lr, warmup), optim.cosine_decay(config.lr, max(1, config.steps - warmup), config.lr * 0.05)],
        [warmup],
    )



def write_checkpoint(ckpt: Path, optimizer, step: int, config, history: list) -> None:
    """The optimizer state and ``trainer.json`` (step, config, history) that :func:`read_checkpoint` reads."""
    mx.save_safetensors(str(ckpt / "optimizer.safetensors"), dict(tree_flatten(optimizer.state)))
    (ckpt / "trainer.json").write_text(json.dumps({"step": step, "config": asdict(config), "history": history}, indent=1))


def read_checkpoint(ckpt: Path, defaults, config):
    """``(trainer.json as a dict, optimizer state)`` of the checkpoint in ``ckpt``, or None when
    there is none; UserError when it is damaged or was made with other options than ``config``
    (a dataclass; ``defaults`` fills the keys an older checkpoint lacks)."""
    if not (ckpt / "trainer.json").is_file():
        return None
    try:
        saved = json.loads((ckpt / "trainer.json").read_text())
        state = mx.load(str(ckpt / "optimizer.safetensors"))
    except Exception as e:
        raise UserError(f"checkpoint in {ckpt} is damaged ({str(e).splitlines()[0]}); delete it to start over") from None
    if {**asdict(defaults), **saved.get("config", {})} != asdict(config):
        raise UserError(f"checkpoint in {ckpt} was made with other training options; use another --out or delete it")
    return saved, state

class Trainer:
    def __init__(self, target, data: DistillData, out_dir: str | Path, config: TrainConfig = TrainConfig(), head_config: dict | None = None):
        if data.hidden_size != target.args.hidden_size:
            raise UserError(f"the data's hidden size {data.hidden_size} does not match the target's {target.args.hidden_size}: it was generated with another model")
        self.target, self.data, self.config = target, data, config
        self.out_dir = Path(out_dir)
        V = target.args.vocab_size
        subset = config.vocab_subset if 0 < config.vocab_subset < V else 0
        mx.random.seed(config.seed)  # the head's initialisation
        self.head = ReDrafterHead(HeadConfig.for_target(target, num_blocks=config.num_blocks, vocab_subset=subset, **(head_config or {})))
        if subset:
            counts = data.token_counts(V)
            ids = np.sort(np.argsort(-counts, kind="stable")[:subset])
            self.head.set_vocab_ids(ids)
        self.head.set_dtype(mx.float32)
        mx.eval(self.head.parameters())
        self.slot = np.full(V, -1, dtype=np.int64)  # vocab id -> output index of the head
        self.slot[np.array(self.head.vocab_ids)] = np.arange(self.head.vocab_ids.shape[0])
        self.optimizer = optim.AdamW(learning_rate=_schedule(config), weight_decay=config.weight_decay)
        self.step = 0
        self.history: list[dict] = []  # {"step", "train_loss", **held-out metrics} at every evaluation
        self._loss_and_grad = nn.value_and_grad(self.head, self._loss)

    # -- loss -----------------------------------------------------------------------------------
    def _loss(self, h, inputs, targets, weights, soft_ids, soft_probs, rows=None):
        logits = self.head.unroll(self.target, h, inputs, rows).astype(mx.float32)  # (B, L, V')
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        nll = -mx.take_along_axis(logprobs, targets[..., None], axis=-1)[..., 0]
        loss = (nll * weights).sum() / mx.maximum(weights.sum(), 1)
        if soft_ids is not None:
            soft = -(mx.take_along_axis(logprobs, soft_ids, axis=-1) * soft_probs).sum(-1)
            loss = loss + self.config.kl_weight * (soft * (weights > 0)).sum() / mx.maximum((weights > 0).sum(), 1)
        return loss

    def _arrays(self, positions, rare_targets: bool = False):
        h, inputs, targets, valid, topk = self.data.batch(positions, self.config.length)
        slots = self.slot[targets]
        rows = None
        if rare_targets:
            rare = np.unique(targets[valid & (slots < 0)])
            if len(rare):
                outside = valid & (slots < 0)
                slots = np.where(outside, len(self.head.vocab_ids) + np.searchsorted(rare, targets), slots)
                rows = mx.concatenate([self.head.output_rows(self.target), mx.stop_gradient(lm_head_rows(self.target, mx.array(rare)))])
        weights = (valid & (slots >= 0)).astype(np.float32)
        soft_ids = soft_probs = None
        if topk is not None and self.config.kl_weight > 0:
            ids, probs = topk
            s = self.slot[ids]
            probs = np.where(s >= 0, probs, 0)
            probs /= np.maximum(probs.sum(-1, keepdims=True), 1e-9)
            soft_ids, soft_probs = mx.array(np.maximum(s, 0)), mx.array(probs)
        return mx.array(h), mx.array(inputs), mx.array(np.maximum(slots, 0)), mx.array(weights), soft_ids, soft_probs, rows

    # -- checkpoints ----------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def save_checkpoint(self) -> None:
        ckpt = self.checkpoint_dir
        ckpt.mkdir(parents=True, exist_ok=True)
        save_head(self.head, ckpt / "head", dtype=mx.float32)
        write_checkpoint(ckpt, self.optimizer, self.step, self.config, self.history)

    def try_resume(self) -> bool:
        """Continue from ``checkpoint/`` when it exists (same config); True when resumed."""
        ckpt = self.checkpoint_dir
        found = read_checkpoint(ckpt, TrainConfig(), self.config)
        if found is None:
            return False
        saved, state = found
        head = load_head(ckpt / "head", self.target, dtype=mx.float32)
        self.head.update(head.parameters())
        self.head.set_vocab_ids(np.array(head.vocab_ids))
        self.optimizer.state = tree_unflatten(list(state.items()))
        self.step = int(saved["step"])
        self.history = saved.get("history", [])
        mx.eval(self.head.parameters(), self.optimizer.state)
        return True

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self) -> dict:
        positions = self.data.eval_positions
        if len(positions) == 0:
            return {}
        rng = np.random.default_rng(12345)
        positions = np.sort(rng.choice(positions, min(len(positions), self.config.eval_positions), replace=False))
        total_loss, accepted, top1, count = 0.0, 0.0, 0.0, 0
        for start in range(0, len(positions), 512):
            chunk = positions[start : start + 512]
            h, inputs, targets, weights, _, _, _ = self._arrays(chunk)
            logits = self.head.unroll(self.target, h, inputs)
            loss = self._loss(h, inputs, targets, weights, None, None)
            correct = (mx.argmax(logits, axis=-1) == targets) & (weights > 0)
            run = mx.cumprod(correct.astype(mx.float32), axis=1).sum(axis=1)
            mx.eval(loss, run, correct)
            total_loss += float(loss) * len(chunk)
            accepted += float(run.sum())
            top1 += float(correct[:, 0].sum())
            count += len(chunk)
        return {"loss": total_loss / count, "chain_tau": 1 + accepted / count, "step1_top1": top1 / count, "positions": count}

    # -- training -------------------------------------------------------------------------------
    def train(self, progress: Callable[[TrainEvent], None] | None = None) -> dict:
        config = self.config
        self.head.train()
        state = [self.head.state, self.optimizer.state]
        last_eval = {}
        t0 = time.perf_counter()
        while self.step < config.steps:
            rng = np.random.default_rng([config.seed, self.step])
            positions = rng.choice(self.data.train_positions, config.batch_size)
            arrays = list(self._arrays(positions, config.rare_targets))
            if config.feature_noise > 0:
                h = arrays[0]
                rms = mx.sqrt(mx.mean(h * h, axis=-1, keepdims=True))
                arrays[0] = h + config.feature_noise * rms * mx.random.normal(h.shape, key=mx.random.key(config.seed * 1_000_003 + self.step))
            loss, grads = self._loss_and_grad(*arrays)
            self.optimizer.update(self.head, grads)
            mx.eval(loss, state)
            self.step += 1
            event = TrainEvent(self.step, config.steps, float(loss), float(self.optimizer.learning_rate), time.perf_counter() - t0)
            if self.step % config.eval_every == 0 or self.step == config.steps:
                event.eval = last_eval = self.evaluate()
                self.history.append({"step": self.step, "train_loss": round(event.loss, 4), **{k: round(v, 4) for k, v in last_eval.items()}})
            if self.step % config.checkpoint_every == 0 or self.step == config.steps:
                self.save_checkpoint()
            if progress:
                progress(event)
        return last_eval

    def export(self, path: str | Path, training: dict | None = None) -> Path:
        """Write the trained head (float16) to ``path`` (config.json + model.safetensors)."""
        self.head.config.training = training or {}
        return save_head(self.head, path, dtype=mx.float16)
