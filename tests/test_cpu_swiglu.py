"""SwiGLU by powers of two (the CPU's fast path) against mlx-lm's, and where it applies."""

import importlib

import mlx.core as mx
import numpy as np
from mlx_lm.models.activations import swiglu as mlx_lm_swiglu
from mlx_lm.models.cache import make_prompt_cache

from mlx_specdec.generate import Session
from mlx_specdec.models import cpu_swiglu
from mlx_specdec.tree import Tree

from conftest import tiny_model


def test_matches_mlx_lm():
    mx.random.seed(0)
    gate, x = mx.random.normal((4, 1000)) * 6, mx.random.normal((4, 1000))
    ours, theirs = np.array(cpu_swiglu.swiglu(gate, x)), np.array(mlx_lm_swiglu(gate, x))
    assert np.allclose(ours, theirs, rtol=2e-6, atol=1e-7)


def test_by_hand_and_at_the_limits():
    gate = mx.array([0.0, 1.0, -1.0, 100.0, -100.0, float("inf"), -float("inf")])
    out = np.array(cpu_swiglu.swiglu(gate, mx.ones_like(gate)))
    sig1 = 1 / (1 + np.exp(-1.0))
    assert np.allclose(out[:5], [0.0, sig1, -(1 - sig1), 100.0, 0.0], atol=1e-6)
    theirs = np.array(mlx_lm_swiglu(gate, mx.ones_like(gate)))
    assert out[5] == theirs[5] == np.inf and np.isnan(out[6]) and np.isnan(theirs[6])  # as mlx-lm's


def test_installed_only_for_the_apps_own_forwards(monkeypatch):
    target = tiny_model("llama", seed=0)
    module = importlib.import_module(type(target.module).__module__)
    assert getattr(module.swiglu, "_cpu_swiglu", False)
    calls = []
    monkeypatch.setattr(cpu_swiglu, "swiglu", lambda *a: calls.append(1) or mlx_lm_swiglu(*a))
    mx.eval(Session(target).forward(Tree.chain(3, [4, 5]))[0])
    assert calls  # the app's forward: the fast path
    calls.clear()
    mx.eval(target.module(mx.array([[1, 2, 3]]), cache=make_prompt_cache(target.module)))
    assert not calls  # mlx-lm's own forward (a peer run): mlx-lm's own path
