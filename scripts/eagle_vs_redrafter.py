"""EAGLE-3 vs ReDrafter on equal data: held-out top-1 agreement per depth and chain tau.

Takes the work directory of a ``train-drafter --arch eagle3`` run: its side shards
(``redrafter-data/``: the very tokens the EAGLE-3 head was trained on, with the target's final
hidden states and labels) train a ReDrafter head, and both heads (plus, for scale, the shipped
ReDrafter head trained on far more tokens) are scored on the same held-out answers
(``eval_answers.json``: the target's own greedy answers to held-out prompts).

    python scripts/eagle_vs_redrafter.py --eagle HEAD_DIR --work HEAD_DIR/train --out docs/eagle_vs_redrafter.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mlx.core as mx
import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eagle", required=True, help="the EAGLE-3 head directory")
    parser.add_argument("--work", required=True, help="its training work directory (redrafter-data/, eval_answers.json)")
    parser.add_argument("--redrafter-steps", type=int, default=None, help="default: one epoch of the side shards (each token once, as the EAGLE-3 head saw them)")
    parser.add_argument("--depth", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    from mlx_specdec.platform_setup import ensure_fast_blas

    ensure_fast_blas()

    from mlx_specdec.drafters.eagle3_head import load_eagle3_head
    from mlx_specdec.drafters.redrafter import find_shipped_head
    from mlx_specdec.drafters.redrafter_head import load_head
    from mlx_specdec.loader import load
    from mlx_specdec.store import default_model_dir
    from mlx_specdec.train.eagle_trainer import eagle_depth_metrics, redrafter_depth_metrics
    from mlx_specdec.train.trainer import DistillData, Trainer, TrainConfig

    loaded = load(default_model_dir(), "float32")
    target = loaded.model
    work = Path(args.work)
    answers = [tuple(x) for x in json.loads((work / "eval_answers.json").read_text())]
    data = DistillData(work / "redrafter-data", eval_fraction=0.0)
    results = {"machine": "MLX CPU, float32, OpenBLAS", "held_out_answers": len(answers), "equal_data_tokens": int(len(data.tokens))}
    eagle_head = load_eagle3_head(args.eagle, target, dtype=mx.float32)
    results["eagle3"] = eagle_depth_metrics(eagle_head, target, answers, args.depth)
    results["eagle3"]["training"] = json.loads((Path(args.eagle) / "config.json").read_text())["mlx_specdec"]["training"]
    t0 = time.perf_counter()
    steps = args.redrafter_steps or max(1, len(data.tokens) // TrainConfig.batch_size)
    trainer = Trainer(target, data, work / "redrafter-run", TrainConfig(steps=steps, eval_every=steps, length=4))
    trainer.train()
    results["redrafter_equal_data"] = {**redrafter_depth_metrics(trainer.head, target, answers, args.depth), "training_s": round(time.perf_counter() - t0, 1),
                                       "steps": steps}
    shipped = find_shipped_head(target)
    if shipped is not None:
        head = load_head(shipped, target, dtype=mx.float32)
        results["redrafter_shipped"] = {**redrafter_depth_metrics(head, target, answers, args.depth), "tokens": head.config.training.get("tokens")}
    for name in ("eagle3", "redrafter_equal_data", "redrafter_shipped"):
        if name in results:
            r = results[name]
            print(f"{name:22s} chain tau {r['chain_tau']:.3f}  top-1 by depth " + " ".join(f"{r[f'top1_d{i + 1}']:.3f}" for i in range(args.depth)))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
