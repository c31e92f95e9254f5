"""Qwen2 / Qwen2.5: the Llama block with biases on the q, k, v projections (not on o)."""

from __future__ import annotations

from dataclasses import dataclass

from . import llama


@dataclass
class ModelArgs(llama.ModelArgs):
    rope_theta: float = 1000000.0
    tie_word_embeddings: bool = False

    def __post_init__(self):
        self.attention_bias, self.attention_out_bias = True, False
        super().__post_init__()


Model = llama.Model
