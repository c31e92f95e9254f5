"""Pytest plugin (``-p mlx_specdec._pytest_blas``, set in pyproject): OpenBLAS for the test run.

Loaded while pytest parses its options, before output capture starts and before MLX is imported,
so the re-execution with OpenBLAS preloaded keeps the terminal. Speed matters for the tests that
run the real default model; results are the same with either BLAS.
"""

from .platform_setup import ensure_fast_blas

ensure_fast_blas()
