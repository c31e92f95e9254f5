"""Target models: mlx-lm's own architectures behind the loop's interface, and loading of
mlx-lm format directories.

A model directory holds ``config.json`` and ``*.safetensors`` shards (optionally mlx-lm quantized:
``config["quantization"]`` and ``.scales``/``.biases`` tensors). Any ``model_type`` mlx-lm
implements loads, through mlx-lm's own loader (``sanitize``, quantization), and is wrapped by
:class:`~mlx_specdec.models.mlx_lm_adapter.Target`; architectures that cannot roll back a rejected
draft (recurrent state) or place a tree token at its own position are refused with one line.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_map

from ..errors import UserError
from . import row_padding
from .mlx_lm_adapter import Target


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


def model_classes(config: dict):
    """mlx-lm's (Model, ModelArgs) for a config; UserError for a ``model_type`` it lacks."""
    from mlx_lm.utils import MODEL_REMAPPING

    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type.replace("_", "").isalnum():
        raise UserError(f"unsupported architecture {model_type!r} (config.json has no valid model_type)")
    try:
        arch = importlib.import_module(f"mlx_lm.models.{MODEL_REMAPPING.get(model_type, model_type)}")
    except ImportError:
        raise UserError(f"unsupported architecture {model_type!r} (mlx-lm has no such model)") from None
    return arch.Model, arch.ModelArgs


def build_model(config: dict) -> Target:
    """An uninitialised target for a config dict (random weights, as tests want)."""
    model_class, args_class = model_classes(config)
    try:
        module = model_class(args_class.from_dict(config))
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise UserError(f"unsupported architecture {config.get('model_type')!r}: config.json does not fit mlx-lm's model ({e})") from None
    return Target(module, config)


def check_architecture(config: dict) -> None:
    """UserError unless a model of this config can be a target (cheap: parameters stay lazy)."""
    build_model(config)


def check_safetensors(shard: Path) -> None:
    """A truncated or garbled shard fails here with its name, before a long conversion."""
    try:
        from safetensors import safe_open

        with safe_open(str(shard), framework="numpy") as f:
            f.keys()
        header_len = int.from_bytes(shard.open("rb").read(8), "little")
        header = json.loads(shard.open("rb").read(8 + header_len)[8:])
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if shard.stat().st_size < 8 + header_len + end:
            raise ValueError("file is shorter than its header says (truncated)")
    except Exception as e:
        raise UserError(f"corrupt weight shard {shard.name}: {str(e).splitlines()[0]}") from None


def load_model(path: str | Path, dtype: mx.Dtype | None = None) -> tuple[Target, dict]:
    """Load an mlx-lm format directory; cast float weights to ``dtype`` when given.

    Quantized layers keep their packed weights; only their scales/biases follow ``dtype``.
    """
    from mlx_lm.utils import load_model as mlx_lm_load

    path = Path(path)
    config = read_config(path)
    model_classes(config)
    shards = sorted(path.glob("model*.safetensors"))
    if not shards:
        raise UserError(f"{path} has no model*.safetensors weights")
    for shard in shards:
        check_safetensors(shard)
    try:
        module, config = mlx_lm_load(path, lazy=True, get_model_classes=model_classes)
    except UserError:
        raise
    except RuntimeError as e:  # mx.load on a damaged shard
        raise UserError(f"cannot read weights in {path}: {str(e).splitlines()[0]}") from None
    except ValueError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"weights in {path} do not fit a {config.get('model_type')} model: {first[:200]}") from None
    except (TypeError, KeyError, AttributeError) as e:
        raise UserError(f"unsupported architecture {config.get('model_type')!r}: {path} does not fit mlx-lm's model ({e})") from None
    target = Target(module, config)
    if dtype is not None:
        cast = lambda a: a.astype(dtype) if mx.issubdtype(a.dtype, mx.floating) else a
        module.update(tree_map(cast, module.parameters()))
    mx.eval(module.parameters())
    module.eval()
    if row_padding.applies(target):
        row_padding.install(target, row_padding.cached_plan(target))
    return target, config
