"""The bench's results file: what machine and software ran it (``make_meta``), and writing and
resuming it (``save_report`` / ``load_report``: one JSON object, one line per result row, so a long
run can be resumed with ``--resume`` only when its settings agree)."""

from __future__ import annotations

import json
import os
import platform
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import mlx.core as mx

from .errors import UserError


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def make_meta(model_path, dtype: str, settings: dict, argv: Sequence[str] = ()) -> dict:
    from . import __version__
    from .platform_setup import blas_in_use, processor_name

    return dict(
        machine=dict(platform=platform.platform(), processor=processor_name(), arch=platform.machine(),
                     cores=os.cpu_count(), python=platform.python_version()),
        backend=str(mx.default_device()), dtype=dtype, blas=blas_in_use(), model=str(model_path),
        versions={"mlx": _version("mlx") or mx.__version__, "mlx_lm": _version("mlx-lm"), "mlx_specdec": __version__},
        command=" ".join(shlex.quote(a) for a in argv), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        settings=settings,
    )


SETTINGS_THAT_MUST_MATCH = ("model", "dtype", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed")


def load_report(path: Path, settings: dict) -> dict:
    """A results file to resume; its settings must agree with this run's."""
    try:
        report = json.loads(Path(path).read_text())
        rows, old = report["results"], report["meta"]["settings"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot resume from {path}: not a bench results file ({e})") from None
    differ = [k for k in SETTINGS_THAT_MUST_MATCH if old.get(k, 0.0 if k == "min_p" else None) != settings.get(k)]  # min_p: files from before it existed
    if differ:
        k = differ[0]
        raise UserError(f"cannot resume {path}: it was run with {k}={old.get(k)!r}, this run has {settings.get(k)!r}")
    return report


def save_report(path: Path, report: dict) -> None:
    """Write atomically (a temporary file renamed over ``path``), one line per result row."""
    path = Path(path)
    parts = [f'"{k}": {json.dumps(v, indent=1)}' for k, v in report.items() if k != "results"]
    rows = ",\n".join(json.dumps(r) for r in report.get("results", []))
    text = "{\n" + ",\n".join(parts + [f'"results": [\n{rows}\n]']) + "\n}\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
