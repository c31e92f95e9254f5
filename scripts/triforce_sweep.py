"""TriForce settings on long documents, against ar and pld, with one prefill per prompt.

    python scripts/triforce_sweep.py --context 8192 --max-tokens 128 --limit 4 \\
        --configs pld "triforce:budget=1024,gamma2=6,num_draft=4" "triforce:budget=512,gamma2=4" \
        "triforce:draft_layers=10,num_draft=3"   # bottom: the target's first 10 layers, StreamingLLM cache

Every method runs on the same Session, which keeps the prompt's KV cache between them (only the
last prompt token is fed again), so a sweep costs one 8K prefill per prompt instead of one per
method. Prints per config: median speedup over ar (decode tokens/s, same process, prompt by
prompt), tau, the middle level's tau, mismatches against ar; ``--out`` writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import mlx.core as mx

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.triforce import make_triforce
from mlx_specdec.generate import Session
from mlx_specdec.loader import load
from mlx_specdec.long_context import cut_to_context, default_longctx_file
from mlx_specdec.platform_setup import blas_in_use, ensure_fast_blas
from mlx_specdec.prompts import read_prompts, select
from mlx_specdec.stats import RunStats


def drafter_for(config: str, model):
    name, _, spec = config.partition(":")
    options = {k: int(v) if v.lstrip("-").isdigit() else v for k, v in (kv.split("=") for kv in spec.split(",") if kv)}
    if name == "triforce":
        if "budget" in options:
            options["kv_budget"] = options.pop("budget")
        if "draft_layers" in options:  # the bottom: the target's first N layers over a StreamingLLM cache
            options["draft"] = shallow_copy(model, options.pop("draft_layers"))
        return make_triforce(model, **options)
    return make_drafter(name, **options)


def shallow_copy(model, layers: int):
    """The target's first ``layers`` layers, its final norm and LM head, sharing its weights."""
    from dataclasses import asdict

    from mlx.utils import tree_flatten, tree_unflatten

    from mlx_specdec.models import build_model

    shallow = build_model(dict(asdict(model.args), num_hidden_layers=layers))
    ours = dict(tree_flatten(model.parameters()))
    shallow.update(tree_unflatten([(k, ours[k]) for k, _ in tree_flatten(shallow.parameters())]))
    return shallow


def run(session, ids, drafter, max_tokens, eos):
    stats, tokens, first = RunStats(), [], None
    for step in session.generate(ids, drafter, max_tokens=max_tokens, eos_ids=eos):
        if step.prefill:
            first = time.perf_counter()
        stats.add(step)
        tokens += step.tokens
    return tokens, stats, time.perf_counter() - first


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--configs", nargs="+", default=["pld", "triforce"])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    ensure_fast_blas()
    if args.model is None:
        from mlx_specdec.store import default_model_dir

        args.model = default_model_dir()
    loaded = load(args.model, "float32")
    prompts = select(read_prompts([default_longctx_file()]), [], args.limit)
    session = Session(loaded.model, loaded.max_context)
    eos = loaded.tokenizer.eos_ids
    print(f"model={args.model} float32 device={mx.default_device()} blas={blas_in_use()} context={args.context}", flush=True)
    rows = []
    drafters = {config: drafter_for(config, loaded.model) for config in ["ar"] + args.configs}  # kept across prompts, as in bench
    for prompt in prompts:
        ids = loaded.tokenizer.chat_ids([{"role": "user", "content": cut_to_context(prompt, loaded.tokenizer, args.context, args.max_tokens).turns[0]}])
        session.reset()
        mx.reset_peak_memory()
        run(session, ids, make_drafter("ar"), 8, eos)  # prefill once (and warm up)
        for config in ["ar"] + args.configs:
            mx.reset_peak_memory()
            tokens, stats, seconds = run(session, ids, drafters[config], args.max_tokens, eos)
            row = dict(question_id=prompt.question_id, config=config, prompt_tokens=len(ids), tokens=tokens,
                       tokens_per_s=stats.decode_tokens / seconds, tau=stats.tau, middle=stats.middle,
                       draft_s=stats.draft_s, verify_s=stats.verify_s, peak_memory_mb=mx.get_peak_memory() / 2**20)
            rows.append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "tokens"}), flush=True)
    print(f"\n{'config':48s} {'speedup med':>11s} {'tau':>5s} {'mid tau':>7s} {'mid acc':>7s} {'mismatch':>8s} {'peak MB':>7s}")
    base = {r["question_id"]: r for r in rows if r["config"] == "ar"}
    for config in ["ar"] + args.configs:
        rs = [r for r in rows if r["config"] == config]
        speed = statistics.median(r["tokens_per_s"] / base[r["question_id"]]["tokens_per_s"] for r in rs)
        mism = sum(r["tokens"] != base[r["question_id"]]["tokens"] for r in rs)
        mids = [r["middle"] for r in rs if r["middle"]]
        mid_tau = sum(m["accepted"] + m["forwards"] for m in mids) / max(1, sum(m["forwards"] for m in mids)) if mids else 0
        mid_acc = sum(m["accepted"] for m in mids) / max(1, sum(m["proposed"] for m in mids)) if mids else 0
        print(f"{config:48s} {speed:10.2f}x {statistics.mean(r['tau'] for r in rs):5.2f} {mid_tau:7.2f} {mid_acc:7.2f} "
              f"{mism:8d} {max(r['peak_memory_mb'] for r in rs):7.0f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(args=vars(args), rows=rows), f, default=str)


if __name__ == "__main__":
    main()
