"""How fast an EAGLE-3 head's first step learns, by learning rate and start (the probe behind
``EagleTrainConfig.lr``).

The target (PyTorch reader) reads ``--batches`` + 1 batches of ShareGPT answers once; a one-step
head (``unroll = 1``) then trains on the first ``--batches``, cycled, and the last batch scores it:
held-out soft cross-entropy and top-1 agreement with the target's next token.

    python scripts/eagle_init_probe.py --start random --steps 40 --lr 5e-4 --batches 8
    python scripts/eagle_init_probe.py --start random --steps 60 --lr 2e-3 --batches 12

Starts: ``random`` (the trainer's: MLX's default initialisation), ``scaled`` (each tap channel
divided by its RMS over the first batch: the residual stream carries a few huge channels),
``tapnorm`` (each tap RMS-normalised before ``fc``), ``target`` (``lm_head`` = the target's rows
of the draft vocabulary, ``norm`` = its final norm, ``fc`` passing the high tap through).
"""

from __future__ import annotations

import argparse
import time

from mlx_specdec.platform_setup import ensure_fast_blas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--start", choices=("target", "random", "scaled", "tapnorm"), default="random")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    ensure_fast_blas()

    from mlx_specdec.train.torch_target import reader_for  # PyTorch before the tokenizer's imports

    import mlx.core as mx
    import mlx.nn as nn

    from mlx_specdec.cli.common import load_target
    from mlx_specdec.cli.train_eagle import load_pairs
    from mlx_specdec.train.eagle_trainer import EagleTrainConfig, EagleTrainer
    from mlx_specdec.train.teacher_forced import encode_pairs

    loaded = load_target(args.model, "float32")
    pairs = encode_pairs(loaded.tokenizer, load_pairs("sharegpt", 400), 256, 256)
    config = EagleTrainConfig(steps=args.steps, batch_tokens=2048, unroll=1, lr=args.lr, draft_vocab=4096, warmup=5)
    trainer = EagleTrainer(loaded.model, pairs, "/tmp/eagle-init-probe", config, torch_target=reader_for("torch", loaded))
    head = trainer.head
    if args.start == "target":
        from mlx_specdec.drafters.redrafter_head import lm_head_rows

        D = head.fc.weight.shape[0]
        head.fc.weight = mx.concatenate([mx.zeros((D, 2 * D)), mx.eye(D)], axis=1)
        head.lm_head.weight = lm_head_rows(loaded.model, head.draft_ids()).astype(mx.float32)
        head.norm.weight = loaded.model.backbone.norm.weight.astype(mx.float32)
    t0 = time.perf_counter()
    batches = []
    for index in range(args.batches + 1):
        batch = trainer.read([trainer.pairs[j] for j in trainer.groups[index]])
        mx.eval(*batch)
        batches.append(batch)
    held = batches.pop()
    print(f"read {args.batches + 1} batches in {time.perf_counter() - t0:.0f} s", flush=True)
    D = head.fc.weight.shape[0]
    if args.start == "scaled":
        g, w = batches[0][1], batches[0][4]
        scale = 1.0 / mx.maximum(mx.sqrt((g * g * w[..., None]).sum((0, 1)) / w.sum()), 1e-3)
        head.fuse = lambda taps: head.fc(taps * scale)
    elif args.start == "tapnorm":
        def fuse(taps):
            parts = [taps[..., i * D : (i + 1) * D] for i in range(3)]
            return head.fc(mx.concatenate([p * mx.rsqrt((p * p).mean(-1, keepdims=True) + 1e-6) for p in parts], -1))

        head.fuse = fuse
    trainer._loss_and_grad = nn.value_and_grad(head, trainer._loss)

    def evaluate():
        e, g, slots, probs, w, argmax = held
        out = head.unroll(e, head.fuse(g), 1)[0]
        pred = head.draft_ids()[mx.argmax(out, -1)]
        top1 = ((pred[:, :-1] == argmax[:, 1:]) * w[:, 1:]).sum() / w[:, 1:].sum()
        return float(trainer._loss(e, g, slots, probs, w)), float(top1)

    for step in range(args.steps):
        e, g, slots, probs, w, _ = batches[step % len(batches)]
        loss, grads = trainer._loss_and_grad(e, g, slots, probs, w)
        trainer.optimizer.update(head, grads)
        mx.eval(loss, head.parameters(), trainer.optimizer.state)
        if step == 0 or (step + 1) % 10 == 0:
            held_loss, top1 = evaluate()
            print(f"{args.start} step {step + 1}: train loss {float(loss):.3f}, held-out loss {held_loss:.3f}, top-1 {top1:.3f}", flush=True)


if __name__ == "__main__":
    main()
