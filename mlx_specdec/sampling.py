"""Sampling settings and the one function that turns logits into the target's distribution.

Plain sampling and every speculative acceptance rule use :func:`process_probs`, so "the target's
distribution" means exactly the same thing everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .errors import UserError


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0  # 0 = off
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
        if not (0 <= self.min_p <= 1):
            raise UserError(f"min-p must be in [0, 1], got {self.min_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# The target's distribution is mlx-lm's (``mlx_lm.sample_utils.make_sampler``), so a user moving
# from mlx-lm samples what they sampled there: the filters act on the log-probabilities at
# temperature 1, in mlx-lm's order (top-p, then min-p, then top-k); the temperature then scales
# what is left, and the softmax renormalises:
#     probs = softmax(top_k(min_p(top_p(log_softmax(logits)))) / temperature)
# top-p keeps every token whose strictly-more-likely mass is below p (the one crossing p stays,
# and so do its ties); min-p keeps tokens with p(x) >= min_p * max p; top-k keeps the k largest.


def process_probs(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Logits (..., V) -> the target's distribution (..., V) float64, in numpy (the reference the
    device path :func:`device_probs` is tested against).

    Worked example, logits log([0.5, 0.3, 0.15, 0.05]), temperature 0.5, top-p 0.9: the mass above
    each token is [0, 0.5, 0.8, 0.95], so top-p keeps the first three; temperature 0.5 squares the
    kept probabilities: [0.25, 0.09, 0.0225] / 0.3625 = [0.6897, 0.2483, 0.0621, 0].
    """
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logprobs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    keep = np.ones_like(logprobs, dtype=bool)
    if params.top_p < 1:
        probs = np.exp(logprobs)
        order = np.argsort(-logprobs, axis=-1, kind="stable")
        sorted_lp = np.take_along_axis(logprobs, order, axis=-1)
        mass_above = np.cumsum(np.take_along_axis(probs, order, axis=-1), axis=-1) - np.take_along_axis(probs, order, axis=-1)
        kept_sorted = mass_above < params.top_p
        threshold = np.take_along_axis(sorted_lp, kept_sorted.sum(axis=-1, keepdims=True) - 1, axis=-1)
        keep &= logprobs >= threshold
    if params.min_p > 0:
        keep &= logprobs >= logprobs.max(axis=-1, keepdims=True) + np.log(params.min_p)
    if params.top_k and params.top_k < logprobs.shape[-1]:
        masked = np.where(keep, logprobs, -np.inf)
        kth = -np.sort(-masked, axis=-1)[..., params.top_k - 1 : params.top_k]
        keep &= masked >= kth
    z = np.where(keep, logprobs / params.temperature, -np.inf)
    z = z - z.max(axis=-1, keepdims=True)
    probs = np.exp(z)
    return probs / probs.sum(axis=-1, keepdims=True)


def device_logprobs(logits: mx.array, params: SamplingParams) -> mx.array:
    """Logits (..., V) -> log of the target's distribution (..., V) float32, lazy, on the device,
    with mlx-lm's own filter functions (so it is mlx-lm's distribution by construction)."""
    from mlx_lm.sample_utils import apply_min_p, apply_top_k, apply_top_p

    logits = logits.astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    if 0 < params.top_p < 1:
        logprobs = apply_top_p(logprobs, params.top_p)
    if params.min_p > 0:
        logprobs = apply_min_p(logprobs, params.min_p)
    if 0 < params.top_k < logprobs.shape[-1]:
        logprobs = apply_top_k(logprobs, params.top_k)
    z = logprobs * (1.0 / params.temperature)
    return z - mx.logsumexp(z, axis=-1, keepdims=True)


class DeviceRows:
    """The target's distribution for the rows of ``logits`` (N, V), computed on the device and
    brought to the host one row at a time, only for the rows a verifier reads (the accepted path
    and the node after it: 2-4 rows where a tree has 8-24)."""

    def __init__(self, logits: mx.array, params: SamplingParams):
        self.logits, self.params = logits, params
        self.rows: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.logits.shape[0]

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i not in self.rows:
            self.rows[i] = np.exp(np.array(device_logprobs(self.logits[i], self.params)).astype(np.float64))
        return self.rows[i]


_MASK = 0xFFFFFFFF


def _mix(x: np.ndarray) -> np.ndarray:
    """murmur3's 32-bit finaliser, elementwise on uint32 (multiplications wrap)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


class Noise:
    """Gumbel noise keyed by (seed, position, token): one fixed number per token of the vocabulary
    at each position of the text, whichever method draws it and however often.

    The target's sampled token after a context is ``argmax(log p + noise.row(position))`` over
    the vocabulary (Gumbel-max: distributed exactly as p, and independent across positions and
    seeds). So with the same seed every method emits the same tokens as ``ar`` (a draft is
    accepted when it equals the token the target samples there), and a drafter that knows its
    guesses' probabilities can aim at the target's sample instead of its argmax (Daliri, Musco &
    Suresh 2024, drafter-invariant speculative decoding).

    Worked example: ``Noise(0).at(5, [7, 8])`` and ``Noise(0).row(5, 10)[[7, 8]]`` are the same two
    numbers; ``Noise(1).at(5, [7, 8])`` are two others.
    """

    def __init__(self, seed: int):
        self.key = int(_mix(np.array([seed & _MASK], dtype=np.uint32))[0])
        self._rows: dict[tuple[int, int], np.ndarray] = {}

    def at(self, position: int, tokens) -> np.ndarray:
        """Gumbel(0, 1) noise (len(tokens),) float64 for ``tokens`` at ``position``."""
        with np.errstate(over="ignore"):
            salt = _mix(np.array([(self.key ^ (position * 0x9E3779B1)) & _MASK], dtype=np.uint32))
            bits = _mix(np.asarray(tokens, dtype=np.uint32) * np.uint32(0x27D4EB2F) + salt)
        u = (bits.astype(np.float64) + 0.5) / 2.0**32  # in (0, 1)
        return -np.log(-np.log(u))

    def row(self, position: int, vocab_size: int) -> np.ndarray:
        """The noise of the whole vocabulary at ``position`` (vocab_size,), kept for a few positions."""
        key = (position, vocab_size)
        if key not in self._rows:
            if len(self._rows) > 64:
                self._rows.clear()
            self._rows[key] = self.at(position, np.arange(vocab_size))
        return self._rows[key]


# How close a filter's test may come to its bound before the host path defers to the device path
# (float32 cumulative sums in mlx-lm's top-p differ from a float64 sum by ~1e-6 here).
_BOUNDARY = 1e-4


def sampled_token(logits: np.ndarray, params: SamplingParams, noise_row: np.ndarray) -> int | None:
    """The target's sample ``argmax(log p + noise_row)`` over the tokens mlx-lm's filters keep, from
    one row of raw ``logits`` (V,), on the host without sorting the vocabulary; None when a
    filter's decision is too close to its bound to be sure (the caller then uses the device path).

    Every filter keeps the tokens at or above a log-probability threshold, so the best-scoring
    token either passes all of them or is dropped together with every token no more likely than
    itself: take the argmax, test it, and on a drop mask what it rules out and take the next.
    Testing one token is a sum over the vocabulary (top-p: the mass strictly more likely than it
    must be below ``top_p``), not a sort: ~0.5 ms per row here against ~6 ms for mlx-lm's sorted
    top-p on MLX's CPU backend.

    Worked example: log p = log([0.5, 0.3, 0.15, 0.05]), temperature 1, top-p 0.7, noise
    [0, 0, 0, 5]: scores [-0.69, -1.20, -1.90, 2.00]; token 3 has 0.95 of the mass above it
    (>= 0.7: dropped, and so is every token at most as likely); token 0 has 0 above it: kept -> 0.
    """
    x = np.asarray(logits, dtype=np.float64)
    peak = x.max()
    probs = np.exp(x - peak)
    total = probs.sum()
    logprobs = x - peak - np.log(total)
    probs /= total
    score = logprobs / params.temperature + noise_row
    floor = logprobs.max() + np.log(params.min_p) if params.min_p > 0 else -np.inf
    while True:
        c = int(np.argmax(score))
        lp = logprobs[c]
        if not np.isfinite(score[c]):
            return None
        drop = False
        if params.top_p < 1:
            above = probs[logprobs > lp].sum()
            if abs(above - params.top_p) < _BOUNDARY:
                return None
            drop = above >= params.top_p
        if not drop and params.min_p > 0:
            if abs(lp - floor) < _BOUNDARY:
                return None
            drop = lp < floor
        if not drop and 0 < params.top_k < len(x):
            higher, ties = int((logprobs > lp).sum()), int((logprobs == lp).sum())
            if higher < params.top_k < higher + ties:
                return None  # ties straddle the k-th place: which of them stay is the sort's choice
            drop = higher >= params.top_k
        if not drop:
            return c
        score[logprobs <= lp] = -np.inf


class CoupledRows:
    """The target's sampled token after each row of ``logits`` (N, V): ``argmax`` of the target's
    log-distribution plus the noise at that row's next position ``positions[i]``, computed only for
    the rows a verifier reads. On the CPU backend (host memory is the device's) the row is decided
    on the host by :func:`sampled_token`; elsewhere, or where that defers, the filters run on the
    device (:func:`device_logprobs`) and the row comes over processed."""

    def __init__(self, logits: mx.array, params: SamplingParams, noise: Noise, positions):
        self.logits, self.params, self.noise = logits, params, noise
        self.positions = np.asarray(positions, dtype=np.int64)
        self.tokens: dict[int, int] = {}
        self.host = mx.default_device() == mx.cpu

    def __len__(self) -> int:
        return self.logits.shape[0]

    def __getitem__(self, i: int) -> int:
        i = int(i)
        if i not in self.tokens:
            noise = self.noise.row(int(self.positions[i]), self.logits.shape[-1])
            token = sampled_token(np.array(self.logits[i].astype(mx.float32)), self.params, noise) if self.host else None
            if token is None:
                logprobs = np.array(device_logprobs(self.logits[i], self.params)).astype(np.float64)
                token = int(np.argmax(logprobs + noise))
            self.tokens[i] = token
        return self.tokens[i]


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token id from a 1-D distribution (inverse CDF on one uniform draw)."""
    cdf = np.cumsum(probs)
    return int(min(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"), len(probs) - 1))
