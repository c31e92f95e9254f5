"""Tiny random-weight models built in the tests (no downloads)."""

from __future__ import annotations

import mlx.core as mx
import pytest

from mlx_specdec.models import build_model

TINY = dict(
    hidden_size=64,
    num_hidden_layers=2,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    rms_norm_eps=1e-5,
    vocab_size=97,
    max_position_embeddings=2048,
)

ARCHS = {
    "llama": dict(model_type="llama", tie_word_embeddings=True),
    "llama3-scaled": dict(
        model_type="llama",
        tie_word_embeddings=False,
        rope_theta=500000.0,
        rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=64),
    ),
    "mistral": dict(model_type="mistral", tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=True),
    "qwen3": dict(model_type="qwen3", head_dim=32, rope_theta=1000000.0, tie_word_embeddings=True),
}


def tiny_config(arch: str = "llama", **overrides) -> dict:
    return {**TINY, **ARCHS[arch], **overrides}


def tiny_model(arch: str = "llama", seed: int = 0, scale: float = 1.0, **overrides):
    """A float32 random model. ``scale`` multiplies the weights: larger = peakier predictions,
    so a drafter sees a mix of accepted and rejected tokens."""
    mx.random.seed(seed)
    model = build_model(tiny_config(arch, **overrides))
    if scale != 1.0:
        from mlx.utils import tree_map

        model.update(tree_map(lambda a: a * scale, model.parameters()))
    mx.eval(model.parameters())
    return model


@pytest.fixture(params=list(ARCHS))
def arch(request):
    return request.param


def generate_ids(model, drafter, prompt, max_tokens=40, params=None, eos=(), session=None):
    """Run the one loop; returns (emitted ids, steps)."""
    from mlx_specdec.generate import Session
    from mlx_specdec.sampling import SamplingParams

    session = session or Session(model)
    steps = list(session.generate(prompt, drafter, params or SamplingParams(), max_tokens, eos))
    return [t for s in steps for t in s.tokens], steps
