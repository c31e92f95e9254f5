"""Matrix products at the row count the CPU's BLAS runs fastest: a forward over n tokens pads its
Linear inputs to more rows where that is measured cheaper.

On the MLX CPU backend every Linear is one BLAS ``sgemm`` with as many rows as the forward has
tokens, and OpenBLAS's cost is far from monotone in that row count. Measured on a 2-core AMD EPYC
(OpenBLAS 0.3.21, pthreads), all of SmolLM2-135M's matrix products, float32::

    rows      1     2     3     4     8     12    16
    ms      35.7  40.1  43.9  51.1  56.5  89.3  46.4

so a 12-token tree verify spends twice as long in its matrix products as a 16-token one. Here
every Linear of such a forward (tied embeddings' ``as_linear`` included) runs on its input
padded with zero rows to the cheaper count, and the extra output rows are dropped. Attention,
norms and the cache see only the real tokens, so it differs from padding the tree itself
(:meth:`~mlx_specdec.tree.Tree.padded`), which also pays the padded tokens' attention.

Exact: a row's output does not depend on the other rows of the product (up to the BLAS kernel's
summation order, which differs between row counts with or without padding, as it already does
between a one-token and an n-token forward).

The plan (rows -> padded rows) is measured once per (model, dtype, device, BLAS and its threads)
by timing the model's own Linear layers (:func:`measure_row_costs`), and cached as JSON next to
the tree costs (``<models_home>/.tree-costs/<machine key>-rows-v1.json``). Only forwards of fewer than
``MAX_ROWS`` tokens are padded, on the CPU in float32 (GPU kernels and quantized products have no
such cliffs measured).
"""

from __future__ import annotations

import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

MAX_ROWS = 16  # pad row counts below this, to at most this
GAIN = 0.03  # pad only where the padded product is at least 3% cheaper
SAMPLED_LAYERS = 8  # time the Linears of this many layers (evenly spaced) plus the output head
PLAN_VERSION = "rows-v1"


def plan_from_costs(costs: dict[int, float], gain: float = GAIN) -> dict[int, int]:
    """rows -> padded rows, from seconds per row count (1 .. MAX_ROWS): each row count goes to the
    cheapest count at least as large, where that is ``gain`` cheaper. Example: costs 1: 10, 2: 11,
    3: 14, 4: 12 -> {3: 4} (1 and 2 stay; 4 costs more than 2, so 2 stays)."""
    plan = {}
    sizes = sorted(costs)
    for m in sizes:
        best = min((n for n in sizes if n >= m), key=lambda n: (costs[n], n))
        if best != m and costs[best] < (1 - gain) * costs[m]:
            plan[m] = best
    return plan


def _linears(target) -> list[tuple[object, int]]:
    """(callable, input width) for the Linear layers of SAMPLED_LAYERS evenly spaced layers and the
    output head (a tied embedding's ``as_linear``)."""
    layers = target.layers
    picked = sorted({int(i) for i in np.linspace(0, len(layers) - 1, min(SAMPLED_LAYERS, len(layers)))})
    found = []
    for i in picked:
        for _, module in layers[i].named_modules():
            if isinstance(module, nn.Linear):
                found.append((module, module.weight.shape[1]))
    if target.lm_head is not None and isinstance(target.lm_head, nn.Linear):
        found.append((target.lm_head, target.lm_head.weight.shape[1]))
    elif target._embed is not None and hasattr(target._embed, "as_linear"):
        found.append((target._embed.as_linear, target._embed.weight.shape[1]))
    return found


def measure_row_costs(target, max_rows: int = MAX_ROWS, repeats: int = 4) -> dict[int, float]:
    """Seconds of the sampled Linear layers (see :func:`_linears`) on 1 .. ``max_rows`` rows: the
    fastest of ``repeats`` rounds after a warm-up, row counts round-robin (as the tree costs)."""
    linears = _linears(target)
    dtype = target.embed(mx.array([0])).dtype
    inputs = {(m, width): mx.random.normal((1, m, width), key=mx.random.key(m)).astype(dtype)
              for m in range(1, max_rows + 1) for width in {w for _, w in linears}}
    mx.eval(list(inputs.values()))
    times = {m: [] for m in range(1, max_rows + 1)}
    for round_ in range(repeats + 1):
        for m in times:
            start = time.perf_counter()
            mx.eval([f(inputs[m, width]) for f, width in linears])
            if round_:
                times[m].append(time.perf_counter() - start)
    return {m: float(min(t)) for m, t in times.items()}


def applies(target) -> bool:
    """Row padding is measured and used on the CPU, for float32 weights that are not quantized."""
    quantized = (nn.QuantizedLinear, nn.QuantizedEmbedding)
    return (mx.default_device() == mx.cpu and target.embed(mx.array([0])).dtype == mx.float32
            and not any(isinstance(m, quantized) for _, m in target.module.named_modules()))


def cached_plan(target, store: Path | None = None) -> dict[int, int]:
    """The row plan for this (model, dtype, device, BLAS), measured on first use and cached."""
    from ..measurements import machine_key, measured_once, measurement_file

    def measure() -> dict:
        costs = measure_row_costs(target)
        return {"row_costs_s": costs, "plan": plan_from_costs(costs)}

    path = measurement_file(f"{machine_key(target)}-{PLAN_VERSION}", store)
    return measured_once(path, measure, lambda saved: {int(k): int(v) for k, v in saved["plan"].items()})


class _RowPadded:
    """A Linear (``__call__``) or embedding (``as_linear``) whose input rows are padded to
    ``self._hooks.pad_rows`` during a forward that asks for it."""

    def _padded(self, fn, x):
        rows = self._hooks.pad_rows
        if rows is None or x.ndim != 3 or x.shape[0] != 1 or x.shape[1] >= rows:
            return fn(x)
        n = x.shape[1]
        return fn(mx.pad(x, [(0, 0), (0, rows - n), (0, 0)]))[:, :n]

    def __call__(self, x, *args, **kwargs):
        if args or kwargs or not isinstance(self, nn.Linear):
            return super().__call__(x, *args, **kwargs)
        return self._padded(super().__call__, x)

    def as_linear(self, x):
        return self._padded(super().as_linear, x)


def install(target, plan: dict[int, int]) -> None:
    """Route the Linear layers (and a tied embedding's ``as_linear``) of ``target`` through
    :class:`_RowPadded`; ``target.row_plan = plan`` tells each forward how far to pad."""
    from .mlx_lm_adapter import _subclass

    for _, module in target.module.named_modules():
        if isinstance(module, nn.Linear) or (module is target._embed and hasattr(module, "as_linear")):
            _subclass(module, _RowPadded)
            module._hooks = target._hooks
    target.row_plan = dict(plan)
