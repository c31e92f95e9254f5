"""Target models chosen by ``model_type``, and loading of mlx-lm format directories.

A model directory holds ``config.json`` and ``*.safetensors`` shards (optionally mlx-lm 4/8-bit
quantized: ``config["quantization"] = {"group_size", "bits"}`` and ``.scales``/``.biases`` tensors).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from ..errors import UserError
from . import llama, qwen2, qwen3

ARCHITECTURES = {
    "llama": llama,
    "mistral": llama,
    "smollm": llama,
    "smollm2": llama,
    "qwen2": qwen2,
    "qwen3": qwen3,
}


def read_config(path: Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise UserError(f"{path} is not a model directory: it has no config.json")
    try:
        return json.loads(config_file.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{config_file} is not valid JSON ({e})") from None


def build_model(config: dict) -> nn.Module:
    """An uninitialised model for a config dict (random weights, as tests want)."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UserError(f"unsupported architecture {model_type!r} (supported: {known})")
    arch = ARCHITECTURES[model_type]
    return arch.Model(arch.ModelArgs.from_dict(config))


def load_weights(path: Path) -> dict[str, mx.array]:
    shards = sorted(Path(path).glob("*.safetensors"))
    if not shards:
        raise UserError(f"{path} has no *.safetensors weights")
    weights = {}
    for shard in shards:
        try:
            weights.update(mx.load(str(shard)))
        except Exception as e:  # mlx raises RuntimeError/ValueError with a long text
            raise UserError(f"cannot read weights {shard.name}: {str(e).splitlines()[0]}") from None
    return weights


def load_model(path: str | Path, dtype: mx.Dtype | None = None) -> tuple[nn.Module, dict]:
    """Load an mlx-lm format directory; cast float weights to ``dtype`` when given.

    Quantized layers keep their packed weights; only their scales/biases follow ``dtype``.
    """
    path = Path(path)
    config = read_config(path)
    model = build_model(config)
    weights = model.sanitize(load_weights(path))
    quantization = config.get("quantization")
    if quantization:
        nn.quantize(
            model,
            group_size=quantization["group_size"],
            bits=quantization["bits"],
            mode=quantization.get("mode", "affine"),
            class_predicate=lambda p, m: hasattr(m, "to_quantized") and f"{p}.scales" in weights,
        )
    expected = {k for k, _ in tree_flatten(model.parameters())}
    missing = sorted(expected - weights.keys())
    unexpected = sorted(weights.keys() - expected)
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise UserError(f"weights in {path} do not fit a {config.get('model_type')} model: {detail}")
    model.load_weights(list(weights.items()))
    if dtype is not None:
        cast = lambda a: a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a
        model.update(tree_map(cast, model.parameters()))
    mx.eval(model.parameters())
    model.eval()
    return model, config
