"""How much of a sampled answer could any training-free draft predict? The ceiling behind the
sampled speedups in the README.

    python scripts/sampling_ceiling.py --limit 13 --temp 0.7 --top-p 0.9

Samples ``ar``'s answer to the first turn of each prompt (the default model, float32, seed 0: the
text every lossless method writes), then replays it and prints:

- how often the target's sample equals its own argmax, by the argmax's probability (what a perfect
  greedy predictor would get accepted under sampling);
- the share of positions whose sampled token is among the first 1 / 2 / 4 / 8 depth-1 guesses of
  all the sources together: the suffix automaton's continuation (recycle's, after the longest
  earlier match in the text), then the target's stored top-8 after the last 3, 2 or 1 tokens (the
  longest context seen before: Token Recycling's table and its 2- and 3-token-context variants),
  ranked by ``log p / T + noise`` with top-p applied (aimed at the sample, as recycle does).

Tables are kept across prompts and hold only rows from earlier positions. With ``--temp 0`` the
same replay gives the greedy counterparts.
"""

from __future__ import annotations

import argparse

import numpy as np

from mlx_specdec.platform_setup import ensure_fast_blas

GUESSES = (1, 2, 4, 8)
P_BINS = (0.0, 0.3, 0.5, 0.7, 0.9, 1.01)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=13)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temp", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_fast_blas()
    import mlx.core as mx

    from mlx_specdec.drafters import make_drafter
    from mlx_specdec.drafters.adjacency import top_k_rows_host
    from mlx_specdec.drafters.suffix_automaton import SuffixAutomaton
    from mlx_specdec.generate import Session
    from mlx_specdec.loader import load
    from mlx_specdec.prompts import default_prompt_file, read_prompts, select
    from mlx_specdec.sampling import Noise, SamplingParams
    from mlx_specdec.store import default_model_dir

    loaded = load(default_model_dir(), "float32")
    target, tokenizer = loaded.model, loaded.tokenizer
    params = SamplingParams(temperature=args.temp, top_p=args.top_p if args.temp else 1.0, seed=args.seed)
    noise = Noise(args.seed) if args.temp else None
    tables: dict[int, dict] = {1: {}, 2: {}, 3: {}}
    agree, top_p = [], []
    hits, positions = np.zeros(len(GUESSES)), 0
    for prompt in select(read_prompts([default_prompt_file()]), (), args.limit):
        ids = tokenizer.chat_ids([{"role": "user", "content": prompt.turns[0]}])
        answer = []
        for step in Session(target).generate(ids, make_drafter("ar"), params, args.max_tokens, tokenizer.eos_ids):
            answer += step.tokens
        text = ids + answer
        logits = np.array(target(mx.array(text)[None])[0][0].astype(mx.float32))  # row t-1 predicts token t
        top_ids, top_probs = top_k_rows_host(logits, 8)

        def remember(t):
            for n in tables:
                if t - n >= 0:
                    tables[n][tuple(text[t - n : t])] = (top_ids[t - 1], top_probs[t - 1])

        for t in range(1, len(ids)):
            remember(t)
        automaton = SuffixAutomaton(ids)
        for t in range(len(ids), len(text)):
            x = text[t]
            agree.append(int(top_ids[t - 1][0]) == x)
            top_p.append(float(top_probs[t - 1][0]))
            guesses = [chain[0] for chain in automaton.continuations(1)] if automaton.match_length else []
            row = next((tables[n][tuple(text[t - n : t])] for n in (3, 2, 1) if tuple(text[t - n : t]) in tables[n]), None)
            if row is not None:
                row_ids, row_probs = row
                if noise is None:
                    order = np.arange(len(row_ids))
                else:
                    above = np.cumsum(row_probs) - row_probs
                    score = np.log(np.maximum(row_probs, 1e-30)) / args.temp + noise.at(t, row_ids)
                    score[above >= args.top_p] = -np.inf
                    order = [i for i in np.argsort(-score) if np.isfinite(score[i])]
                guesses += [int(row_ids[i]) for i in order]
            unique = list(dict.fromkeys(guesses))
            hits += [x in unique[:g] for g in GUESSES]
            positions += 1
            remember(t)
            automaton.extend(x)
    agree, top_p = np.array(agree), np.array(top_p)
    print(f"{positions} positions; sample == argmax at {agree.mean():.3f}")
    for lo, hi in zip(P_BINS, P_BINS[1:]):
        inside = (top_p >= lo) & (top_p < hi)
        print(f"  argmax p in [{lo:.1f}, {min(hi, 1):.1f}): {inside.mean():.3f} of positions, agreement {agree[inside].mean():.3f}")
    print("depth-1 guesses containing the emitted token: " + ", ".join(f"{g}: {h / positions:.3f}" for g, h in zip(GUESSES, hits)))


if __name__ == "__main__":
    main()
