"""Options that several commands share, declared once (Typer reads the ``Annotated`` metadata),
and :func:`with_method_options`, which gives a command every field of
:class:`~mlx_specdec.method_options.MethodOptions` as a flag."""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Optional

import typer

from ..method_options import MethodOptions

Model = Annotated[Optional[str], typer.Option("--model", "-m", help="MLX model directory or store name (default: smollm2-135m, pulled on first use).")]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="float32 (default on CPU), float16 (default on GPU), bfloat16.")]
Seed = Annotated[Optional[int], typer.Option("--seed", min=0, help="Random seed for sampling (an integer >= 0): with the same seed every method but draft-model and triforce writes exactly ar's text.")]
MinP = Annotated[float, typer.Option("--min-p", help="Keep only tokens at least this share of the most likely one's probability (0 = off; as mlx-lm).")]

KvBudget = Annotated[Optional[int], typer.Option("--budget", help="triforce: KV slots the middle level attends to (sinks + retrieved chunks + recent window; default 1024).")]
Chunk = Annotated[Optional[int], typer.Option("--chunk", help="triforce: tokens per retrieved KV chunk (default 16).")]
Sinks = Annotated[Optional[int], typer.Option("--sinks", help="triforce: first tokens its cache views always keep (default 16).")]
Gamma2 = Annotated[Optional[str], typer.Option("--gamma2", help="triforce: tokens the middle level drafts per full-cache step (default 6), or 'auto' (the length with the most tokens/s so far); --num-draft is the bottom's gamma1 (default 4, 0 = none).")]


def with_method_options(command):
    """Give ``command`` one Typer option per MethodOptions field and call it with them gathered in
    ``method_options: MethodOptions`` (a keyword parameter it declares).

    The flags are parsed as text and checked by the field's own parser, so the CLI and
    ``MethodOptions.from_dict`` give the same one-line errors.
    """
    signature = inspect.signature(command, eval_str=True)
    params = [p for p in signature.parameters.values() if p.name != "method_options"]
    names = [f.name for f in MethodOptions.fields()]
    for f in MethodOptions.fields():
        meta = f.metadata
        option = typer.Option(meta["flag"], help=meta["help"], metavar=meta["parse"].metavar, show_default=False)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                        annotation=Annotated[Optional[str], option]))

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        raw = {name: kwargs.pop(name) for name in names if name in kwargs}
        return command(*args, method_options=MethodOptions.from_dict(raw), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # Typer must read the new signature, not the command's own
    return wrapper
