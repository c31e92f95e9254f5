"""The README's per-category results table from a bench JSON.

    python scripts/results_table.py docs/results.json --methods pld,recycle,redrafter

Per category: prompts, ar's tokens/s (mean over prompts), then for every method the median over
prompts of its per-prompt tokens/s ratio over ``ar`` and its mean tau, then each method's median
per-prompt ratio over pld. Rows for all prompts ("overall") and the categories where the context
repeats ("repeat categories": extraction, summarization, translation, rag, coding). Each
(prompt, turn) row of the JSON is one prompt here, as in bench's own summary.
"""

from __future__ import annotations

import argparse
import json
import statistics

REPEAT = ("extraction", "summarization", "translation", "rag", "coding")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("report")
    parser.add_argument("--methods", default="pld,recycle,redrafter")
    args = parser.parse_args()
    rows = json.load(open(args.report))["results"]
    methods = args.methods.split(",")
    by = {}
    for r in rows:
        if r.get("peer"):
            continue
        by.setdefault((r["question_id"], r.get("turn", 0), r["category"]), {})[r["method"]] = r
    prompts = [(key, v) for key, v in by.items() if "ar" in v and all(m in v for m in methods)]
    categories = list(dict.fromkeys(key[2] for key, _ in prompts))
    groups = [(c, [v for key, v in prompts if key[2] == c]) for c in categories]
    groups += [("**overall**", [v for _, v in prompts]), ("repeat categories", [v for key, v in prompts if key[2] in REPEAT])]
    others = [m for m in methods if m != "pld"]
    head = ["category", "n", "ar tok/s"] + [f"{m} {what}" for m in methods for what in ("speedup", "tau")] + [f"{m} / pld" for m in others if "pld" in methods]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, group in groups:
        if not group:
            continue
        cells = [name, str(len(group)), f"{statistics.mean(v['ar']['tokens_per_s'] for v in group):.1f}"]
        for m in methods:
            cells.append(f"{statistics.median(v[m]['tokens_per_s'] / v['ar']['tokens_per_s'] for v in group):.2f}x")
            cells.append(f"{statistics.mean(v[m]['tau'] for v in group):.2f}")
        if "pld" in methods:
            cells += [f"{statistics.median(v[m]['tokens_per_s'] / v['pld']['tokens_per_s'] for v in group):.2f}x" for m in others]
        print("| " + " | ".join(cells) + " |")
    mismatches = sum(1 for _, v in prompts for m in methods if v[m].get("matches_ar") is False)
    print(f"\n{len(prompts)} prompts, {len(prompts) * len(methods)} outputs compared with ar's, {mismatches} mismatches")


if __name__ == "__main__":
    main()
