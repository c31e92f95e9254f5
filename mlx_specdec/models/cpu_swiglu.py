"""SwiGLU for the MLX CPU backend with the sigmoid's exponential computed as a power of two.

mlx-lm's ``swiglu(gate, x) = silu(gate) * x`` calls MLX's scalar ``sigmoid`` on the CPU (~70 M
values/s on a 2-core x86 machine, against ~270 M/s for the same through ``mx.power(2, ·)``). A
tree verify of 16 tokens through SmolLM2-135M's 30 layers evaluates 16 x 1,536 x 30 = 737 K of
them: 10.4 ms here against 2.7 ms (``silu(g) = g / (1 + 2^(-g log2 e))``).

Exact up to float32 rounding (max relative difference 3e-7 against mlx-lm's on 737 K normal
values; at g = +inf it gives +inf and at g = -inf NaN, as mlx-lm's does). Every method, ``ar``
included, runs the same MLP, so greedy equality with ``ar`` is unaffected.

Used only inside the app's own forwards (:func:`active`, set by the target's forward), on the CPU,
for float32 inputs: mlx-lm run as a peer keeps its own path.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading

import mlx.core as mx

LOG2_E = 1.4426950408889634
_state = threading.local()


@contextlib.contextmanager
def active():
    """Within this block (one app forward, this thread), the wrapped swiglu takes the fast path."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def swiglu(gate: mx.array, x: mx.array) -> mx.array:
    """silu(gate) * x, with silu(g) = g / (1 + 2^(-g log2 e))."""
    return gate / (1.0 + mx.power(2.0, gate * -LOG2_E)) * x


def _wrap(original):
    @functools.wraps(original)
    def fast_swiglu(gate, x):
        if (getattr(_state, "on", False) and gate.dtype == mx.float32 and x.dtype == mx.float32
                and mx.default_device() == mx.cpu):
            return swiglu(gate, x)
        return original(gate, x)

    fast_swiglu._cpu_swiglu = True
    return fast_swiglu


def install(model) -> None:
    """Route the ``swiglu`` of ``model``'s mlx-lm modules through :func:`swiglu` inside app
    forwards. Idempotent: a module already switched stays as it is."""
    from mlx_lm.models import activations

    for name in {type(m).__module__ for m in model.modules()}:
        module = sys.modules.get(name)
        if getattr(module, "swiglu", None) is activations.swiglu:
            module.swiglu = _wrap(activations.swiglu)
