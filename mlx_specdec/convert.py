"""Hugging Face checkpoint -> MLX directory, through mlx-lm's converter, with clear errors.

A local directory works offline; a repo id is downloaded with huggingface-hub when a network is
there. The result is loaded back with our own loader, so a directory that converts also runs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import UserError
from .models import check_architecture, check_safetensors

DTYPES = ("float16", "bfloat16", "float32")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja", "chat_template.json", "generation_config.json")


def _check_local(path: Path) -> dict:
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face model directory: it has no config.json")
    try:
        config = json.loads((path / "config.json").read_text())
    except ValueError as e:
        raise UserError(f"{path / 'config.json'} is not valid JSON ({e})") from None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise UserError(f"{path} is missing weight shard {missing[0]} (listed in model.safetensors.index.json)")
    if not list(path.glob("*.safetensors")):
        raise UserError(f"{path} has no *.safetensors weights (pickled .bin weights are not loaded, for safety)")
    for shard in path.glob("*.safetensors"):
        check_safetensors(shard)
    return config


def convert_hf(
    hf_path: str,
    mlx_path: str | Path,
    dtype: str | None = None,
    quantize: bool = False,
    q_bits: int = 4,
    q_group_size: int = 64,
    overwrite: bool = False,
) -> Path:
    from mlx_lm.convert import convert as mlx_lm_convert

    mlx_path = Path(mlx_path)
    if dtype is not None and dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r} (choose from: {', '.join(DTYPES)})")
    if quantize and q_bits not in (2, 3, 4, 5, 6, 8):
        raise UserError(f"--q-bits must be one of 2, 3, 4, 5, 6, 8, got {q_bits}")
    local = Path(hf_path).expanduser()
    if local.exists():
        config = _check_local(local)
        hf_path = str(local)
    elif hf_path.startswith((".", "/", "~")) or hf_path.count("/") != 1:
        raise UserError(f"{hf_path} does not exist (give a local directory or a Hugging Face repo id like org/name)")
    else:
        config = None
    if config is not None:
        check_architecture(config)
    if mlx_path.exists():
        if not overwrite:
            raise UserError(f"{mlx_path} already exists (choose another --mlx-path or pass --overwrite)")
        shutil.rmtree(mlx_path)
    try:
        mlx_lm_convert(hf_path, str(mlx_path), quantize=quantize, q_group_size=q_group_size if quantize else None,
                       q_bits=q_bits if quantize else None, dtype=dtype)
    except UserError:
        raise
    except Exception as e:
        shutil.rmtree(mlx_path, ignore_errors=True)
        raise UserError(f"conversion of {hf_path} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if local.exists():  # keep the tokenizer exactly as shipped (transformers may rewrite it on save)
        for name in TOKENIZER_FILES:
            if (local / name).is_file():
                shutil.copyfile(local / name, mlx_path / name)
    from .models import load_model

    load_model(mlx_path)  # raises UserError if the result does not fit our architectures
    return mlx_path
