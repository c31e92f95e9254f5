"""A trained head inside recycle's merged tree: tokens/s and tau per head search shape, one process.

    python scripts/head_sources_probe.py --limit 8 --variants ar,recycle,rd:3x3,rd:4x5,always-rd:3x3,eagle:3x3 --eagle HEAD

Variants: ``ar``; ``pld``; ``recycle`` (no head); ``rd:KxD`` (recycle with the shipped ReDrafter
head searching top-k K to depth D); ``always-rd:KxD`` (the head on every step, not only where it
measures faster); ``notab-rd:KxD`` (no Token Recycling table); ``eagle:KxD`` (an EAGLE-3 head,
``--eagle DIR``). First turns of ``--limit`` Spec-Bench dev prompts (one per category first), the
default model in float32; tokens/s counts decode steps only (no prefill), so ratios between lines
are same-process speedups. ``--temp``/``--top-p`` sample (seed 0: every variant writes ar's text).
"""

from __future__ import annotations

import argparse

from mlx_specdec.platform_setup import ensure_fast_blas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--variants", default="ar,recycle,rd:3x3")
    parser.add_argument("--eagle", default=None, help="an EAGLE-3 head directory for eagle:KxD")
    parser.add_argument("--temp", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    args = parser.parse_args()
    ensure_fast_blas()
    from mlx_specdec.drafters import make_drafter
    from mlx_specdec.drafters.eagle import make_eagle
    from mlx_specdec.drafters.recycle import make_recycle
    from mlx_specdec.drafters.redrafter import make_redrafter
    from mlx_specdec.generate import Session
    from mlx_specdec.loader import load
    from mlx_specdec.prompts import default_prompt_file, read_prompts, select
    from mlx_specdec.sampling import SamplingParams
    from mlx_specdec.store import default_model_dir

    loaded = load(default_model_dir(), "float32")
    target, tokenizer = loaded.model, loaded.tokenizer
    prompts = select(read_prompts([default_prompt_file()]), [], args.limit)

    def build(variant: str):
        if variant in ("ar", "pld"):
            return make_drafter(variant)
        if variant == "recycle":
            return make_recycle(target)
        kind, _, shape = variant.partition(":")
        topk, depth = map(int, shape.split("x"))
        if kind == "eagle":
            return make_recycle(target, head=make_eagle(target, args.eagle, topk=topk, depth=depth))
        head = make_redrafter(target, tree="dynamic", topk=topk, depth=depth)
        drafter = make_recycle(target, table=kind != "notab-rd", head=head)
        if kind == "always-rd":
            drafter._head_pays = lambda: True
        return drafter

    session = Session(target)
    params = SamplingParams(temperature=args.temp, top_p=args.top_p, seed=0)
    base = None
    for variant in args.variants.split(","):
        drafter = build(variant)
        tokens = forwards = nodes = 0
        decode_s = draft_s = 0.0
        for prompt in prompts:
            ids = tokenizer.chat_ids([{"role": "user", "content": prompt.turns[0]}])
            for step in session.generate(ids, drafter, params, max_tokens=args.max_tokens, eos_ids=tokenizer.eos_ids):
                if step.prefill:
                    continue
                forwards += 1
                tokens += len(step.tokens)
                nodes += step.proposed
                draft_s += step.draft_s
                decode_s += step.draft_s + step.verify_s + step.bookkeeping_s
        rate = tokens / decode_s
        base = base or rate
        print(f"{variant}: {rate:.2f} tok/s ({rate / base:.2f}x the first line), tau {tokens / forwards:.2f}, "
              f"{nodes / forwards:.2f} drafted nodes per step, draft {1000 * draft_s / forwards:.1f} ms per step", flush=True)


if __name__ == "__main__":
    main()
