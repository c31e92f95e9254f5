"""The decoding methods' options, declared once: the CLI's flags and a server's per-request fields.

Every option is one field of :class:`MethodOptions`. Its metadata (made by :func:`option`) carries
the flag, the help text, how a value is parsed and checked, and the methods it applies to. The CLI
(``cli/options.py``, ``@with_method_options``) turns each field into a Typer option of ``generate``,
``chat`` and ``bench``; anything else (a server taking JSON fields) calls :meth:`MethodOptions.from_dict`.
A value left out is ``None``: the drafter's own default applies.

    >>> o = MethodOptions.from_dict({"num_draft": "4"}, method="pld")
    >>> o.num_draft, o.drafter_kwargs("pld")
    (4, {'num_draft': 4})
    >>> MethodOptions.from_dict({"num_draft": 0}, method="pld")
    Traceback (most recent call last):
    mlx_specdec.errors.UserError: --num-draft must be an integer between 1 and 64, got 0 (0 = no bottom drafter is for triforce only)
    >>> MethodOptions.from_dict({"beam_width": 2}, method="pld")
    Traceback (most recent call last):
    mlx_specdec.errors.UserError: --beam-width does not apply to --method pld (it is for: redrafter)

Outside the CLI (a server taking the options per request as JSON fields named like the fields:
``{"method": "pld", "num_draft": 4, ...}``)::

    fields = {k: v for k, v in body.items() if k in MethodOptions.names()}
    options = MethodOptions.from_dict(fields, method=body["method"])  # UserError: one line, for a 400
    drafter = make_drafter(method, **options.drafter_kwargs(method))  # weight-free methods

(draft-model and redrafter also need the loaded models: see ``cli/common.py build_drafter``.) The
messages name the CLI flag (``--num-draft``); ``MethodOptions.flag(name)`` maps a field to it.

How to add an option (one place; generate, chat, bench and ``from_dict`` all get it):

1. Add a field below: ``my_option: int | None = option("--my-option", "What it does (default 3).",
   parse=integer(minimum=1), methods=("my-method",))``. ``parse`` takes the raw value (a string from
   the command line, or a JSON value) and returns the checked value or raises UserError with one
   line; ready-made: :func:`integer`, :func:`integer_or_auto`, :func:`choice`, :func:`text`.
   ``methods`` lists the methods it applies to (given with any other method it is an error).
2. Pass it to the drafter: add it to :meth:`MethodOptions.drafter_kwargs` under your method (or let
   ``cli/common.py build_drafter`` read ``options.my_option`` where loading is involved).
3. Test it (tests/test_method_options.py covers the table as a whole).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from .errors import UserError


def integer(minimum: int = 0, maximum: int | None = None) -> Callable[[str, Any], int]:
    """A parser for an integer in [minimum, maximum] (a string from the command line or a JSON int)."""

    bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"

    def parse(flag: str, value) -> int:
        if isinstance(value, bool) or isinstance(value, float) and not value.is_integer():
            raise UserError(f"{flag} must be an integer {bound}, got {value!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise UserError(f"{flag} must be an integer {bound}, got {value!r}") from None
        if number < minimum or (maximum is not None and number > maximum):
            raise UserError(f"{flag} must be an integer {bound}, got {number}")
        return number

    parse.metavar = "INT"
    return parse


def integer_or_auto(minimum: int = 0) -> Callable[[str, Any], int | str]:
    """A parser for an integer >= minimum or the word 'auto'."""
    as_int = integer(minimum)

    def parse(flag: str, value):
        if value == "auto":
            return "auto"
        try:
            return as_int(flag, value)
        except UserError:
            raise UserError(f"{flag} must be an integer >= {minimum} or 'auto', got {value!r}") from None

    parse.metavar = "INT|auto"
    return parse


def choice(*choices: str) -> Callable[[str, Any], str]:
    def parse(flag: str, value) -> str:
        if value not in choices:
            raise UserError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
        return value

    parse.metavar = "|".join(choices)
    return parse


def text(metavar: str = "TEXT") -> Callable[[str, Any], str]:
    def parse(flag: str, value) -> str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{flag} must be a non-empty string, got {value!r}")
        return value

    parse.metavar = metavar
    return parse


def head_paths(methods: tuple[str, ...]) -> Callable[[str, Any], str]:
    """A parser for ``PATH`` (every method in ``methods``) or ``METHOD=PATH[,METHOD=PATH]``."""

    def parse(flag: str, value) -> str:
        text("PATH")(flag, value)
        if "=" in value.partition(",")[0]:
            for pair in value.split(","):
                method, _, path = pair.partition("=")
                if method not in methods or not path:
                    raise UserError(f"{flag} {value!r}: expected PATH or METHOD=PATH with METHOD one of {', '.join(methods)}")
        return value

    parse.metavar = "PATH|METHOD=PATH"
    return parse


def head_path_for(value: str | None, method: str) -> str | None:
    """The head directory ``--drafter`` gives ``method``.

    >>> head_path_for("eagle=/h/e3", "eagle"), head_path_for("eagle=/h/e3", "redrafter"), head_path_for("/h/rd", "redrafter")
    ('/h/e3', None, '/h/rd')
    """
    if value is None or "=" not in value.partition(",")[0]:
        return value
    return dict(pair.partition("=")[::2] for pair in value.split(",")).get(method)


def head_methods_named(value: str | None) -> set[str]:
    """The methods a ``METHOD=PATH`` ``--drafter`` names (none for a plain PATH)."""
    if value is None or "=" not in value.partition(",")[0]:
        return set()
    return {pair.partition("=")[0] for pair in value.split(",")}


def option(flag: str, help: str, parse: Callable[[str, Any], Any], methods: tuple[str, ...]):
    """A field of MethodOptions (default None: the drafter's default) with its flag and rules."""
    return field(default=None, metadata=dict(flag=flag, help=help, parse=parse, methods=methods))


HEAD_SOURCES = "recycle"  # --sources default: measured faster than pld chains with the shipped head (README)
REDRAFTER_LOOKUP = 2  # --lookup default: measured +0.75 tau on Spec-Bench with the shipped head (README)
HEAD_METHODS = ("redrafter", "eagle")  # methods that load a trained head (--drafter)
BEAM_ONLY = ("beam_width", "beam_length")  # redrafter options of --tree beam
DYNAMIC_ONLY = ("tree_topk", "tree_depth", "tree_size")  # redrafter options of --tree dynamic


@dataclass(frozen=True)
class MethodOptions:
    """The options of every decoding method; None = not given (the method's default)."""

    num_draft: int | None = option("--num-draft", "Drafted tokens per step (pld default 6, draft-model default 4); recycle: the longest context chain (default 16); triforce: the bottom drafter's gamma1 (default 4, 0 = none).",
                                   integer(minimum=0, maximum=64), ("pld", "draft-model", "recycle", "triforce"))
    draft_model: str | None = option("--draft-model", "Draft model directory or store name (draft-model; also mlx-lm's speculative peer in bench).",
                                     text("PATH"), ("draft-model", "triforce"))
    drafter: str | None = option("--drafter", "A trained draft head directory (redrafter, eagle: a ReDrafter head or an EAGLE-3 directory in the published Hugging Face layout; default: the head shipped for the model). METHOD=PATH gives one method its own head (bench: --drafter eagle=DIR keeps redrafter's shipped head); several are comma-separated.",
                                 head_paths(HEAD_METHODS), HEAD_METHODS)
    tree: str | None = option("--tree", "Draft tree shape for redrafter: beam or dynamic (default dynamic, or beam when a beam option is given).",
                              choice("beam", "dynamic"), ("redrafter",))
    beam_width: int | None = option("--beam-width", "redrafter --tree beam: beams kept (W, default 4).",
                                    integer(minimum=1), ("redrafter",))
    beam_length: int | None = option("--beam-length", "redrafter --tree beam: draft tokens per beam (L, default 4).",
                                     integer(minimum=1), ("redrafter",))
    tree_topk: int | None = option("--tree-topk", "redrafter --tree dynamic, eagle: children per node and nodes expanded per round (k, default 4).",
                                   integer(minimum=1), ("redrafter", "eagle"))
    tree_depth: int | None = option("--tree-depth", "redrafter --tree dynamic, eagle: draft rounds (depth, default 5).",
                                    integer(minimum=1), ("redrafter", "eagle"))
    tree_size: int | str | None = option("--tree-size", "redrafter --tree dynamic, recycle, eagle: draft nodes verified per step (n), or 'auto' (default: sized from this device's measured forward cost and the running acceptance).",
                                         integer_or_auto(minimum=1), ("redrafter", "recycle", "eagle"))
    lookup: int | None = option("--lookup", f"redrafter, eagle: also merge up to N prompt-lookup continuations (n-grams the context repeats) into each draft tree; 0 = the head's drafts only (default {REDRAFTER_LOOKUP}).",
                                integer(minimum=0), ("redrafter", "eagle"))
    sources: str | None = option("--sources", f"redrafter --tree dynamic, eagle: the training-free drafts that join the head's tree: recycle (the suffix automaton and Token Recycling's table: one merged tree, every node ranked by its measured acceptance and cut by the tree budget; the head runs on the steps where it measures faster) or pld (--lookup prompt-lookup chains beside the head's budgeted tree). Default: {HEAD_SOURCES}.",
                                 choice("recycle", "pld"), HEAD_METHODS)
    window: int | str | None = option("--window", "Lookahead window width W, or 'auto' (default: sized from the measured forward cost); triforce: recent tokens its cache views always keep (default 128).",
                                      integer_or_auto(minimum=0), ("lookahead", "triforce"))
    ngram: int | None = option("--ngram", "Lookahead n-gram size N (default 4).", integer(minimum=2), ("lookahead",))
    guesses: int | None = option("--guesses", "Lookahead n-grams verified per step G (default 4).", integer(minimum=0), ("lookahead",))
    kv_budget: int | None = option("--budget", "triforce: KV slots the middle level attends to (sinks + retrieved chunks + recent window; default 1024).",
                                   integer(minimum=1), ("triforce",))
    chunk: int | None = option("--chunk", "triforce: tokens per retrieved KV chunk (default 16).", integer(minimum=1), ("triforce",))
    sinks: int | None = option("--sinks", "triforce: first tokens its cache views always keep (default 16).", integer(minimum=0), ("triforce",))
    gamma2: int | str | None = option("--gamma2", "triforce: tokens the middle level drafts per full-cache step (default 6), or 'auto' (the length with the most tokens/s so far).",
                                      integer_or_auto(minimum=1), ("triforce",))
    bottom: str | None = option("--bottom", "triforce: the bottom drafter when no --draft-model is given: pld (default) or recycle (a tree the middle level verifies cheaply).",
                                choice("pld", "recycle"), ("triforce",))

    @classmethod
    def fields(cls) -> tuple[dataclasses.Field, ...]:
        return dataclasses.fields(cls)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.fields())

    @classmethod
    def from_dict(cls, values: dict, method: str | None = None) -> "MethodOptions":
        """Checked options from ``{field name: raw value}`` (None = not given); with ``method``, an
        option that does not apply to it is an error. Unknown names are an error (one line each)."""
        known = {f.name: f for f in cls.fields()}
        unknown = [k for k in values if k not in known]
        if unknown:
            raise UserError(f"unknown method option {unknown[0]!r} (known: {', '.join(known)})")
        parsed = {k: None if v is None else known[k].metadata["parse"](known[k].metadata["flag"], v) for k, v in values.items()}
        options = cls(**parsed)
        if method is not None:
            options.check(method)
        return options

    def given(self) -> dict[str, Any]:
        """The options that were given: ``{field name: value}``."""
        return {f.name: getattr(self, f.name) for f in self.fields() if getattr(self, f.name) is not None}

    def check(self, *methods: str) -> None:
        """UserError (one line) when a given option applies to none of ``methods`` (bench runs
        several); for redrafter also when a beam option meets --tree dynamic or a dynamic one meets
        --tree beam, and when bench's ``redrafter:beam`` meets ``--tree dynamic``."""
        bases = {m.partition(":")[0] for m in methods}
        for f in self.fields():
            if getattr(self, f.name) is not None and not bases & set(f.metadata["methods"]):
                raise UserError(f"{f.metadata['flag']} does not apply to --method {','.join(methods)} "
                                f"(it is for: {', '.join(f.metadata['methods'])})")
        named = head_methods_named(self.drafter)
        if named - bases:
            raise UserError(f"--drafter names a head for {', '.join(sorted(named - bases))}, which --method {','.join(methods)} does not run")
        if self.num_draft == 0 and bases - {"triforce"}:
            raise UserError("--num-draft must be an integer between 1 and 64, got 0 (0 = no bottom drafter is for triforce only)")
        merged = self.sources is not None and self.sources == "recycle"
        if merged and self.lookup is not None:
            raise UserError("--lookup applies to --sources pld (with --sources recycle the suffix automaton proposes the context's continuations)")
        for method in methods:
            variant = method.partition(":")[2]
            if merged and method.startswith("redrafter") and self.redrafter_tree(method) == "beam":
                raise UserError("--sources recycle needs --tree dynamic (beams do not merge into a budgeted tree)")
            if variant and method.startswith("redrafter:") and self.tree not in (None, variant):
                raise UserError(f"{method} contradicts --tree {self.tree}")
            if method == "redrafter":
                tree = self.redrafter_tree(method)
                wrong = [k for k in (DYNAMIC_ONLY if tree == "beam" else BEAM_ONLY) if getattr(self, k) is not None]
                if wrong:
                    flags = ", ".join(self.flag(k) for k in wrong)
                    raise UserError(f"{flags} only appl{'ies' if len(wrong) == 1 else 'y'} to --tree {'dynamic' if tree == 'beam' else 'beam'}")

    def redrafter_tree(self, method: str = "redrafter") -> str:
        """The tree shape: bench's ``redrafter:beam`` variant, else --tree, else dynamic (beam when
        only beam options are given)."""
        variant = method.partition(":")[2]
        if variant:
            return variant
        return self.tree or ("beam" if any(getattr(self, k) is not None for k in BEAM_ONLY) else "dynamic")

    def head_sources(self, method: str) -> str:
        """What joins a head's tree: --sources, else ``pld`` chains for beams or where --lookup is
        given, else the default (:data:`HEAD_SOURCES`)."""
        if self.sources is not None:
            return self.sources
        if self.lookup is not None or (method.startswith("redrafter") and self.redrafter_tree(method) == "beam"):
            return "pld"
        return HEAD_SOURCES

    def for_method(self, method: str) -> "MethodOptions":
        """These options less those that do not apply to ``method`` (bench runs several methods
        with one set of flags: each gets its own)."""
        base = method.partition(":")[0]
        keep = {f.name: getattr(self, f.name) for f in self.fields() if base in f.metadata["methods"]}
        if "drafter" in keep:
            keep["drafter"] = head_path_for(keep["drafter"], base)
        if base == "redrafter":
            unused = DYNAMIC_ONLY if self.redrafter_tree(method) == "beam" else BEAM_ONLY
            keep = {k: (None if k in unused else v) for k, v in keep.items()}
        return MethodOptions(**keep)

    @classmethod
    def flag(cls, name: str) -> str:
        return next(f.metadata["flag"] for f in cls.fields() if f.name == name)

    def drafter_kwargs(self, method: str) -> dict[str, Any]:
        """``make_drafter`` keywords for the weight-free methods and redrafter's tree shape (the
        CLI adds what needs loading: the draft model, the target)."""
        base = method.partition(":")[0]
        if base == "pld":
            return {} if self.num_draft is None else {"num_draft": self.num_draft}
        if base == "draft-model":
            return {"num_draft": 4 if self.num_draft is None else self.num_draft}
        if base == "lookahead":
            return {k: v for k, v in dict(window=self.window, ngram=self.ngram, guesses=self.guesses).items() if v is not None}
        if base == "triforce":
            given = dict(num_draft=self.num_draft, window=self.window, kv_budget=self.kv_budget, chunk=self.chunk,
                         sinks=self.sinks, gamma2=self.gamma2, bottom=self.bottom)
            return {k: v for k, v in given.items() if v is not None}
        if base == "recycle":
            size = self.tree_size
            kwargs = dict(budget=size in (None, "auto"), num_nodes=None if size in (None, "auto") else size,
                          table=method.partition(":")[2] != "context")  # bench's recycle:context: the automaton alone
            return dict(kwargs, max_chain=self.num_draft) if self.num_draft is not None else kwargs
        if base == "eagle":  # EAGLE-2's dynamic tree only, sized by the budget unless --tree-size N
            size = self.tree_size
            shape = dict(head_path=self.drafter, sources=self.head_sources(method), topk=self.tree_topk, depth=self.tree_depth,
                         num_nodes=None if size in (None, "auto") else size, budget=True if size in (None, "auto") else None)
            if shape["sources"] == "pld":
                shape["lookup"] = REDRAFTER_LOOKUP if self.lookup is None else self.lookup
            return {k: v for k, v in shape.items() if v is not None}
        if base == "redrafter":
            tree, sources = self.redrafter_tree(method), self.head_sources(method)
            shape = dict(head_path=self.drafter, sources=sources)
            if sources == "pld":
                shape.update(tree=tree, lookup=REDRAFTER_LOOKUP if self.lookup is None else self.lookup)
            if tree == "beam":
                shape.update(beam_width=self.beam_width, beam_length=self.beam_length)
            else:
                size = self.tree_size
                shape.update(topk=self.tree_topk, depth=self.tree_depth, num_nodes=None if size in (None, "auto") else size,
                             budget=True if size in (None, "auto") else None)
            return {k: v for k, v in shape.items() if v is not None}
        return {}
