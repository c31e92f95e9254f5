"""Qwen3: the Llama block without attention biases, with RMSNorm on each head's queries and keys."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.nn as nn

from . import llama
from .common import apply_rope, attention


@dataclass
class ModelArgs(llama.ModelArgs):
    rope_theta: float = 1000000.0


class Attention(llama.Attention):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__(args, layer)
        self.q_norm = nn.RMSNorm(args.head_dim, eps=args.rms_norm_eps)
        self.k_norm = nn.RMSNorm(args.head_dim, eps=args.rms_norm_eps)

    def __call__(self, x, cache, mask, positions):
        B, L, _ = x.shape
        q = self.q_norm(self.q_proj(x).reshape(B, L, self.n_heads, -1)).transpose(0, 2, 1, 3)
        k = self.k_norm(self.k_proj(x).reshape(B, L, self.n_kv_heads, -1)).transpose(0, 2, 1, 3)
        v = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        offset = cache.offset if cache is not None else 0
        rope = (self.head_dim, self.rope_base, self._rope_freqs, offset, positions, self.rope_traditional)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        out = attention(q, k, v, self.scale, mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class Block(llama.Block):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__(args, layer)
        self.self_attn = Attention(args, layer)


class Model(llama.Model):
    def __init__(self, args: ModelArgs):
        super().__init__(args, backbone=lambda a: llama.LlamaModel(a, block=Block))
