"""Choose prompt-lookup defaults by measurement: each configuration against ar, same prompts, same run.

    python scripts/pld_sweep.py --limit 13 --max-tokens 64 \
        --configs 3:1:8:2,3:2:8:2,4:2:6:1,3:2:4:1,4:2:10:3

A configuration is max_ngram:min_ngram:num_draft:num_matches. Prints, per configuration, the
median over prompts of tau and of the tokens/s ratio over ar (greedy, outputs checked equal), and
a machine-independent estimate: tau divided by the mean cost of the verified trees relative to one
token, from the forward-cost curve in ``--costs`` (default: SmolLM2-135M fp32 with OpenBLAS on a
2-core x86-64, n:ms = 1:60, 4:83, 8:92, 16:124, 32:195, 64:330, as measured by
``scripts/forward_cost.py``).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from mlx_specdec.prompts import default_prompt_file, read_prompts, select
from mlx_specdec.drafters import make_drafter
from mlx_specdec.generate import Session
from mlx_specdec.loader import load
from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas
from mlx_specdec.stats import RunStats
from mlx_specdec.store import resolve_model


def run(loaded, ids, drafter, max_tokens):
    stats, tokens = RunStats(), []
    for step in Session(loaded.model).generate(ids, drafter, max_tokens=max_tokens, eos_ids=loaded.tokenizer.eos_ids):
        stats.add(step)
        tokens += step.tokens
    return tokens, stats


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=13)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--configs", default="3:1:8:2,3:2:8:2,4:2:6:1,3:2:4:1")
    parser.add_argument("--costs", default="1:60,4:83,8:92,16:124,32:195,64:330")
    args = parser.parse_args()
    ensure_fast_blas()
    loaded = load(resolve_model(args.model), "float32")
    configs = [tuple(map(int, c.split(":"))) for c in args.configs.split(",")]
    prompts = select(read_prompts([default_prompt_file()]), limit=args.limit)
    ratios = {c: [] for c in configs}
    taus = {c: [] for c in configs}
    estimates = {c: [] for c in configs}
    sizes, ms = zip(*[map(float, p.split(":")) for p in args.costs.split(",")])
    relative_cost = lambda n: float(np.interp(n, sizes, ms)) / ms[0]
    print(f"blas={blas_in_use()} dtype=float32 prompts={len(prompts)} max_tokens={args.max_tokens}", flush=True)
    for prompt in prompts:
        ids = loaded.tokenizer.chat_ids([{"role": "user", "content": prompt.turns[0]}])
        reference, ar = run(loaded, ids, make_drafter("ar"), args.max_tokens)
        for c in configs:
            drafter = make_drafter("pld", max_ngram=c[0], min_ngram=c[1], num_draft=c[2], num_matches=c[3])
            tokens, stats = run(loaded, ids, drafter, args.max_tokens)
            assert tokens == reference, (prompt.question_id, c)
            ratios[c].append(stats.tokens_per_s / ar.tokens_per_s)
            taus[c].append(stats.tau)
            decode_forwards = stats.target_forwards - 1
            mean_cost = relative_cost(stats.forward_tokens / decode_forwards) if decode_forwards else 1.0
            estimates[c].append(stats.tau / mean_cost)
        print(prompt.category, {":".join(map(str, c)): round(ratios[c][-1], 2) for c in configs}, flush=True)
    for c in configs:
        print(f"config {':'.join(map(str, c))}  median speedup {statistics.median(ratios[c]):.2f}  "
              f"mean speedup {statistics.mean(ratios[c]):.2f}  median tau {statistics.median(taus[c]):.2f}  "
              f"mean tau {statistics.mean(taus[c]):.2f}  cost-model speedup {statistics.mean(estimates[c]):.2f}")


if __name__ == "__main__":
    main()
