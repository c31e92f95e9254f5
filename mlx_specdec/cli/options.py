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
Tree = Annotated[Optional[str], typer.Option("--tree", help="Draft tree shape for redrafter: beam or dynamic (default dynamic, or beam when a beam option is given).")]
BeamWidth = Annotated[Optional[int], typer.Option("--beam-width", help="redrafter --tree beam: beams kept (W, default 4).")]
BeamLength = Annotated[Optional[int], typer.Option("--beam-length", help="redrafter --tree beam: draft tokens per beam (L, default 4).")]
TreeTopk = Annotated[Optional[int], typer.Option("--tree-topk", help="redrafter --tree dynamic: children per node and nodes expanded per round (k, default 4).")]
TreeDepth = Annotated[Optional[int], typer.Option("--tree-depth", help="redrafter --tree dynamic: draft rounds (depth, default 5).")]
TreeSize = Annotated[Optional[str], typer.Option("--tree-size", help="redrafter --tree dynamic: draft nodes verified per step (n), or 'auto' (default: sized from this device's measured forward cost and the running acceptance).")]
Lookup = Annotated[Optional[int], typer.Option("--lookup", help="redrafter: also merge up to N prompt-lookup continuations (n-grams the context repeats) into each draft tree; 0 = the head's drafts only (default 2).")]
Window = Annotated[Optional[str], typer.Option("--window", help="Lookahead window width W, or 'auto' (sized from the measured forward cost); triforce: recent tokens its cache views always keep (default 128).")]
Ngram = Annotated[Optional[int], typer.Option("--ngram", help="Lookahead n-gram size N.")]
Guesses = Annotated[Optional[int], typer.Option("--guesses", help="Lookahead n-grams verified per step G.")]

KvBudget = Annotated[Optional[int], typer.Option("--budget", help="triforce: KV slots the middle level attends to (sinks + retrieved chunks + recent window; default 1024).")]
Chunk = Annotated[Optional[int], typer.Option("--chunk", help="triforce: tokens per retrieved KV chunk (default 16).")]
Sinks = Annotated[Optional[int], typer.Option("--sinks", help="triforce: first tokens its cache views always keep (default 16).")]
Gamma2 = Annotated[Optional[str], typer.Option("--gamma2", help="triforce: tokens the middle level drafts per full-cache step (default 6), or 'auto' (the length with the most tokens/s so far); --num-draft is the bottom's gamma1 (default 4, 0 = none).")]


BEAM_ONLY = {"beam_width": "--beam-width", "beam_length": "--beam-length"}  # redrafter keyword -> flag
DYNAMIC_ONLY = {"topk": "--tree-topk", "depth": "--tree-depth", "num_nodes": "--tree-size", "budget": "--tree-size"}
REDRAFTER_LOOKUP = 2  # --lookup default: measured +0.75 tau on Spec-Bench with the shipped head (README)


def _int_or_auto(name: str, value):
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{name} must be an integer or 'auto', got {value!r}") from None


def method_options(num_draft=None, draft_model=None, drafter=None, tree=None, window=None, ngram=None, guesses=None,
                   beam_width=None, beam_length=None, tree_topk=None, tree_depth=None, tree_size=None, lookup=None,
                   kv_budget=None, chunk=None, sinks=None, gamma2=None) -> dict:
    """The method options as ``build_drafter`` keywords; ``--window`` and ``--tree-size`` are an
    integer or 'auto'."""
    tree_size = _int_or_auto("--tree-size", tree_size)
    return dict(num_draft=num_draft, draft_model=draft_model, drafter_path=drafter, tree=tree,
                window=_int_or_auto("--window", window), ngram=ngram, guesses=guesses,
                beam_width=beam_width, beam_length=beam_length, topk=tree_topk, depth=tree_depth,
                num_nodes=None if tree_size == "auto" else tree_size, budget=True if tree_size == "auto" else None, lookup=lookup,
                kv_budget=kv_budget, chunk=chunk, sinks=sinks, gamma2=gamma2)
