"""Sampling settings and the one function that turns logits into the target's distribution.

Plain sampling and every speculative acceptance rule use :func:`process_probs`, so "the target's
distribution" means exactly the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    seed: int | None = None

    def __post_init__(self):
        if not (self.temperature >= 0) or self.temperature > 100:
            raise UserError(f"temperature must be between 0 and 100, got {self.temperature}")
        if not (0 < self.top_p <= 1):
            raise UserError(f"top-p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise UserError(f"top-k must be >= 0, got {self.top_k}")
        if self.seed is not None and self.seed < 0:
            raise UserError(f"the seed must be an integer >= 0, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def process_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Logits (..., V) -> probabilities (..., V) float64 after temperature, top-k, then top-p.

    top-k keeps the k largest logits; top-p then keeps the smallest most-likely set whose mass
    reaches p (the token that crosses p is kept). Ties at the cut are broken by token id.
    """
    z = np.asarray(logits, dtype=np.float64) / params.temperature
    z = z - z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=-1, keepdims=True)
    if params.top_k or params.top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_probs = np.take_along_axis(probs, order, axis=-1)
        keep = np.ones_like(sorted_probs, dtype=bool)
        if params.top_k:
            keep[..., params.top_k :] = False
        if params.top_p < 1:
            mass_before = np.cumsum(sorted_probs, axis=-1) - sorted_probs
            keep &= mass_before < params.top_p
        sorted_probs = np.where(keep, sorted_probs, 0.0)
        probs = np.zeros_like(probs)
        np.put_along_axis(probs, order, sorted_probs, axis=-1)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token id from a 1-D distribution (inverse CDF on one uniform draw)."""
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(probs) - 1))
