"""Qwen3: the Llama block without attention biases, with RMSNorm on each head's queries and keys."""

from __future__ import annotations

from dataclasses import dataclass

import mlx.nn as nn

from . import llama


@dataclass
class ModelArgs(llama.ModelArgs):
    rope_theta: float = 1000000.0


class Attention(llama.Attention):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__(args, layer)
        self.q_norm = nn.RMSNorm(args.head_dim, eps=args.rms_norm_eps)
        self.k_norm = nn.RMSNorm(args.head_dim, eps=args.rms_norm_eps)

    def project(self, x):
        q, k, v = super().project(x)
        return self.q_norm(q), self.k_norm(k), v


class Block(llama.Block):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__(args, layer)
        self.self_attn = Attention(args, layer)


class Model(llama.Model):
    def __init__(self, args: ModelArgs):
        super().__init__(args, backbone=lambda a: llama.LlamaModel(a, block=Block))
