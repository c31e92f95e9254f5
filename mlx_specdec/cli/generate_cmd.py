"""``mlx-specdec generate``: one prompt, streamed to the terminal or returned as JSON."""

from __future__ import annotations

import json
from typing import Optional

import typer

from . import options as opts
from .common import build_drafter, console, load_target, out


def generate(
    prompt: str = typer.Option(..., "--prompt", "-p", help="The user message (the chat template is applied unless --raw)."),
    model: opts.Model = None,
    method: str = typer.Option("ar", "--method", help="Decoding method: ar, pld, draft-model, lookahead, redrafter, triforce."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Stop after this many new tokens."),
    temp: float = typer.Option(0.0, "--temp", help="Sampling temperature; 0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass."),
    top_k: int = typer.Option(0, "--top-k", help="Keep only the k most likely tokens (0 = off)."),
    seed: opts.Seed = None,
    dtype: opts.Dtype = None,
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt."),
    raw: bool = typer.Option(False, "--raw", help="Feed the prompt as is, without the chat template."),
    stop: list[str] = typer.Option([], "--stop", help="Stop when this text appears (repeatable)."),
    num_draft: opts.NumDraft = None,
    draft_model: opts.DraftModel = None,
    drafter: opts.DrafterPath = None,
    tree: opts.Tree = None,
    beam_width: opts.BeamWidth = None,
    beam_length: opts.BeamLength = None,
    tree_topk: opts.TreeTopk = None,
    tree_depth: opts.TreeDepth = None,
    tree_size: opts.TreeSize = None,
    lookup: opts.Lookup = None,
    window: opts.Window = None,
    ngram: opts.Ngram = None,
    guesses: opts.Guesses = None,
    budget: opts.KvBudget = None,
    chunk: opts.Chunk = None,
    sinks: opts.Sinks = None,
    gamma2: opts.Gamma2 = None,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, tokens, prompt_tokens, model, method, stats)."),
):
    """Generate an answer to one prompt, with any decoding method (the output is the same for all under greedy)."""
    from ..generate import Session
    from ..sampling import SamplingParams
    from ..textgen import Generation, stream_text

    params = SamplingParams(temperature=temp, top_p=top_p, top_k=top_k, seed=seed)
    loaded = load_target(model, dtype)
    options = opts.method_options(num_draft, draft_model, drafter, tree, window, ngram, guesses,
                                 beam_width, beam_length, tree_topk, tree_depth, tree_size, lookup,
                                 kv_budget=budget, chunk=chunk, sinks=sinks, gamma2=gamma2)
    draft = build_drafter(method, loaded, params, **options)
    if raw:
        ids = loaded.tokenizer.encode(prompt, add_special_tokens=True)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = loaded.tokenizer.chat_ids(messages)
    session = Session(loaded.model, loaded.max_context)
    result = Generation(ids)
    for piece, _ in stream_text(session, loaded.tokenizer, ids, draft, params, max_tokens, stop, result):
        if not as_json and piece:
            out.print(piece, end="")
    stats = result.stats
    if as_json:
        payload = dict(text=result.text, tokens=result.tokens, prompt_tokens=ids, model=str(loaded.path), method=method,
                       dtype=loaded.dtype, finish=result.finish, stats=stats.to_dict())
        out.print_json(json.dumps(payload)) if out.is_terminal else print(json.dumps(payload))
    else:
        out.print()
        console.print(f"[dim]{method}: {stats.new_tokens} tokens, {stats.tokens_per_s:.1f} tok/s, "
                      f"tau {stats.tau:.2f}, " + (f"middle tau {stats.middle['tau']:.2f}, " if stats.middle else "") + f"prefill {stats.prefill_tokens} tokens in {stats.prefill_s:.2f}s ({loaded.dtype})[/]")

