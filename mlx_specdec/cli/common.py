"""Helpers shared by the commands: console, model resolution with progress, drafters, errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
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

    options = {}
    if method == "pld" and num_draft:
        options["num_draft"] = num_draft
    elif method == "draft-model":
        if draft_model is None:
            raise UserError("--method draft-model needs --draft-model PATH (a smaller model with the same tokenizer)")
        from ..loader import load

        with console.status("Loading the draft model..."):
            draft = load(resolve_model(draft_model), loaded.dtype)
        if draft.tokenizer.vocab_size != loaded.tokenizer.vocab_size and abs(draft.model.args.vocab_size - loaded.model.args.vocab_size) > 1024:
            raise UserError("the draft model's tokenizer differs from the target's: pick a draft model of the same family")
        options = dict(model=draft.model, num_draft=num_draft or 4, params=params, target_vocab=loaded.model.args.vocab_size)
    elif method == "lookahead":
        options = {k: v for k, v in dict(window=window, ngram=ngram, guesses=guesses).items() if v is not None}
    elif method == "redrafter":
        shape = {k: v for k, v in extra.items() if v is not None}
        from .options import BEAM_ONLY, DYNAMIC_ONLY

        beam = (tree or "beam") == "beam"
        flags = DYNAMIC_ONLY if beam else BEAM_ONLY
        wrong = flags.keys() & shape.keys()
        if wrong:
            raise UserError(f"{', '.join(sorted({flags[k] for k in wrong}))} only apply to --tree {'dynamic' if beam else 'beam'}")
        options = {k: v for k, v in dict(target=loaded.model, head_path=drafter_path, tree=tree).items() if v is not None}
        options.update(shape)
    return make_drafter(method, **options)


def fail(message: str, code: int = 2):
    console.print(f"[bold red]error:[/] {message}")
    sys.exit(code)
