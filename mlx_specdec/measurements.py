"""Per-device measurements of a model (the tree budget's forward costs, the row-padding plan):
what they depend on (:func:`machine_key`), where they are cached (:func:`measurement_file`) and
measuring each only once (:func:`measured_once`).

    measured_once(measurement_file(f"{machine_key(target)}-tree-v6"), measure, read)
    ->  <models_home>/.tree-costs/llama-c35a1d625c79-float32-Devicecpu0-x86_64-a94a5a-openblas-allt-tree-v6.json
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
from pathlib import Path

import mlx.core as mx


def machine_key(target) -> str:
    """What a forward's speed depends on: model, dtype, device and CPU model, BLAS and its threads
    (no version). The CPU model is in it because two x86-64 machines sharing a store (an NFS home)
    can differ 2.5x in a forward: 41 ms on a 2-core AMD EPYC, 102 ms on a 2-core Intel Xeon."""
    from .drafters.redrafter_head import target_fingerprint
    from .platform_setup import blas_in_use, processor_name

    args = target.args
    dtype = str(target.embed(mx.array([0])).dtype).replace("mlx.core.", "")
    ident = json.dumps([args.model_type, args.hidden_size, len(target.layers), args.vocab_size, target_fingerprint(target)])
    model_hash = hashlib.sha256(ident.encode()).hexdigest()[:12]
    blas = blas_in_use()
    if blas == "openblas":  # the cost of a wide forward depends on how many threads share it
        blas += f"-{os.environ.get('OPENBLAS_NUM_THREADS') or 'all'}t"
    cpu = hashlib.sha256(processor_name().encode()).hexdigest()[:6]
    device = f"{mx.default_device()}-{platform.machine()}-{cpu}-{blas}".replace(" ", "").replace(",", "")
    return f"{args.model_type}-{model_hash}-{dtype}-{device}".replace("(", "").replace(")", "")


def measurement_file(name: str, store: Path | None = None) -> Path:
    """Where a per-device measurement of a model is cached: ``<store or models_home()>/.tree-costs/<name>.json``."""
    from .store import models_home

    return Path(store if store is not None else models_home()) / ".tree-costs" / f"{name}.json"


def measured_once(path: Path, measure, read):
    """A per-device measurement cached as JSON at ``path``: ``read(saved)`` of the file when it
    reads, else ``measure()`` (a JSON-able dict), written there atomically, and ``read`` of that.
    A read-only store measures again next time."""
    from .store import write_json_atomic

    try:
        return read(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    saved = measure()
    with contextlib.suppress(OSError):
        write_json_atomic(path, saved)
    return read(saved)
