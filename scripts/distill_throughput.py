"""Distillation throughput: stored tokens per second of the teacher-forced reader, MLX vs PyTorch.

Reads the same ShareGPT (prompt, answer) pairs with each reader into a temporary directory (the
format ``train-drafter --read-answers`` stores: hidden state, argmax, top-k) and reports stored
tokens/s (the answer tokens, what a head trains on) and read tokens/s (prompt tokens too). With
both readers it also compares what they stored: labels equal, top-k sets equal, hidden-state error.

    python scripts/distill_throughput.py --pairs 96 --top-k 8 --readers mlx,torch
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mlx_specdec.platform_setup import ensure_fast_blas

ensure_fast_blas()

from mlx_specdec.train.torch_target import torch_available  # noqa: E402

torch_available()  # PyTorch with its own BLAS, before the tokenizer's libraries import it

import numpy as np  # noqa: E402

from mlx_specdec.cli.common import load_target  # noqa: E402
from mlx_specdec.train.data import sharegpt_pairs  # noqa: E402
from mlx_specdec.train.generate import load_shard  # noqa: E402
from mlx_specdec.train.teacher_forced import encode_pairs, read_dataset  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--pairs", type=int, default=96)
    ap.add_argument("--top-k", type=int, default=8)
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--max-prompt-tokens", type=int, default=256)
    ap.add_argument("--max-answer-tokens", type=int, default=320)
    ap.add_argument("--readers", default="mlx,torch")
    ap.add_argument("--out", default=None, help="JSON file for the figures")
    args = ap.parse_args()

    loaded = load_target(args.model, "float32")
    pairs = encode_pairs(loaded.tokenizer, sharegpt_pairs(limit=args.pairs), args.max_prompt_tokens, args.max_answer_tokens)
    read_tokens = sum(len(p) + len(a) for p, a in pairs)
    stored_tokens = sum(len(a) + 1 for _, a in pairs)
    results, shards = {}, {}
    for reader in args.readers.split(","):
        torch_target = None
        if reader == "torch":
            from mlx_specdec.train.torch_target import TorchTarget

            torch_target = TorchTarget(loaded.model)
        out = Path(tempfile.mkdtemp(prefix=f"distill-{reader}-"))
        start = time.perf_counter()
        read_dataset(loaded.model, pairs, out, shard_samples=len(pairs), batch_tokens=args.batch_tokens, top_k=args.top_k,
                     torch_target=torch_target)
        seconds = time.perf_counter() - start
        results[reader] = dict(seconds=round(seconds, 2), stored_tokens_per_s=round(stored_tokens / seconds, 1),
                               read_tokens_per_s=round(read_tokens / seconds, 1))
        shards[reader] = load_shard(out / "shard-00000.safetensors")
        print(reader, results[reader], flush=True)
    if "mlx" in shards and "torch" in shards:
        a, b = shards["mlx"], shards["torch"]
        assert np.array_equal(a["tokens"], b["tokens"])
        same_label = float(np.mean(a["labels"] == b["labels"]))
        hidden_err = float(np.max(np.abs(a["hidden"].astype(np.float32) - b["hidden"].astype(np.float32))))
        agree = {"labels_equal": round(same_label, 5), "hidden_max_abs_diff": round(hidden_err, 4)}
        if args.top_k:
            same_sets = np.mean([set(x) == set(y) for x, y in zip(a["topk_ids"], b["topk_ids"])])
            agree["topk_sets_equal"] = round(float(same_sets), 5)
        results["agreement"] = agree
        results["speedup"] = round(results["mlx"]["seconds"] / results["torch"]["seconds"], 2)
        print("agreement", agree, "torch / mlx speed", results["speedup"])
    results.update(pairs=len(pairs), read_tokens=read_tokens, stored_tokens=stored_tokens, top_k=args.top_k, batch_tokens=args.batch_tokens)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
