"""Llama family (Llama 2/3, Mistral, SmolLM/SmolLM2) as a function of (tokens, cache, mask, positions).

Parameter names match Hugging Face / mlx-lm checkpoints, so an mlx-lm directory loads unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn

from .common import BaseArgs, apply_rope, attention, rope_frequencies


@dataclass
class ModelArgs(BaseArgs):
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    rms_norm_eps: float
    vocab_size: int
    head_dim: int | None = None
    num_key_value_heads: int | None = None
    max_position_embeddings: int = 4096
    attention_bias: bool = False
    attention_out_bias: bool | None = None  # None: same as attention_bias
    mlp_bias: bool = False
    rope_theta: float = 10000.0
    rope_traditional: bool = False
    rope_scaling: dict | None = None
    rope_parameters: dict | None = None  # transformers >= 5 puts rope_theta and scaling here
    tie_word_embeddings: bool = True

    def __post_init__(self):
        self.num_key_value_heads = self.num_key_value_heads or self.num_attention_heads
        self.head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if self.rope_parameters:
            self.rope_theta = self.rope_parameters.get("rope_theta", self.rope_theta)
            if self.rope_parameters.get("rope_type", "default") != "default":
                self.rope_scaling = self.rope_scaling or self.rope_parameters
        if self.attention_out_bias is None:
            self.attention_out_bias = self.attention_bias


class Attention(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        dim, hd = args.hidden_size, args.head_dim
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = args.num_attention_heads, args.num_key_value_heads, hd
        self.scale = hd**-0.5
        self.q_proj = nn.Linear(dim, self.n_heads * hd, bias=args.attention_bias)
        self.k_proj = nn.Linear(dim, self.n_kv_heads * hd, bias=args.attention_bias)
        self.v_proj = nn.Linear(dim, self.n_kv_heads * hd, bias=args.attention_bias)
        self.o_proj = nn.Linear(self.n_heads * hd, dim, bias=args.attention_out_bias)
        self.rope_base, self.rope_traditional = args.rope_theta, args.rope_traditional
        self._rope_freqs = rope_frequencies(hd, args.rope_theta, args.rope_scaling)

    def project(self, x):
        """Queries, keys, values per head: (B, L, H, hd), (B, L, H_kv, hd), (B, L, H_kv, hd)."""
        B, L, _ = x.shape
        q = self.q_proj(x).reshape(B, L, self.n_heads, -1)
        k = self.k_proj(x).reshape(B, L, self.n_kv_heads, -1)
        return q, k, self.v_proj(x).reshape(B, L, self.n_kv_heads, -1)

    def __call__(self, x, cache, mask, positions):
        B, L, _ = x.shape
        q, k, v = (a.transpose(0, 2, 1, 3) for a in self.project(x))
        offset = cache.offset if cache is not None else 0
        rope = (self.head_dim, self.rope_base, self._rope_freqs, offset, positions, self.rope_traditional)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if cache is not None:
            k, v = cache.update(self.layer, k, v, queries=q)
        out = attention(q, k, v, self.scale, mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.up_proj = nn.Linear(args.hidden_size, args.intermediate_size, bias=args.mlp_bias)
        self.down_proj = nn.Linear(args.intermediate_size, args.hidden_size, bias=args.mlp_bias)

    def __call__(self, x):
        return self.down_proj(nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, args: ModelArgs, layer: int):
        super().__init__()
        self.self_attn = Attention(args, layer)
        self.mlp = MLP(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x, cache, mask, positions):
        h = x + self.self_attn(self.input_layernorm(x), cache, mask, positions)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, args: ModelArgs, block=Block):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [block(args, i) for i in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, tokens, cache, mask, positions):
        h = self.embed_tokens(tokens)
        for layer in self.layers:
            h = layer(h, cache, mask, positions)
        if cache is not None:
            cache.advance(tokens.shape[1])
        return self.norm(h)


class Model(nn.Module):
    """``model(tokens, cache, mask, positions) -> (logits, hidden)``.

    tokens: (B, L) or (L,) ids. cache: a :class:`~mlx_specdec.cache.KVCache` or None.
    mask: None (causal) or bool (L, past + L) / (B, 1, L, past + L), True = may attend.
    positions: None (``past + arange(L)``) or absolute positions (L,) / (B, L).
    Returns logits (B, L, vocab) and hidden (B, L, hidden_size), the normed state fed to the LM head.
    """

    def __init__(self, args: ModelArgs, backbone=LlamaModel):
        super().__init__()
        self.args = args
        self.model = backbone(args)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    @property
    def layers(self):
        return self.model.layers

    def __call__(self, tokens, cache=None, mask=None, positions=None):
        hidden = self.hidden(tokens, cache, mask, positions)
        return self.lm_head_logits(hidden), hidden

    def hidden(self, tokens, cache=None, mask=None, positions=None):
        """The final hidden states only (B, L, hidden_size): a prefill that needs the logits of
        its last token alone skips the vocabulary projection of all the others."""
        return self.model(tokens[None] if tokens.ndim == 1 else tokens, cache, mask, positions)

    def lm_head_logits(self, hidden):
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(hidden)
        return self.lm_head(hidden)

    def embed(self, tokens):
        return self.model.embed_tokens(tokens)

    def sanitize(self, weights: dict) -> dict:
        weights = {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}
        if self.args.tie_word_embeddings:
            weights = {k: v for k, v in weights.items() if not k.startswith("lm_head.")}
        return weights
