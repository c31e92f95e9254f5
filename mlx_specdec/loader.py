"""Load a model directory with its tokenizer, in the dtype that suits this machine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx

from .errors import UserError
from .models import load_model
from .platform_setup import default_dtype_name
from .tokenizer import Tokenizer

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


@dataclass
class Loaded:
    model: object
    tokenizer: Tokenizer
    config: dict
    path: Path
    dtype: str

    @property
    def max_context(self) -> int | None:
        return self.config.get("max_position_embeddings")


def parse_dtype(name: str | None) -> str:
    name = name or default_dtype_name()
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r} (choose from: {', '.join(DTYPES)})")
    return name


def load(path: str | Path, dtype: str | None = None) -> Loaded:
    dtype = parse_dtype(dtype)
    model, config = load_model(path, DTYPES[dtype])
    return Loaded(model, Tokenizer(path), config, Path(path), dtype)
