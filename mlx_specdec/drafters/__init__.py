"""Drafters by name: what ``--method NAME`` picks."""

from __future__ import annotations

from .autoregressive import Autoregressive
from .base import Drafter
from .pld import PromptLookup

METHODS = {
    "ar": "autoregressive decoding (the baseline: one token per target forward)",
    "pld": "prompt lookup: copies continuations of repeated n-grams, no weights",
    "draft-model": "a smaller model with the same tokenizer drafts a chain (--draft-model PATH)",
    "lookahead": "lookahead decoding: Jacobi iterations fill an n-gram pool, no weights (--window --ngram --guesses)",
    "recycle": "training-free draft trees: suffix-automaton matches over the context + Token Recycling's table, one budgeted tree, no weights",
    "triforce": "TriForce for long contexts: pld (or --draft-model) drafts for the target over a retrieval-selected KV budget, which drafts for the full target (--budget --chunk --sinks --window --gamma2 --bottom)",
    "redrafter": "ReDrafter: a trained recurrent head drafts beams or a dynamic tree (--tree beam|dynamic, --drafter HEAD_DIR)",
    "eagle": "EAGLE-3: a one-layer head on three target layers drafts EAGLE-2's dynamic tree (--drafter EAGLE3_DIR, published layout)",
}


def default_method(redrafter_available) -> str:
    """The method ``chat``, ``generate`` and ``serve`` use when none is asked for: ``redrafter``
    when a head ships for the model (its tree merged with recycle's sources), else ``recycle``.
    Measured on 40 Spec-Bench dev prompts on this project's 2-core CPU (README "Results",
    2026-12-07): redrafter 1.72x over ar at the median, recycle 1.59x, pld 1.41x; recycle needs no
    weights, so it serves any model (on Qwen2.5-Coder-1.5B 1.71x over ar, 1.23x over pld)."""
    return "redrafter" if redrafter_available() else "recycle"


def make_drafter(name: str, **options) -> Drafter:
    """Build the drafter ``name`` with its options (unknown options are a programming error)."""
    from ..errors import UserError

    if name == "ar":
        return Autoregressive()
    if name == "pld":
        return PromptLookup(**options)
    if name == "draft-model":
        from .draft_model import DraftModel

        if options.get("model") is None:
            raise UserError("--method draft-model needs --draft-model PATH (a smaller model with the same tokenizer)")
        return DraftModel(**options)
    if name == "lookahead":
        from .lookahead import Lookahead

        return Lookahead(**options)
    if name == "recycle":
        from .recycle import make_recycle

        return make_recycle(**options)
    if name == "redrafter":
        from .redrafter import make_redrafter

        return make_redrafter(**options)
    if name == "eagle":
        from .eagle import make_eagle

        return make_eagle(**options)
    if name == "triforce":
        from .triforce import make_triforce

        return make_triforce(**options)
    raise UserError(f"unknown method {name!r} (choose from: {', '.join(METHODS)})")
