"""Our architectures give the same logits as mlx-lm's on the same weights (float32)."""

import importlib

import mlx.core as mx
import pytest
from mlx.utils import tree_flatten

from mlx_specdec.cache import KVCache

from conftest import tiny_config, tiny_model


@pytest.mark.parametrize("arch", ["llama", "llama3-scaled", "mistral", "qwen2", "qwen3"])
def test_same_logits_as_mlx_lm(arch):
    ours = tiny_model(arch, seed=3)
    config = tiny_config(arch)
    name = {"mistral": "llama"}.get(config["model_type"], config["model_type"])  # mlx-lm maps mistral to llama
    module = importlib.import_module(f"mlx_lm.models.{name}")
    theirs = module.Model(module.ModelArgs.from_dict(config))
    theirs.load_weights(tree_flatten(ours.parameters()), strict=True)

    tokens = mx.array([[1, 17, 42, 8, 96, 0, 33, 5, 61]])
    ours_logits, _ = ours(tokens, KVCache(len(ours.layers)))
    their_logits = theirs(tokens)
    assert mx.abs(ours_logits - their_logits).max().item() <= 1e-4

    # and decoding one more token on top of a cache
    cache = KVCache(len(ours.layers))
    ours(tokens, cache)
    step, _ = ours(mx.array([[7]]), cache)
    full = theirs(mx.concatenate([tokens, mx.array([[7]])], axis=1))
    assert mx.abs(step[0, -1] - full[0, -1]).max().item() <= 1e-4
