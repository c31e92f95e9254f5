"""``mlx-specdec generate``: one prompt, streamed to the terminal or returned as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..method_options import MethodOptions
from . import options as opts
from .common import PrefillBar, build_drafter, console, load_target, out
from .prompt_input import read_prompt


@opts.with_method_options
def generate(
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p", help="The user message (the chat template is applied unless --raw); - reads it from stdin, @FILE from a file (@@ for a literal @)."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="Read the user message from this file (- = stdin) instead of --prompt."),
    model: opts.Model = None,
    method: Optional[str] = typer.Option(None, "--method", help="Decoding method: ar, pld, draft-model, lookahead, recycle, triforce, redrafter, eagle (default: as chat's)."),
    max_tokens: int = typer.Option(256, "--max-tokens", min=1, help="Stop after this many new tokens."),
    temp: float = typer.Option(0.0, "--temp", help="Sampling temperature; 0 = greedy."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass."),
    top_k: int = typer.Option(0, "--top-k", help="Keep only the k most likely tokens (0 = off)."),
    min_p: opts.MinP = 0.0,
    seed: opts.Seed = None,
    dtype: opts.Dtype = None,
    system: Optional[str] = typer.Option(None, "--system", help="A system prompt."),
    raw: bool = typer.Option(False, "--raw", help="Feed the prompt as is, without the chat template."),
    stop: list[str] = typer.Option([], "--stop", help="Stop when this text appears (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (text, tokens, prompt_tokens, model, method, stats)."),
    *,
    method_options: MethodOptions,
):
    """Generate an answer to one prompt, with any decoding method (the output is the same for all under greedy)."""
    from ..generate import Session
    from ..sampling import SamplingParams
    from ..textgen import Generation, stream_text

    prompt = read_prompt(prompt, prompt_file)
    params = SamplingParams(temperature=temp, top_p=top_p, top_k=top_k, min_p=min_p, seed=seed)
    loaded = load_target(model, dtype)
    if method is None:
        from ..drafters import default_method

        method = default_method(lambda: _redrafter_ships(loaded))
    method_options.check(method)
    draft = build_drafter(method, loaded, params, method_options)
    if raw:
        ids = loaded.tokenizer.encode(prompt, add_special_tokens=True)
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        ids = loaded.tokenizer.chat_ids(messages)
    bar = PrefillBar()
    session = Session(loaded.model, loaded.max_context, prefill_progress=bar)
    result = Generation(ids)
    try:
        for piece, _ in stream_text(session, loaded.tokenizer, ids, draft, params, max_tokens, stop, result):
            if not as_json and piece:
                out.print(piece, end="")
    finally:
        bar.close()  # Ctrl-C during the prefill
    stats = result.stats
    if as_json:
        payload = dict(text=result.text, tokens=result.tokens, prompt_tokens=ids, model=str(loaded.path), method=method,
                       dtype=loaded.dtype, finish=result.finish, stats=stats.to_dict())
        out.print_json(json.dumps(payload)) if out.is_terminal else print(json.dumps(payload))
    else:
        out.print()
        if result.finish == "context":
            console.print(f"[yellow]note:[/] the answer stopped because the model's context ({loaded.max_context} tokens) is full")
        console.print(f"[dim]{method}: {stats.new_tokens} tokens, {stats.tokens_per_s:.1f} tok/s, "
                      f"tau {stats.tau:.2f}, " + (f"middle tau {stats.middle['tau']:.2f}, " if stats.middle else "") + f"prefill {stats.prefill_tokens} tokens in {stats.prefill_s:.2f}s ({loaded.dtype})[/]")



def _redrafter_ships(loaded) -> bool:
    from ..drafters.redrafter import find_shipped_head

    return find_shipped_head(loaded.model) is not None
