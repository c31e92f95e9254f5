"""Per-machine choices: the BLAS on Linux CPU and the default dtype.

MLX's Linux CPU wheel links the reference BLAS, whose float32 matmul cost grows linearly with the
number of rows: verifying 16 draft tokens then costs 16 forwards and speculation cannot pay.
OpenBLAS (Debian ``libopenblas0-pthread``) fixes that when it is loaded before MLX. Since the
dynamic loader reads ``LD_PRELOAD`` only at start-up, :func:`ensure_fast_blas` re-executes the
process once with it set, before MLX is imported.
"""

from __future__ import annotations

import os
import platform
import sys

OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libblas.so.3",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_MARK = "MLX_SPECDEC_BLAS"  # set once we have re-executed, so it happens at most once


def processor_name() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Xeon(R) Processor @ 2.60GHz", "Apple M2"...)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def find_openblas() -> str | None:
    return next((p for p in OPENBLAS_CANDIDATES if os.path.exists(p)), None)


def blas_in_use() -> str:
    """'openblas', 'reference' (Linux without OpenBLAS preloaded), or 'accelerate' (macOS)."""
    if sys.platform == "darwin":
        return "accelerate"
    return "openblas" if "openblas" in os.environ.get("LD_PRELOAD", "") else "reference"


def ensure_fast_blas() -> str | None:
    """On Linux, re-exec this process with OpenBLAS preloaded if it is installed and not loaded.

    Returns a one-line warning when OpenBLAS is missing (the caller shows it once), else None.
    Does nothing when ``MLX_SPECDEC_NO_BLAS_REEXEC`` is set or on other systems.
    """
    if sys.platform != "linux" or os.environ.get("MLX_SPECDEC_NO_BLAS_REEXEC"):
        return None
    if blas_in_use() == "openblas" or os.environ.get(_MARK):
        return None
    library = find_openblas()
    if library is None:
        return (
            "OpenBLAS not found: MLX's CPU matmuls use the slow reference BLAS, so speculative decoding "
            "gains little. Install it with: sudo apt-get install libopenblas0-pthread"
        )
    env = dict(os.environ, LD_PRELOAD=":".join(filter(None, [library, os.environ.get("LD_PRELOAD")])))
    env[_MARK] = "1"
    try:
        os.execve(sys.executable, sys.orig_argv, env)  # orig_argv keeps "-m module" and flags
    except OSError:
        return None
    return None


def default_dtype_name() -> str:
    """float16 on Apple Silicon and GPUs; float32 on CPUs, where half-precision matmuls are slow."""
    import mlx.core as mx

    if sys.platform == "darwin" and platform.machine() == "arm64":
        return "float16"
    return "float16" if mx.default_device().type == mx.DeviceType.gpu else "float32"
