"""Are recycle's node estimates calibrated? Predicted against earned accepted tokens, per source.

    python scripts/recycle_calibration.py --categories extraction,rag --limit 4 --max-tokens 128

For every verified tree, each kept node's estimate (its probability of being accepted, the value
the budget sums) is added to "predicted" of its source (ctx: an automaton chain proposed it; tab:
only the Token Recycling table did), and 1 to "earned" when the node was accepted. Prints the
totals per source, a reliability table (mean estimate against the accepted share, by estimate),
the mean tree size and a proxy speedup over ar from the budget's cost table (the forward sizes
run plus the drafter's time, against one-token forwards); first turns only, the default model,
greedy unless ``--temp`` is given.
"""

from __future__ import annotations

import argparse

import numpy as np

from mlx_specdec.platform_setup import ensure_fast_blas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--categories", default="extraction,summarization,translation,rag,coding")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--table", default="on", choices=["on", "off"])
    parser.add_argument("--compare", default="pld", help="another method whose proxy speedup to print")
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (0: greedy)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_fast_blas()
    from mlx_specdec.drafters import make_drafter
    from mlx_specdec.drafters.recycle import Recycle, key_source, make_recycle
    from mlx_specdec.drafters.tree_budget import TreeBudget
    from mlx_specdec.generate import Session
    from mlx_specdec.loader import load
    from mlx_specdec.prompts import default_prompt_file, read_prompts, select
    from mlx_specdec.sampling import SamplingParams
    from mlx_specdec.store import default_model_dir

    loaded = load(default_model_dir(), "float32")
    target, tokenizer = loaded.model, loaded.tokenizer
    prompts = select(read_prompts([default_prompt_file()]), [c for c in args.categories.split(",") if c], args.limit)
    totals = {"ctx": [0.0, 0.0, 0], "tab": [0.0, 0.0, 0]}
    edges = [0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.01]
    by_value = {(source, b): [0.0, 0.0, 0] for source in totals for b in range(len(edges) - 1)}  # reliability bins
    steps = nodes = 0
    spent = ar_spent = 0.0  # the cost table's seconds for the forwards run, and for ar's one-token ones
    original = Recycle.commit

    def commit(self, tree, path, hidden, logits):
        nonlocal steps, nodes, spent, ar_spent
        accepted = set(path)
        spent += self.overhead_s
        steps += 1
        nodes += tree.num_nodes - 1
        for node in range(1, tree.num_nodes):
            cand = self._ids[node]
            source = "ctx" if any(key_source(k) == "ctx" for k in self._candidates.keys[cand]) else "tab"
            value = self._candidates.values[cand]
            for row in (totals[source], by_value[(source, int(np.searchsorted(edges, value, side="right")) - 1)]):
                row[0] += value
                row[1] += node in accepted
                row[2] += 1
        return original(self, tree, path, hidden, logits)

    Recycle.commit = commit
    drafter = make_recycle(target, table=args.table == "on")
    session = Session(target)
    budget = TreeBudget.for_target(target)

    def run(drafter) -> tuple[float, float]:
        """(seconds by the cost table, ar's seconds for the same tokens)"""
        table_s = ar_s = 0.0
        for prompt in prompts:
            ids = tokenizer.chat_ids([{"role": "user", "content": prompt.turns[0]}])
            params = SamplingParams(temperature=args.temp, top_p=args.top_p, seed=args.seed)
            for i, step in enumerate(session.generate(ids, drafter, params, max_tokens=args.max_tokens, eos_ids=tokenizer.eos_ids)):
                if not step.prefill:
                    budget.context = len(ids) + i
                    costs = budget.raw_costs()
                    table_s += costs[step.forward_tokens]
                    ar_s += len(step.tokens) * costs[1]
        return table_s, ar_s

    if args.compare:
        other_s, other_ar = run(make_drafter(args.compare))
        print(f"{args.compare}: proxy speedup over ar {other_ar / other_s:.3f}")
    table_s, ar_spent = run(drafter)
    spent += table_s
    print(f"{steps} trees, {nodes / max(steps, 1):.2f} drafted nodes per tree, "
          f"proxy speedup over ar {ar_spent / max(spent, 1e-9):.3f} (from the cost table)")
    for source, (predicted, earned, count) in totals.items():
        print(f"{source}: {count} nodes, predicted {predicted:.1f} accepted, earned {earned:.0f}"
              f" ({predicted / max(steps, 1):.3f} vs {earned / max(steps, 1):.3f} per tree)")
        for b in range(len(edges) - 1):
            predicted, earned, count = by_value[(source, b)]
            if count:
                print(f"    estimate {edges[b]:.2f}-{min(edges[b + 1], 1):.2f}: {count:5d} nodes, "
                      f"mean estimate {predicted / count:.3f}, accepted {earned / count:.3f}")


if __name__ == "__main__":
    main()
