"""Measure ReDrafter against autoregressive decoding on Spec-Bench prompts, in one process.

    python scripts/redrafter_eval.py --per-category 4 --max-tokens 128 --trees beam,dynamic \
        --out redrafter_eval.json

For every prompt (the first turn of the first ``--per-category`` questions of each category of
``../shared/data/specbench/dev.jsonl``, with the chat template) it runs ar, then each ReDrafter
tree shape, back to back, so load changes on a shared machine hit all methods alike. Greedy,
float32 by default; outputs must equal ar token for token. Prints per-category tau (tokens per
target forward) and speedup (decode tokens/s over ar's), and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

SPECBENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "specbench" / "dev.jsonl"


def pick_prompts(path: Path, per_category: int) -> list[dict]:
    """The first ``per_category`` questions of each category, round-robin over the categories (so
    a ``--limit`` still covers every category)."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_category: dict[str, list] = defaultdict(list)
    for row in rows:
        if len(by_category[row["category"]]) < per_category:
            by_category[row["category"]].append(row)
    return [group[i] for i in range(per_category) for group in by_category.values() if i < len(group)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the default model)")
    parser.add_argument("--head", default=None, help="head directory (default: the shipped head)")
    parser.add_argument("--data", default=str(SPECBENCH))
    parser.add_argument("--per-category", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--trees", default="beam,dynamic", help="tree specs: beam, beam:WxL, dynamic, dynamic:N, dynamic:auto, each optionally +lookup")
    parser.add_argument("--beam-width", type=int, default=4)
    parser.add_argument("--beam-length", type=int, default=4)
    parser.add_argument("--topk", type=int, default=4)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--num-nodes", type=int, default=12)
    parser.add_argument("--budget", action="store_true", help="dynamic trees: size chosen by the tree budget")
    parser.add_argument("--limit", type=int, default=None, help="at most this many prompts")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th prompt starting at i (parallel runs)")
    parser.add_argument("--lookup", type=int, default=2, help="prompt-lookup continuations for the '+lookup' trees")
    parser.add_argument("--blas-threads", type=int, default=None, help="OPENBLAS_NUM_THREADS (1 wins on a busy CPU)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--merge", nargs="+", default=None, help="only merge these JSON outputs and print the table")
    args = parser.parse_args()
    if args.merge:
        runs = [json.loads(Path(f).read_text()) for f in args.merge]
        records = [r for run in runs for r in run["records"]]
        trees = [m for m in runs[0]["args"]["trees"].split(",") if m]
        summary = summarize(records, trees)
        print_table(summary, trees)
        if args.out:
            Path(args.out).write_text(json.dumps(dict(args=runs[0]["args"], summary=summary, records=records), indent=1))
        return

    import os

    from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas

    if args.blas_threads and os.environ.get("OPENBLAS_NUM_THREADS") != str(args.blas_threads):
        os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads)
        os.environ.pop("MLX_SPECDEC_BLAS", None)
        os.environ["LD_PRELOAD"] = ""  # re-executed below with OpenBLAS and this thread count
    ensure_fast_blas()
    import mlx.core as mx

    from mlx_specdec.drafters import make_drafter
    from mlx_specdec.generate import Session
    from mlx_specdec.loader import load
    from mlx_specdec.stats import RunStats

    model_dir = args.model
    if model_dir is None:
        from mlx_specdec.store import default_model_dir

        model_dir = default_model_dir()
    loaded = load(model_dir, args.dtype)
    model, tok = loaded.model, loaded.tokenizer
    eos = sorted(tok.eos_ids)
    trees = [t for t in args.trees.split(",") if t]
    options = {tree: tree_options(tree, args) for tree in trees}
    heads = {}

    def drafter(method):
        if method == "ar":
            return make_drafter("ar")
        d = make_drafter("redrafter", target=model, head_path=args.head, **options[method])
        if method in heads:  # share the loaded head (and its compiled searches) between prompts
            d.head, d.budget = heads[method].head, heads[method].budget or d.budget
        else:
            heads[method] = d
        return d

    def run(ids, method):
        stats, out = RunStats(), []
        d = drafter(method)
        for step in Session(model).generate(ids, d, max_tokens=args.max_tokens, eos_ids=eos):
            stats.add(step)
            out += step.tokens
        return out, stats, d

    index, count = map(int, args.shard.split("/"))
    prompts = pick_prompts(Path(args.data), args.per_category)[: args.limit][index::count]
    warm = tok.chat_ids([{"role": "user", "content": "Say hello."}])
    for method in ["ar"] + trees:
        run(warm, method)
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    print(f"model={model_dir} dtype={args.dtype} device={mx.default_device()} blas={blas_in_use()} threads={threads} prompts={len(prompts)}", flush=True)
    records = []
    t0 = time.time()
    for i, row in enumerate(prompts):
        ids = tok.chat_ids([{"role": "user", "content": row["turns"][0]}])
        record = dict(question_id=row["question_id"], category=row["category"], prompt_tokens=len(ids))
        reference = None
        for method in ["ar"] + trees:
            out, stats, d = run(ids, method)
            if reference is None:
                reference = out
            entry = stats.to_dict()
            entry["identical_to_ar"] = out == reference
            entry["decode_tokens"] = stats.decode_tokens
            if method != "ar":
                entry["mean_tree_nodes"] = round(stats.proposed / max(1, stats.target_forwards - 1), 2)
                if method.startswith("beam"):
                    entry["dedup_saved"] = round(d.saved_share, 4)
            record[method] = entry
        records.append(record)
        if args.out:  # after every prompt, so an interrupted run keeps what it measured
            Path(args.out).write_text(json.dumps(dict(args=vars(args), blas=blas_in_use(), records=records), indent=1))
        line = "  ".join(
            f"{m}: tau {record[m]['tau']:.2f} {record[m]['tokens_per_s']:.1f} tok/s{'' if record[m]['identical_to_ar'] else ' DIFFERS'}"
            for m in ["ar"] + trees
        )
        print(f"[{i + 1}/{len(prompts)} {time.time() - t0:.0f}s] {row['category']:15s} {line}", flush=True)

    summary = summarize(records, trees)
    print_table(summary, trees)
    if args.out:
        Path(args.out).write_text(json.dumps(dict(args=vars(args), blas=blas_in_use(), summary=summary, records=records), indent=1))


def tree_options(spec: str, args) -> dict:
    """ReDrafter options of a tree spec: ``beam``, ``beam:WxL``, ``dynamic``, ``dynamic:N`` or
    ``dynamic:auto`` (N nodes; auto = the tree budget), each optionally followed by ``+lookup``.

    Example: ``beam:2x4+lookup`` -> tree="beam", beam_width=2, beam_length=4, lookup=args.lookup.
    """
    base, plus, lookup = spec.partition("+")
    if plus and lookup != "lookup":
        raise SystemExit(f"bad tree spec {spec!r}")
    shape, _, size = base.partition(":")
    if shape == "beam":
        width, length = (size.split("x") if size else (args.beam_width, args.beam_length))
        options = dict(tree="beam", beam_width=int(width), beam_length=int(length))
    elif shape == "dynamic":
        size = size or ("auto" if args.budget else str(args.num_nodes))
        options = dict(tree="dynamic", topk=args.topk, depth=args.depth, num_nodes=args.num_nodes if size == "auto" else int(size),
                       budget=True if size == "auto" else None)
    else:
        raise SystemExit(f"bad tree spec {spec!r}")
    return dict(options, lookup=args.lookup) if plus else options


def summarize(records, trees) -> dict:
    groups = defaultdict(list)
    for r in records:
        groups[r["category"]].append(r)
    groups["ALL"] = records
    summary = {}
    for cat, rows in groups.items():
        ar_tps = sum(r["ar"]["decode_tokens"] for r in rows) / sum(r["ar"]["decode_s"] for r in rows)
        entry = {"prompts": len(rows), "ar_tokens_per_s": round(ar_tps, 2)}
        for m in trees:
            tps = sum(r[m]["decode_tokens"] for r in rows) / sum(r[m]["decode_s"] for r in rows)
            entry[m] = dict(
                tau=round(sum(r[m]["tau"] for r in rows) / len(rows), 3),
                tokens_per_s=round(tps, 2),
                speedup=round(tps / ar_tps, 3),
                mean_speedup=round(sum(r[m]["tokens_per_s"] / r["ar"]["tokens_per_s"] for r in rows) / len(rows), 3),
                identical=all(r[m]["identical_to_ar"] for r in rows),
                mean_tree_nodes=round(sum(r[m]["mean_tree_nodes"] for r in rows) / len(rows), 2),
            )
            if m.startswith("beam"):
                entry[m]["dedup_saved"] = round(sum(r[m]["dedup_saved"] for r in rows) / len(rows), 4)
        summary[cat] = entry
    return summary


def print_table(summary, trees):
    header = "| category | n | ar tok/s | " + " | ".join(f"{m} tau | {m} speedup" for m in trees) + " |"
    print(header)
    print("|" + "---|" * (3 + 2 * len(trees)))
    for cat, e in summary.items():
        cells = " | ".join(f"{e[m]['tau']:.2f} | {e[m]['speedup']:.2f}x" for m in trees)
        print(f"| {cat} | {e['prompts']} | {e['ar_tokens_per_s']:.1f} | {cells} |")
    for m in trees:
        a = summary["ALL"][m]
        extra = f", beam dedup saved {a['dedup_saved']:.1%} of beam tokens" if "dedup_saved" in a else ""
        print(f"{m}: identical to ar: {a['identical']}; mean tree nodes {a['mean_tree_nodes']}{extra}")


if __name__ == "__main__":
    main()
