"""The target's forward in PyTorch, for reading distillation data faster on a CPU.

Optional (``pip install -e '.[train]'``): the app itself stays MLX. On this project's 2-core x86
CPU, MLX's CPU backend evaluates exponentials and other element-wise work one value at a time
(about 70 M exp/s against numpy's 1.7 G/s), so attention's softmax and the vocabulary's
logsumexp dominate a long teacher-forced read, while PyTorch's CPU kernels are vectorised and
threaded. ``scripts/distill_throughput.py`` measures both readers with the same command.

:class:`TorchTarget` rebuilds the target from its loaded MLX weights (the same float32 values, no
second download) for the dense architectures whose layers are Llama's: ``llama`` (SmolLM2,
Llama 2/3 without RoPE scaling), ``mistral`` (full attention) and ``qwen2`` (q/k/v biases). It
computes exactly what :class:`~mlx_specdec.models.mlx_lm_adapter.Target` does for right-padded
causal rows (no cache): the final normed hidden state, the residual stream entering chosen layers
(EAGLE-3's taps) and the logits, to float32 rounding. Any other architecture is refused with a
one-line error naming ``--reader mlx``.

Shapes: ids (B, W) int; hidden (B, W, D); taps {layer: (B, W, D)}; logits (..., V).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from ..errors import UserError

SUPPORTED = ("llama", "mistral", "qwen2")


def import_torch():
    """``import torch`` with RTLD_DEEPBIND, so PyTorch's own MKL serves its matmuls: the app
    preloads OpenBLAS for MLX (``platform_setup``), whose BLAS symbols would otherwise take over
    PyTorch's and cost it 3x (measured on the default model: 507 tok/s without the preload,
    200 with it, 600 with it and DEEPBIND). Safe to call again: a loaded module is returned as is."""
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"]
    flags = sys.getdlopenflags()
    if hasattr(os, "RTLD_DEEPBIND"):  # Linux; macOS has no preload to escape
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
    try:
        import torch
    finally:
        sys.setdlopenflags(flags)
    return torch


def torch_available() -> bool:
    try:
        import_torch()
    except ImportError:
        return False
    return True


def torch_unsupported_reason(target) -> str | None:
    """Why ``target`` cannot be read by PyTorch here (None when it can)."""
    if not torch_available():
        return "PyTorch is not installed (pip install -e '.[train]')"
    config = target.args.config
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        return f"the PyTorch reader covers {', '.join(SUPPORTED)}, not {kind!r}"
    scaling = config.get("rope_scaling") or {}
    if scaling and (scaling.get("type") or scaling.get("rope_type")) not in (None, "default"):
        return f"the PyTorch reader has no {scaling.get('type') or scaling.get('rope_type')!r} RoPE scaling"
    if config.get("sliding_window") and config.get("use_sliding_window", kind == "mistral"):
        return "the PyTorch reader has no sliding-window attention"
    if config.get("mlp_bias") or config.get("rope_traditional"):
        return "the PyTorch reader has no MLP biases or traditional RoPE"
    return None


def reader_for(reader: str, loaded):
    """The PyTorch reader that ``--reader`` asks for, or None (MLX reads): ``torch`` insists (a
    one-line error where it cannot), ``auto`` takes it on a CPU when it applies (float32 weights,
    a supported architecture, PyTorch installed), ``mlx`` never. ``loaded``: the loader's Loaded."""
    import mlx.core as mx

    if reader == "mlx":
        return None
    if reader == "torch":
        return TorchTarget(loaded.model)
    on_cpu = mx.default_device().type == mx.DeviceType.cpu
    if on_cpu and loaded.dtype == "float32" and torch_unsupported_reason(loaded.model) is None:
        return TorchTarget(loaded.model)
    return None


class TorchTarget:
    """The target's causal forward in float32 PyTorch (CPU), from its MLX weights."""

    def __init__(self, target, threads: int | None = None):
        reason = torch_unsupported_reason(target)
        if reason:
            raise UserError(f"cannot read with PyTorch: {reason}; use --reader mlx")
        import mlx.core as mx
        from mlx.utils import tree_flatten

        torch = import_torch()
        torch.set_num_threads(threads or os.cpu_count() or 1)
        self.torch = torch
        config = target.args.config
        self.heads = config["num_attention_heads"]
        self.kv_heads = config.get("num_key_value_heads") or self.heads
        D = config["hidden_size"]
        self.head_dim = config.get("head_dim") or D // self.heads
        self.eps = float(target.args.rms_norm_eps)  # mlx-lm's ModelArgs: its defaults where config.json is silent
        self.num_layers = len(target.layers)

        def tensor(value):
            return torch.from_numpy(np.array(value.astype(mx.float32)))

        weights = {name: tensor(v) for name, v in tree_flatten(target.module.parameters())}
        prefix = "model." if "model.embed_tokens.weight" in weights else ""
        self.embed_w = weights[f"{prefix}embed_tokens.weight"]
        self.norm_w = weights[f"{prefix}norm.weight"]
        self.head_w = weights.get("lm_head.weight", self.embed_w)
        self.layers = []
        for i in range(self.num_layers):
            p = f"{prefix}layers.{i}."
            get = lambda n: weights.get(p + n)  # noqa: E731
            self.layers.append(dict(
                ln1=get("input_layernorm.weight"), ln2=get("post_attention_layernorm.weight"),
                q=get("self_attn.q_proj.weight"), k=get("self_attn.k_proj.weight"), v=get("self_attn.v_proj.weight"),
                o=get("self_attn.o_proj.weight"), qb=get("self_attn.q_proj.bias"), kb=get("self_attn.k_proj.bias"),
                vb=get("self_attn.v_proj.bias"), ob=get("self_attn.o_proj.bias"),
                gate=get("mlp.gate_proj.weight"), up=get("mlp.up_proj.weight"), down=get("mlp.down_proj.weight"),
            ))
        theta = float(target.args.rope_theta)
        self.inv_freq = 1.0 / theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim)

    # -- pieces ------------------------------------------------------------------------------
    def _norm(self, x, w):
        torch = self.torch
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def _rope(self, x, cos, sin):  # x (B, H, W, hd): non-traditional (half-split) rotation
        half = self.head_dim // 2
        x1, x2 = x[..., :half], x[..., half:]
        return self.torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    @staticmethod
    def _linear(x, w, b=None):
        import torch.nn.functional as F

        return F.linear(x, w, b)

    # -- the forward ---------------------------------------------------------------------------
    def forward(self, ids: np.ndarray, taps: Sequence[int] = ()):
        """(hidden (B, W, D) final-normed, {layer: residual entering it (B, W, D)}) as torch tensors."""
        torch = self.torch
        import torch.nn.functional as F

        with torch.inference_mode():
            tokens = torch.from_numpy(np.asarray(ids, dtype=np.int64))
            B, W = tokens.shape
            x = F.embedding(tokens, self.embed_w)
            angles = torch.arange(W, dtype=torch.float32)[:, None] * self.inv_freq[None]
            cos, sin = angles.cos(), angles.sin()
            tapped = {}
            hd, H, KV = self.head_dim, self.heads, self.kv_heads
            for i, L in enumerate(self.layers):
                if i in taps:
                    tapped[i] = x
                h = self._norm(x, L["ln1"])
                q = self._linear(h, L["q"], L["qb"]).view(B, W, H, hd).transpose(1, 2)
                k = self._linear(h, L["k"], L["kb"]).view(B, W, KV, hd).transpose(1, 2)
                v = self._linear(h, L["v"], L["vb"]).view(B, W, KV, hd).transpose(1, 2)
                q, k = self._rope(q, cos, sin), self._rope(k, cos, sin)
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=KV != H)
                x = x + self._linear(a.transpose(1, 2).reshape(B, W, H * hd), L["o"], L["ob"])
                h = self._norm(x, L["ln2"])
                x = x + self._linear(F.silu(self._linear(h, L["gate"])) * self._linear(h, L["up"]), L["down"])
            return self._norm(x, self.norm_w), tapped

    def logits(self, hidden):
        """Logits (..., V) of final hidden states (..., D) through the output layer."""
        with self.torch.inference_mode():
            return self._linear(hidden, self.head_w)

    def read_rows(self, ids: np.ndarray, spans: Sequence[tuple[int, int]], top_k: int):
        """Per row b, for positions spans[b] = (lo, hi): (hidden (n, D) float16, top-k ids (n, K)
        int32 and probabilities (n, K) float16, or None, None when top_k is 0, argmax (n,) int32),
        numpy arrays, as ``teacher_forced._read_batch`` stores them."""
        torch = self.torch
        hidden, _ = self.forward(ids)
        out = []
        with torch.inference_mode():
            for b, (lo, hi) in enumerate(spans):
                h = hidden[b, lo:hi]
                logits = self.logits(h)
                labels = logits.argmax(-1)
                kid = probs = None
                if top_k:
                    top, kid = logits.topk(top_k, dim=-1)
                    probs = (top - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
                    kid, probs = kid.to(torch.int32).numpy(), probs.numpy().astype(np.float16)
                out.append((h.numpy().astype(np.float16), kid, probs, labels.to(torch.int32).numpy()))
        return out
