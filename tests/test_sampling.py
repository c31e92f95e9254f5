"""The target's distribution is mlx-lm's make_sampler's: hand-worked values, device = numpy, and
a chi-square test against tokens mlx-lm's own sampler draws."""

import math

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.sampling import DeviceRows, Noise, SamplingParams, device_logprobs, process_probs, sampled_token

P4 = np.log([0.5, 0.3, 0.15, 0.05])


def test_top_p_then_temperature_by_hand():
    # mass above each token: 0, 0.5, 0.8, 0.95 -> top-p 0.9 keeps three; T = 0.5 squares them
    probs = process_probs(P4, SamplingParams(temperature=0.5, top_p=0.9))
    np.testing.assert_allclose(probs, np.array([0.25, 0.09, 0.0225, 0]) / 0.3625, rtol=1e-9)


def test_top_p_acts_before_the_temperature():
    # at T = 2 the tempered distribution is flatter, but top-p 0.7 still cuts on the T = 1 masses
    # (0, 0.5, 0.8, 0.95): two tokens, then sqrt: [0.7071, 0.5477] / 1.2548
    probs = process_probs(P4, SamplingParams(temperature=2.0, top_p=0.7))
    s = math.sqrt(0.5) + math.sqrt(0.3)
    np.testing.assert_allclose(probs, [math.sqrt(0.5) / s, math.sqrt(0.3) / s, 0, 0], rtol=1e-9)


def test_min_p_and_top_k_by_hand():
    # min-p 0.25: keep p >= 0.125 -> [0.5, 0.3, 0.15]; top-k 2 then keeps [0.5, 0.3]; T = 1
    probs = process_probs(P4, SamplingParams(temperature=1.0, min_p=0.25, top_k=2))
    np.testing.assert_allclose(probs, [0.625, 0.375, 0, 0], rtol=1e-9)
    probs = process_probs(P4, SamplingParams(temperature=1.0, min_p=0.25))
    np.testing.assert_allclose(probs, np.array([0.5, 0.3, 0.15, 0]) / 0.95, rtol=1e-9)


SETTINGS = [
    dict(temperature=0.7, top_p=0.9),
    dict(temperature=1.3, top_p=0.8, top_k=5),
    dict(temperature=0.9, min_p=0.05),
    dict(temperature=1.0, top_k=3),
    dict(temperature=2.0, top_p=0.95, min_p=0.02, top_k=6),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_device_rows_equal_the_numpy_reference(settings):
    logits = np.array(mx.random.normal((5, 40), key=mx.random.key(1))) * 2.5
    params = SamplingParams(**settings)
    rows = DeviceRows(mx.array(logits), params)
    expected = process_probs(logits, params)
    for i in (3, 0, 4):
        np.testing.assert_allclose(rows[i], expected[i], atol=2e-6)
        assert ((rows[i] > 0) == (expected[i] > 0)).all()
    assert set(rows.rows) == {0, 3, 4}  # only the rows read were brought over


@pytest.mark.parametrize("settings", SETTINGS)
def test_matches_mlx_lm_make_sampler(settings):
    """Tokens drawn by mlx-lm's sampler follow our distribution (chi-square, pooled cells)."""
    from mlx_lm.sample_utils import make_sampler

    V, draws = 12, 20000
    logits = mx.random.normal((V,), key=mx.random.key(7)) * 2.0
    params = SamplingParams(**settings)
    expected = process_probs(np.array(logits), params)
    sampler = make_sampler(params.temperature, params.top_p, min_p=params.min_p, top_k=params.top_k)
    logprobs = logits - mx.logsumexp(logits)
    mx.random.seed(3)
    tokens = np.array(sampler(mx.broadcast_to(logprobs, (draws, V))))
    counts = np.bincount(tokens, minlength=V)
    assert counts[expected == 0].sum() == 0  # filtered tokens are never drawn by mlx-lm either
    live = expected > 0
    stat = (((counts[live] - draws * expected[live]) ** 2) / (draws * expected[live])).sum()
    dof = max(int(live.sum()) - 1, 1)
    assert stat < dof + 6 * math.sqrt(2 * dof) + 10  # far inside the chi-square tail at these dofs


def test_the_old_order_is_caught():
    """Negative control: temperature first, then top-k and top-p on the tempered distribution (this
    project's rule before it followed mlx-lm) gives another distribution, and the test sees it."""
    from mlx_lm.sample_utils import make_sampler

    V, draws, t, top_p, top_k = 12, 20000, 1.3, 0.8, 5
    logits = np.array(mx.random.normal((V,), key=mx.random.key(7)) * 2.0, dtype=np.float64)
    p = np.exp(logits / t - (logits / t).max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    kept = np.zeros(V, dtype=bool)
    kept[order[:top_k]] = True
    kept[order] &= (np.cumsum(p[order]) - p[order]) < top_p
    old = np.where(kept, p, 0) / p[kept].sum()
    mx.random.seed(3)
    tokens = np.array(make_sampler(t, top_p, top_k=top_k)(mx.broadcast_to(mx.array(logits - np.log(np.exp(logits).sum())), (draws, V))))
    counts = np.bincount(tokens, minlength=V)
    live = old > 0
    stat = (((counts[live] - draws * old[live]) ** 2) / (draws * old[live])).sum()
    dof = int(live.sum()) - 1
    assert stat > dof + 6 * math.sqrt(2 * dof) + 10


def test_host_sample_by_hand():
    # scores log p + noise = [-0.69, -1.20, -1.90, 2.00]: token 3 has 0.95 above it (top-p 0.7
    # drops it and everything less likely), token 0 has nothing above it and is the sample
    noise = np.array([0.0, 0.0, 0.0, 5.0])
    assert sampled_token(P4, SamplingParams(temperature=1.0, top_p=0.7), noise) == 0
    assert sampled_token(P4, SamplingParams(temperature=1.0), noise) == 3  # no filter: the noise wins
    assert sampled_token(P4, SamplingParams(temperature=1.0, top_k=2), noise) == 0
    assert sampled_token(P4, SamplingParams(temperature=1.0, min_p=0.2), np.array([0.0, 1.0, 0.0, 5.0])) == 1


def test_host_sample_defers_at_a_filter_bound():
    # top-p 0.8 = exactly the mass above token 2: a float32 cumulative sum could land either side
    assert sampled_token(P4, SamplingParams(temperature=1.0, top_p=0.8), np.array([0.0, 0.0, 9.0, 0.0])) is None
    # top-k 2 with tokens 1 and 2 tied for second place: the device's sort decides
    tied = np.log([0.4, 0.25, 0.25, 0.1])
    assert sampled_token(tied, SamplingParams(temperature=1.0, top_k=2), np.array([0.0, 0.0, 9.0, 0.0])) is None


@pytest.mark.parametrize("settings", SETTINGS + [dict(temperature=0.7)])
def test_host_sample_equals_the_device_path(settings):
    """The host path picks the token the device path (mlx-lm's filters) plus the same noise picks,
    on rows from flat to peaked, at a real vocabulary's size."""
    rng = np.random.default_rng(5)
    params, noise, V = SamplingParams(**settings), Noise(11), 4096
    decided = 0
    for i in range(120):
        logits = (rng.standard_normal(V) * rng.uniform(0.5, 8.0)).astype(np.float32)
        row = noise.row(i, V)
        token = sampled_token(logits, params, row)
        expected = int(np.argmax(np.array(device_logprobs(mx.array(logits), params)).astype(np.float64) + row))
        if token is not None:
            assert token == expected
            decided += 1
    assert decided >= 115
