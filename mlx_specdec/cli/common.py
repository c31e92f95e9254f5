"""Helpers shared by the commands: console, model resolution with progress, drafters, errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ..errors import UserError

console = Console(stderr=True, highlight=False, soft_wrap=True)
out = Console(highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str):
    """A Rich progress bar; yields a ``progress(done, total, what)`` callback."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[what]}"),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=None, what="")

        def update(done, total, what=""):
            bar.update(task, completed=done, total=total, what=what)

        yield update


def resolve_model(model: str | None) -> Path:
    """A model directory from a path or a store name; pulls the default model when None."""
    from .. import store

    with progress_bar("Preparing model") as update:
        if model is None:
            return store.default_model_dir(progress=update)
        return store.resolve_model(model, progress=update)


def load_target(model: str | None, dtype: str | None):
    from ..loader import load

    path = resolve_model(model)
    with console.status(f"Loading {path.name}..."):
        return load(path, dtype)


def build_drafter(method: str, loaded, params, num_draft=None, draft_model=None, drafter_path=None,
                  tree=None, window=None, ngram=None, guesses=None, **extra):
    """Map the CLI's method options onto ``make_drafter``'s per-method options."""
    from ..drafters import make_drafter

    triforce = {k: extra.pop(k, None) for k in ("kv_budget", "chunk", "sinks", "gamma2")}
    options = {}
    if method == "pld" and num_draft:
        options["num_draft"] = num_draft
    elif method == "draft-model":
        if draft_model is None:
            raise UserError("--method draft-model needs --draft-model PATH (a smaller model with the same tokenizer)")
        draft = load_draft(draft_model, loaded)
        options = dict(model=draft.model, num_draft=num_draft or 4, params=params, target_vocab=loaded.model.args.vocab_size)
    elif method == "triforce":
        draft = load_draft(draft_model, loaded).model if draft_model is not None else None
        options = dict(target=loaded.model, params=params, draft=draft, num_draft=num_draft, window=window, **triforce)
    elif method == "lookahead":
        options = {k: v for k, v in dict(window=window, ngram=ngram, guesses=guesses).items() if v is not None}
    elif method == "redrafter":
        options = redrafter_options(loaded.model, drafter_path, tree, extra)
        with console.status("Preparing the ReDrafter head (the first run on a device measures its forward cost)..."):
            return make_drafter(method, **options)
    return make_drafter(method, **options)


TOKENIZER_PROBE = "The cat sat on the mat. Hello, world! 12345 def f(x): return x  # ünïcode"


def load_draft(draft_model: str, loaded):
    """A draft model in the target's dtype; its tokenizer must be the target's."""
    from ..loader import load

    with console.status("Loading the draft model..."):
        draft = load(resolve_model(draft_model), loaded.dtype)
    vocab_differs = draft.tokenizer.vocab_size != loaded.tokenizer.vocab_size and abs(draft.model.args.vocab_size - loaded.model.args.vocab_size) > 1024
    if vocab_differs or draft.tokenizer.encode(TOKENIZER_PROBE) != loaded.tokenizer.encode(TOKENIZER_PROBE):
        raise UserError("the draft model's tokenizer differs from the target's: pick a draft model of the same family")
    return draft


def redrafter_options(target, drafter_path, tree, extra: dict) -> dict:
    """``make_redrafter`` keywords from the CLI's: the tree defaults to dynamic (beam when only beam
    options are given), its size to 'auto', and ``--lookup`` to REDRAFTER_LOOKUP."""
    from .options import BEAM_ONLY, DYNAMIC_ONLY, REDRAFTER_LOOKUP

    shape = {k: v for k, v in extra.items() if v is not None}
    lookup = shape.pop("lookup", REDRAFTER_LOOKUP)
    if lookup < 0:
        raise UserError(f"--lookup must be >= 0, got {lookup}")
    tree = tree or ("beam" if BEAM_ONLY.keys() & shape.keys() else "dynamic")
    flags = DYNAMIC_ONLY if tree == "beam" else BEAM_ONLY
    wrong = flags.keys() & shape.keys()
    if wrong:
        raise UserError(f"{', '.join(sorted({flags[k] for k in wrong}))} only apply to --tree {'dynamic' if tree == 'beam' else 'beam'}")
    if tree == "dynamic" and "num_nodes" not in shape and "budget" not in shape:
        shape["budget"] = True
    options = {k: v for k, v in dict(target=target, head_path=drafter_path, tree=tree).items() if v is not None}
    return dict(options, lookup=lookup, **shape)


def fail(message: str, code: int = 2):
    console.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)
