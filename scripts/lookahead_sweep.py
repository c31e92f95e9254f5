"""Lookahead W/N/G sweep against autoregressive decoding, in one process, on real prompts.

    python scripts/lookahead_sweep.py [MODEL_DIR] --per-category 3 --max-tokens 128 \\
        --configs 0:4:4,2:4:4,8:4:4,auto:4:4

Each config is ``W:N:G`` (W may be ``auto``); ``ar`` always runs and ``--with-pld`` adds prompt
lookup. For every prompt the methods run back to back (greedy, float32 by default, the chat
template applied), each output is checked against ``ar`` token for token, and tokens/s is taken
as a ratio to ``ar`` on the same prompt. The table shows, per category and method, the median over
prompts of that ratio, the median tau (tokens per target forward) and the median tokens fed per
forward. On a shared machine tokens/s is noisy, so the script also times one target forward over
n tokens (the fastest of several tries, interleaved) and reports a modelled speedup from
``steps x t(tokens fed per step) + drafting and bookkeeping time``, which load spikes barely move. Prompts: HumanEval (coding) from ``../shared/data/humaneval/question.jsonl``, and the
Spec-Bench categories named with ``--categories`` from ``../shared/data/specbench/dev.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from mlx_specdec.platform_setup import ensure_fast_blas

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def prompts(categories: list[str], first: int, per_category: int) -> list[tuple[str, int, str]]:
    """(category, index within the category, user message) for each prompt."""
    out = []
    for category in categories:
        if category == "humaneval":
            rows = [json.loads(line) for line in (DATA / "humaneval" / "question.jsonl").read_text().splitlines() if line.strip()]
        else:
            rows = [json.loads(line) for line in (DATA / "specbench" / "dev.jsonl").read_text().splitlines() if line.strip()]
            rows = [r for r in rows if r["category"] == category]
        out += [(category, first + i, r["turns"][0]) for i, r in enumerate(rows[first : first + per_category])]
    return out


def methods(configs: str, with_pld: bool) -> dict:
    out = {"ar": ("ar", {})}
    if with_pld:
        out["pld"] = ("pld", {})
    for spec in filter(None, configs.split(",")):
        w, n, g = spec.split(":")
        out[f"la {w}:{n}:{g}"] = ("lookahead", dict(window=w if w == "auto" else int(w), ngram=int(n), guesses=int(g)))
    return out


def cost_curve(model, sizes, past=256, repeats=5) -> dict[int, float]:
    """Seconds for one target forward over n new tokens (tree-masked as in decoding), fastest of
    ``repeats`` tries taken round-robin over the sizes."""
    import mlx.core as mx
    import numpy as np

    from mlx_specdec.generate import Session
    from mlx_specdec.tree import Tree

    session = Session(model)
    rng = np.random.default_rng(0)
    mx.eval(model(mx.array(rng.integers(0, 1000, past))[None], session.cache)[0], *session.cache.state())
    best = {n: float("inf") for n in sizes}
    for _ in range(repeats):
        for n in sizes:
            tree = Tree(rng.integers(0, 1000, n), np.array([-1] + [0] * (n - 1)))  # a star: the masked path
            start = time.perf_counter()
            logits, _ = session.forward(tree)
            mx.eval(logits, *session.cache.state())
            best[n] = min(best[n], time.perf_counter() - start)
            session.cache.trim(n)
    return best


def run(session, ids, drafter, max_tokens, eos_ids):
    from mlx_specdec.sampling import SamplingParams
    from mlx_specdec.stats import RunStats

    stats, tokens = RunStats(), []
    for step in session.generate(ids, drafter, SamplingParams(), max_tokens, eos_ids):
        stats.add(step)
        tokens += step.tokens
    return tokens, stats


def parse_cost(text: str) -> dict[int, float]:
    return {int(n): float(ms) / 1000 for n, ms in (item.split(":") for item in text.split(","))}


def report(results: list[dict], cost: dict[int, float] | None = None) -> None:
    """Print the table; with ``cost``, recompute the modelled tokens/s from that curve."""
    import numpy as np

    if cost:
        x, y = zip(*sorted(cost.items()))
        for r in results:
            seconds = r["steps"] * float(np.interp(r["fed"], x, y)) + r["draft_s"] + r["bookkeeping_s"]
            r["modelled_tokens_per_s"] = r["decode_tokens"] / seconds
    labels = list(dict.fromkeys(r["method"] for r in results))
    print(f"\n{'category':15s} {'method':12s} {'speedup':>8s} {'modelled':>9s} {'tau':>6s} {'tok/s':>7s} {'fed':>6s}"
          "  (medians over prompts; speedups are ratios to ar on the same prompt)")
    for category in [*dict.fromkeys(r["category"] for r in results), "all"]:
        rows = [r for r in results if category in ("all", r["category"])]
        base = {r["prompt"]: r for r in rows if r["method"] == "ar"}
        for label in labels:
            mine = [r for r in rows if r["method"] == label]
            speedup = statistics.median(r["tokens_per_s"] / base[r["prompt"]]["tokens_per_s"] for r in mine)
            modelled = statistics.median(r["modelled_tokens_per_s"] / base[r["prompt"]]["modelled_tokens_per_s"] for r in mine)
            print(f"{category:15s} {label:12s} {speedup:7.2f}x {modelled:8.2f}x {statistics.median(r['tau'] for r in mine):6.2f} "
                  f"{statistics.median(r['tokens_per_s'] for r in mine):7.1f} "
                  f"{statistics.median(r['fed'] for r in mine):6.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--categories", default="humaneval,math_reasoning,summarization")
    parser.add_argument("--per-category", type=int, default=3)
    parser.add_argument("--first", type=int, default=0, help="skip this many prompts of each category")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--configs", default="0:4:4,2:4:4,8:4:4,auto:4:4")
    parser.add_argument("--with-pld", action="store_true")
    parser.add_argument("--sizes", default="1,2,4,8,16,32,64", help="forward sizes for the cost curve")
    parser.add_argument("--cost", help="model speed with this cost curve ('n:ms,...'; with --report too) instead of timing one")
    parser.add_argument("--json", help="write every per-prompt result here (after each prompt)")
    parser.add_argument("--report", nargs="+", metavar="JSON", help="print the table of earlier --json runs and exit")
    args = parser.parse_args()
    if args.report:
        results = [r for path in args.report for r in json.loads(Path(path).read_text())]
        report(results, parse_cost(args.cost) if args.cost else None)
        sys.exit(0 if all(r["same_as_ar"] for r in results) else 1)
    ensure_fast_blas()

    import mlx.core as mx
    import numpy as np

    from mlx_specdec.drafters import make_drafter
    from mlx_specdec.generate import Session
    from mlx_specdec.loader import load
    from mlx_specdec.platform_setup import blas_in_use

    if args.model is None:
        from mlx_specdec.store import default_model_dir

        args.model = default_model_dir()
    loaded = load(args.model, args.dtype)
    eos = loaded.tokenizer.eos_ids
    table = methods(args.configs, args.with_pld)
    print(f"model={args.model} dtype={args.dtype} device={mx.default_device()} blas={blas_in_use()} "
          f"max_tokens={args.max_tokens}", flush=True)
    warm = loaded.tokenizer.chat_ids([{"role": "user", "content": "Hello!"}])
    run(Session(loaded.model), warm, make_drafter("ar"), 16, eos)
    if args.cost:
        cost = parse_cost(args.cost)
    else:
        cost = cost_curve(loaded.model, [int(n) for n in args.sizes.split(",")])
    print("forward cost: " + "  ".join(f"n={n} {1000 * t:.0f} ms" for n, t in cost.items()), flush=True)
    cost_xy = list(zip(*sorted(cost.items())))

    results = []  # one dict per (prompt, method)
    for category, index, text in prompts(args.categories.split(","), args.first, args.per_category):
        ids = loaded.tokenizer.chat_ids([{"role": "user", "content": text}])
        reference = None
        for label, (name, options) in table.items():
            drafter = make_drafter(name, **options)
            tokens, stats = run(Session(loaded.model), ids, drafter, args.max_tokens, eos)
            reference = tokens if name == "ar" else reference
            steps = max(1, stats.target_forwards - 1)
            fed = stats.forward_tokens / steps
            modelled_s = steps * float(np.interp(fed, *cost_xy)) + stats.draft_s + stats.bookkeeping_s
            row = dict(category=category, prompt=f"{category}#{index}", method=label, same_as_ar=tokens == reference,
                       **stats.to_dict(), decode_tokens=stats.decode_tokens, steps=steps, fed=fed,
                       modelled_tokens_per_s=stats.decode_tokens / modelled_s, window=getattr(drafter, "width", None))
            results.append(row)
            print(f"  {category:15s} #{index:<3d} {label:12s} tau {stats.tau:5.2f}  {stats.tokens_per_s:6.1f} tok/s  "
                  f"fed {row['fed']:5.1f}  W {row['window']}  {'ok' if row['same_as_ar'] else 'DIFFERS FROM AR'}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    report(results)

    mismatches = [r for r in results if not r["same_as_ar"]]
    print(f"\noutputs identical to ar: {len(results) - len(mismatches)}/{len(results)}")
    sys.exit(1 if mismatches else 0)


if __name__ == "__main__":
    main()
