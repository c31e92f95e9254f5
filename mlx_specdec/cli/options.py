"""Options that several commands share, declared once (Typer reads the ``Annotated`` metadata)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import UserError

Model = Annotated[Optional[str], typer.Option("--model", "-m", help="MLX model directory or store name (default: smollm2-135m, pulled on first use).")]
Dtype = Annotated[Optional[str], typer.Option("--dtype", help="float32 (default on CPU), float16 (default on GPU), bfloat16.")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed for sampling.")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling: keep the most likely tokens up to this mass.")]
TopK = Annotated[int, typer.Option("--top-k", help="Keep only the k most likely tokens (0 = off).")]
NumDraft = Annotated[Optional[int], typer.Option("--num-draft", help="Drafted tokens per step (pld, draft-model).")]
DraftModel = Annotated[Optional[str], typer.Option("--draft-model", help="Draft model directory or store name (draft-model; also mlx-lm's speculative peer in bench).")]
DrafterPath = Annotated[Optional[str], typer.Option("--drafter", help="A trained draft head directory (redrafter; default: the head shipped for the model).")]
Tree = Annotated[Optional[str], typer.Option("--tree", help="Draft tree shape for redrafter: beam or dynamic.")]
Window = Annotated[Optional[str], typer.Option("--window", help="Lookahead window width W, or 'auto' (sized from the measured forward cost).")]
Ngram = Annotated[Optional[int], typer.Option("--ngram", help="Lookahead n-gram size N.")]
Guesses = Annotated[Optional[int], typer.Option("--guesses", help="Lookahead n-grams verified per step G.")]


def method_options(num_draft=None, draft_model=None, drafter=None, tree=None, window=None, ngram=None, guesses=None) -> dict:
    """The method options as ``build_drafter`` keywords; ``--window`` is an integer or 'auto'."""
    if window is not None and window != "auto":
        try:
            window = int(window)
        except ValueError:
            raise UserError(f"--window must be an integer or 'auto', got {window!r}") from None
    return dict(num_draft=num_draft, draft_model=draft_model, drafter_path=drafter, tree=tree,
                window=window, ngram=ngram, guesses=guesses)
