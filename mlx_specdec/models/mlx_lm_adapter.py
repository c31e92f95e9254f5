"""mlx-lm's own model classes as targets: ``model(tokens, cache, mask, positions) -> (logits, hidden)``.

mlx-lm (~125 architectures) derives the mask and the RoPE offset from its cache; a tree needs an
explicit mask and a position per token (DESIGN.md §9). :class:`Target` runs the unchanged mlx-lm
model and reaches in at three points, none of which changes a parameter name:

- the cache: each layer gets a :class:`~mlx_specdec.layer_cache.LayerCache` over our KVCache, whose
  ``make_mask`` returns the tree mask (each layer's own sliding window applied);
- RoPE: every rotary module is given a per-token position path. ``mx.fast.rope`` takes one offset
  per batch row, so the N tree tokens are laid along the batch axis: (1, H, N, hd) -> (N, H, 1, hd)
  with offsets = positions, and back. The chain path (no positions) calls the module unchanged;
- the backbone (the module owning ``layers``): its output is recorded (``hidden``, what the head
  path consumes), and for :meth:`Target.lm_head_logits` it returns a given hidden state, so the
  logits come from the model's own ``__call__`` (tied/untied, softcaps, logit scales).

Queries for a cache that selects by them (TriForce's ``RetrievalView``, ``reads_queries = True``):
the RoPE wrapper records its outputs during such a forward, and the cache's ``layer_views`` gets
``queries(keys)``, which returns the layer's RoPE output that is not ``keys`` (its rotated queries,
whatever order the attention rotates them in; None for a layer without RoPE).

Intermediate hidden states: ``taps=(2, 14, 27)`` records the residual stream entering those layers
(EAGLE-3's low/middle/high features) in the same forward.

Architectures whose cache holds recurrent state (Mamba, Qwen3-Next, other hybrids with an
``ArraysCache``) cannot roll back a rejected branch: :func:`check_rollback` refuses them.
"""

from __future__ import annotations

import os
from typing import Sequence

import mlx.core as mx
import mlx.nn as nn

from ..errors import UserError
from ..layer_cache import ForwardPlan
from . import cpu_attention, cpu_swiglu

_EMBED_NAMES = ("embed_tokens", "wte", "tok_embeddings", "word_embeddings", "embedding")


class TargetArgs:
    """The few config fields the loop and drafters read, the same for every architecture;
    anything else falls through to mlx-lm's ``ModelArgs``."""

    def __init__(self, args, config: dict, num_layers: int, tied: bool):
        self._args = args
        self.config = config  # the model's config.json, as read
        self.model_type = config.get("model_type", getattr(args, "model_type", None))
        self.hidden_size = _first(args, config, "hidden_size", "d_model", "n_embd", "dim")
        self.vocab_size = _first(args, config, "vocab_size")
        self.num_hidden_layers = num_layers
        self.tie_word_embeddings = tied
        self.max_position_embeddings = config.get("max_position_embeddings", getattr(args, "max_position_embeddings", None))

    def __getattr__(self, name):
        return getattr(self._args, name)


def _first(args, config, *names):
    for name in names:
        value = config.get(name, getattr(args, name, None))
        if value is not None:
            return value
    text_config = config.get("text_config") or {}
    for name in names:
        if text_config.get(name) is not None:
            return text_config[name]
    return None


def check_rollback(model: nn.Module, model_type: str) -> list[int | None]:
    """Each layer's sliding window (None = global attention) from the model's own ``make_cache``;
    UserError when a layer's cache is not a plain or sliding-window KV cache."""
    from mlx_lm.models.cache import KVCache, RotatingKVCache

    layers = len(model.layers)
    if not hasattr(model, "make_cache"):
        return [None] * layers
    windows = []
    for cache in model.make_cache():
        if type(cache) is KVCache:
            windows.append(None)
        elif type(cache) is RotatingKVCache and cache.keep == 0:
            windows.append(cache.max_size)
        else:
            raise UserError(
                f"unsupported architecture {model_type!r}: its layers keep a {type(cache).__name__}"
                " (recurrent or hybrid state), which cannot roll back a rejected draft branch"
            )
    if len(windows) != layers:
        raise UserError(f"unsupported architecture {model_type!r}: {len(windows)} caches for {layers} layers")
    return windows


class _Hooks:
    """The per-forward state the wrapped modules read (one per Target)."""

    def __init__(self):
        self.positions: mx.array | None = None  # (N,) per-token positions, tree forwards only
        self.given_hidden: mx.array | None = None  # lm_head_logits: the backbone returns this
        self.hidden: mx.array | None = None  # the backbone's last output
        self.taps: dict[int, mx.array] | None = None  # layer index -> residual stream entering it
        self.rotated: list[mx.array] | None = None  # RoPE outputs since the last cache write (reads_queries caches)
        self.pad_rows: int | None = None  # Linear inputs padded to this many rows (row_padding.py)

    def take_query(self, keys: mx.array) -> mx.array | None:
        """The rotated queries (B, H, N, hd) of the layer about to write ``keys``: its RoPE output
        that is not ``keys``; None when the layer has no RoPE (SmolLM3's NoPE layers)."""
        found = [x for x in self.rotated if x is not keys]
        self.rotated.clear()
        if len(found) > 1:
            raise UserError("this architecture rotates more than one query and one key per layer (split RoPE heads?): "
                            "a cache that selects slots by the query cannot tell its queries apart")
        return found[0] if found else None


def _subclass(obj, mixin, cache={}):
    """Give ``obj`` a subclass of its own class with ``mixin``'s ``__call__`` (parameters unchanged)."""
    cls = type(obj)
    key = (cls, mixin)
    if key not in cache:
        cache[key] = type(f"{mixin.__name__}{cls.__name__}", (mixin, cls), {})
    obj.__class__ = cache[key]


class _PositionedRope:
    """RoPE at per-token positions when the forward has them (tokens on the batch axis)."""

    def __call__(self, x, offset=0, *args, **kwargs):
        out = self._rotate(x, offset, *args, **kwargs)
        if self._hooks.rotated is not None:
            self._hooks.rotated.append(out)
        return out

    def _rotate(self, x, offset, *args, **kwargs):
        positions = self._hooks.positions
        if positions is None:
            return super().__call__(x, offset, *args, **kwargs)
        B, H, L, D = x.shape
        if L != positions.shape[-1]:
            raise ValueError(f"RoPE over {L} tokens in a forward of {positions.shape[-1]}")
        if B == 1 and positions.ndim == 1:
            out = super().__call__(x.transpose(2, 1, 0, 3), positions, *args, **kwargs)
            return out.transpose(2, 1, 0, 3)
        offsets = mx.broadcast_to(positions, (B, L)).reshape(-1)
        flat = x.transpose(0, 2, 1, 3).reshape(B * L, H, 1, D)
        out = super().__call__(flat, offsets, *args, **kwargs)
        return out.reshape(B, L, H, D).transpose(0, 2, 1, 3)


class _TappedLayer:
    def __call__(self, x, *args, **kwargs):
        taps = self._hooks.taps
        if taps is not None and self._index in taps:
            taps[self._index] = x
        return super().__call__(x, *args, **kwargs)


class _Backbone:
    def __call__(self, *args, **kwargs):
        hooks = self._hooks
        if hooks.given_hidden is not None:
            return hooks.given_hidden
        hooks.hidden = super().__call__(*args, **kwargs)
        return hooks.hidden


def _rope_modules(model: nn.Module) -> list[nn.Module]:
    from mlx_lm.models import rope_utils

    rope_classes = tuple(c for c in vars(rope_utils).values() if isinstance(c, type) and issubclass(c, nn.Module))
    found = {}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, (nn.RoPE, *rope_classes)) or leaf in ("rope", "rotary_emb"):
            found[id(module)] = module
    return list(found.values())


class Target:
    """An mlx-lm model behind the loop's interface (see the module docstring).

    tokens: (B, L) or (L,) ids. cache: a :class:`~mlx_specdec.cache.KVCache` or None.
    mask: None (causal) or bool (L, past + L) / (B, 1, L, past + L), True = may attend.
    positions: None (``past + arange(L)``) or absolute positions (L,) / (B, L).
    Returns logits (B, L, vocab) and hidden (B, L, D), the backbone's output that the head consumes.
    Parameters, ``update``, ``load_weights`` ... are the mlx-lm model's own (same names).
    """

    def __init__(self, model: nn.Module, config: dict):
        model_type = config.get("model_type")
        self.windows = check_rollback(model, model_type)
        self.module = model
        self.row_plan: dict[int, int] = {}  # tokens in a forward -> rows its Linears run at (row_padding.py)
        self._hooks = hooks = _Hooks()
        self.backbone = self._find_backbone(model)
        ropes = _rope_modules(model)
        if not ropes:
            raise UserError(
                f"unsupported architecture {model_type!r}: no rotary position embedding to place tree tokens at"
                " their own positions (learned or absolute positions are not supported)"
            )
        for rope in ropes:
            if type(rope).__name__ == "DynamicNTKScalingRoPE":
                raise UserError(f"unsupported architecture {model_type!r}: dynamic NTK RoPE depends on the sequence length")
            _subclass(rope, _PositionedRope)
            rope._hooks = hooks
        for i, layer in enumerate(model.layers):
            _subclass(layer, _TappedLayer)
            layer._hooks, layer._index = hooks, i
        _subclass(self.backbone, _Backbone)
        self.backbone._hooks = hooks
        self._embed = next((getattr(self.backbone, n) for n in _EMBED_NAMES if isinstance(getattr(self.backbone, n, None), nn.Module)), None)
        self.lm_head = next((m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == "lm_head"), None)
        self.args = TargetArgs(model.args, config, len(model.layers), tied=self.lm_head is None)
        if os.environ.get("MLX_SPECDEC_ATTENTION") != "mlx":  # "mlx": keep mlx-lm's sdpa (to compare)
            cpu_attention.install(model)
            cpu_swiglu.install(model)

    @staticmethod
    def _find_backbone(model: nn.Module) -> nn.Module:
        first = model.layers[0]  # some models' ``layers`` is a slice of the backbone's (pipeline stages)
        for _, module in model.named_modules():
            layers = module.get("layers") if module is not model else None
            if isinstance(layers, list) and any(layer is first for layer in layers):
                return module
        raise UserError(f"unsupported architecture {type(model).__module__}: no backbone module holds its layers")

    # the loop's interface ---------------------------------------------------------------

    @property
    def layers(self):
        return self.module.layers

    def __call__(self, tokens, cache=None, mask=None, positions=None, taps: Sequence[int] | None = None):
        """(logits, hidden), or (logits, hidden, {layer: residual entering it}) with ``taps``."""
        logits, hidden, tapped = self._forward(tokens, cache, mask, positions, taps)
        return (logits, hidden) if taps is None else (logits, hidden, tapped)

    def hidden(self, tokens, cache=None, mask=None, positions=None):
        """The backbone's output only (B, L, D): the head is built lazily and never evaluated."""
        return self._forward(tokens, cache, mask, positions, None)[1]

    def lm_head_logits(self, hidden: mx.array) -> mx.array:
        """Logits (..., vocab) of hidden states (..., D) through the model's own head path."""
        shape = hidden.shape
        flat = hidden.reshape(1, -1, shape[-1])
        self._hooks.given_hidden = flat
        try:
            logits = self.module(mx.zeros(flat.shape[:2], mx.int32))
        finally:
            self._hooks.given_hidden = None
        return logits.reshape(*shape[:-1], logits.shape[-1])

    def embed(self, tokens: mx.array) -> mx.array:
        if self._embed is None:
            raise UserError(f"{self.args.model_type}: no token embedding found")
        return self._embed(tokens)

    def _forward(self, tokens, cache, mask, positions, taps):
        tokens = tokens[None] if tokens.ndim == 1 else tokens
        n = tokens.shape[1]
        hooks = self._hooks
        views = None
        if cache is not None:
            if mask is not None and mask.dtype != mx.bool_:
                mask = mask > 0
            if positions is not None:
                positions = positions.astype(mx.int32)
            plan = ForwardPlan(cache.offset, n, mask, positions)
            if getattr(cache, "reads_queries", False):
                hooks.rotated = []
                views = cache.layer_views(plan, self.windows, queries=hooks.take_query)
            else:
                views = cache.layer_views(plan, self.windows)
        elif mask is not None or positions is not None:
            raise ValueError("a tree mask or positions need a cache")
        hooks.positions = positions if cache is not None else None
        hooks.pad_rows = self.row_plan.get(n) if cache is not None and tokens.shape[0] == 1 else None
        hooks.taps = {i: None for i in taps} if taps is not None else None
        try:
            with cpu_swiglu.active():
                logits = self.module(tokens, cache=views)
            hidden, tapped = hooks.hidden, hooks.taps
        finally:
            hooks.positions, hooks.hidden, hooks.taps, hooks.rotated, hooks.pad_rows = None, None, None, None, None
        if cache is not None:
            cache.advance(n)
        return logits, hidden, tapped

    # the mlx-lm model's own module API (parameters, update, load_weights, eval, ...) -------------

    def __getattr__(self, name):
        if name == "module":
            raise AttributeError(name)
        return getattr(self.module, name)
