"""Lookahead decoding: the window's mask by hand, one forward = one Jacobi iteration, losslessness,
and the pool does get drafts accepted."""

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.cache import KVCache
from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.lookahead import AUTO_LADDER, AUTO_REPEATS, Lookahead, pick_window

from conftest import generate_ids, tiny_model

ROOT = 5
WINDOW = [[10, 11, 12], [20, 21, 22]]  # level 0, level 1; three columns

# W = 3, N = 3, G = 2. The pool holds three continuations of the root; G = 2 keeps the two most
# recent, (1, 2) and (1, 4), which share their first token: 4 tree nodes, then 6 window tokens.
#            r  1  2  4 00 01 02 10 11 12      (xy = window level x, column y)
EXPECTED_MASK = [
    [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # r
    [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],  # 1
    [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],  # 2
    [1, 1, 0, 1, 0, 0, 0, 0, 0, 0],  # 4
    [1, 0, 0, 0, 1, 0, 0, 0, 0, 0],  # 00
    [1, 0, 0, 0, 1, 1, 0, 0, 0, 0],  # 01
    [1, 0, 0, 0, 1, 1, 1, 0, 0, 0],  # 02
    [1, 0, 0, 0, 1, 0, 0, 1, 0, 0],  # 10
    [1, 0, 0, 0, 1, 1, 0, 0, 1, 0],  # 11
    [1, 0, 0, 0, 1, 1, 1, 0, 0, 1],  # 12
]
EXPECTED_TOKENS = [ROOT, 1, 2, 4, 10, 11, 12, 20, 21, 22]
EXPECTED_POSITIONS = [100, 101, 102, 102, 101, 102, 103, 102, 103, 104]  # past = 100


def _small_drafter(context=(7, 8, 9)):
    drafter = Lookahead(window=3, ngram=3, guesses=2)
    drafter.reset(list(context), None)
    for ngram in [(ROOT, 9, 9), (ROOT, 1, 4), (ROOT, 1, 2)]:  # the last is the most recent
        drafter._remember(ngram)
    drafter.window = np.array(WINDOW)
    return drafter


def test_hand_written_mask_and_positions():
    tree = _small_drafter().propose(ROOT)
    assert tree.tokens.tolist() == EXPECTED_TOKENS
    assert tree.parents.tolist() == [-1, 0, 1, 1]
    assert tree.mask().astype(int).tolist() == EXPECTED_MASK
    assert tree.positions(100).tolist() == EXPECTED_POSITIONS


def test_one_forward_is_one_jacobi_iteration():
    """Each window token's logits equal a plain causal forward over its column's sequence, and
    commit shifts the levels and harvests each column's n-gram."""
    model = tiny_model("llama", seed=3, scale=2.0)
    context = [3, 1, 4, 1, 5, 9, 2, 6]
    drafter = _small_drafter(context)
    tree = drafter.propose(ROOT)
    cache = KVCache(len(model.layers))
    model(mx.array(context)[None], cache)
    past, total = cache.offset, len(tree.tokens)
    mask = np.ones((total, past + total), dtype=bool)
    mask[:, past:] = tree.mask()
    logits, hidden = model(mx.array(tree.tokens)[None], cache, mx.array(mask), mx.array(tree.positions(past)))
    logits = logits[0]
    window = np.array(WINDOW)
    for level in range(2):
        for column in range(3):
            sequence = context + [ROOT] + window[0, : column + 1].tolist() + window[1 : level + 1, column].tolist()
            expected, _ = model(mx.array(sequence)[None])
            row = tree.num_nodes + 3 * level + column
            assert np.allclose(np.array(logits[row]), np.array(expected[0, -1]), atol=1e-4), (level, column)
    guesses = np.array(mx.argmax(logits[tree.num_nodes + 3 :], axis=-1)).tolist()
    drafter.commit(tree, [0], hidden[0], logits)
    assert drafter.window.tolist() == [WINDOW[1], guesses]
    for column in range(3):
        assert drafter.pool[WINDOW[0][column]][0] == (WINDOW[1][column], guesses[column])


def _prompts(seed, n=3, vocab=97):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, vocab, size=rng.integers(3, 9)).tolist()
        out.append(base * int(rng.integers(1, 4)) + rng.integers(0, vocab, size=3).tolist())
    return out


CONFIGS = {
    "w3-n3-g2": dict(window=3, ngram=3, guesses=2),
    "w5-n4-g4": dict(window=5, ngram=4, guesses=4),
    "w2-n2-g1": dict(window=2, ngram=2, guesses=1),
    "no-window": dict(window=0, ngram=3, guesses=3),
    "auto": dict(window="auto"),
}


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_autoregressive(config, seed):
    target = tiny_model("llama" if seed != 2 else "qwen3", seed=seed, scale=3.0)
    drafter = make_drafter("lookahead", **CONFIGS[config])  # one drafter across prompts: reset() starts over
    for prompt in _prompts(seed):
        for max_tokens in (1, 7, 33):
            expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
            got, steps = generate_ids(target, drafter, prompt, max_tokens)
            assert got == expected, (config, seed, prompt, max_tokens)
            assert len(got) == max_tokens and steps[-1].finish == "length"


def test_eos_inside_an_accepted_run():
    target = tiny_model("llama", seed=0, scale=3.0)
    prompt = [3, 4, 5, 6, 3, 4, 5, 6, 3, 4]
    reference, _ = generate_ids(target, make_drafter("ar"), prompt, 40)
    hits = 0
    for position in range(3, 30, 2):  # declare a token deep in the output to be EOS
        eos = [reference[position]]
        expected = reference[: reference.index(eos[0])]
        got, steps = generate_ids(target, make_drafter("lookahead", window=3, ngram=3, guesses=3), prompt, 40, eos=eos)
        assert got == expected and steps[-1].finish == "eos"
        hits += any(s.accepted > 0 and s.finish == "eos" for s in steps)
    assert hits > 0  # EOS did land inside an accepted run


def _accepted(target, prompts, **options):
    accepted = steps_taken = 0
    for prompt in prompts:
        _, steps = generate_ids(target, make_drafter("lookahead", **options), prompt, 48)
        accepted += sum(s.accepted for s in steps)
        steps_taken += sum(not s.prefill for s in steps)
    return accepted, steps_taken


def test_pool_drafts_get_accepted():
    """On repetitive text the pool is used; on fresh text the Jacobi window adds accepted drafts."""
    target = tiny_model("llama", seed=1, scale=3.0)
    repetitive = [[5, 6, 7, 8] * 4, [40, 41, 42, 43, 44] * 3]
    accepted, steps_taken = _accepted(target, repetitive, window=3, ngram=3, guesses=2)
    assert accepted > 0.1 * steps_taken
    fresh = [list(range(20, 35)), list(range(60, 72))]
    with_window, _ = _accepted(target, fresh, window=4, ngram=3, guesses=3)
    without, _ = _accepted(target, fresh, window=0, ngram=3, guesses=3)
    assert with_window > without


def test_pick_window():
    assert pick_window({0: 0.10, 2: 0.11, 4: 0.12, 8: 0.16}, 0.25) == 4
    assert pick_window({0: 0.10, 1: 0.20, 16: 0.30}, 0.25) == 0
    assert pick_window({0: 0.05, 4: 0.05, 16: 0.055}, 0.25) == 16


class FakeClock:
    """Stands in for ``time`` in the drafter: a step costs ``base + per_token * tokens``."""

    def __init__(self, base, per_token):
        self.now, self.base, self.per_token = 0.0, base, per_token

    def perf_counter(self):
        return self.now

    def forward(self, tree):
        self.now += self.base + self.per_token * len(tree.tokens)


@pytest.mark.parametrize("per_token, expected", [(0.005, 2), (0.05, 0), (0.0, 16)])
def test_auto_window_widens_while_nearly_free(monkeypatch, per_token, expected):
    import mlx_specdec.drafters.lookahead as lookahead

    clock = FakeClock(0.1, per_token)
    monkeypatch.setattr(lookahead, "time", clock)
    drafter = Lookahead(window="auto", ngram=3, guesses=2, slack=0.25)
    drafter.reset([1, 2, 3], None)
    fed = []
    for step in range(40):
        tree = drafter.propose(50 + step)  # never in the pool: the tree is the root alone
        clock.forward(tree)
        fed.append(tree.num_aux // 2)
        drafter.commit(tree, [0], None, mx.zeros((len(tree.tokens), 97)))
    # t(w) = 0.1 + per_token * (1 + 2w); widening stops at the first w over 1.25 * t(0)
    timed = [w for w in AUTO_LADDER if w <= max(1, 2 * expected)] if expected != 16 else AUTO_LADDER
    calibration = [x for w in timed for _ in range(AUTO_REPEATS) for x in (0, w)]
    assert fed[: len(calibration)] == calibration
    assert set(fed[len(calibration) :]) == {expected} and drafter.width == expected
    assert drafter.window.shape == (2, expected)


def test_auto_window_is_lossless():
    target = tiny_model("llama", seed=1, scale=3.0)
    drafter = make_drafter("lookahead", window="auto", ngram=3, guesses=2)
    expected, _ = generate_ids(target, make_drafter("ar"), [5, 6, 7, 8] * 3, 80)
    got, _ = generate_ids(target, drafter, [5, 6, 7, 8] * 3, 80)
    assert got == expected
    assert not drafter.calibration and drafter.width in (0, *AUTO_LADDER)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
def test_greedy_equals_autoregressive_on_the_default_model():
    from mlx_specdec.loader import load
    from mlx_specdec.store import default_model_dir

    loaded = load(default_model_dir(), "float32")
    texts = ["Write a Python function that returns the n-th Fibonacci number.", "Explain how a bicycle works."]
    questions = SHARED / "humaneval" / "question.jsonl"
    if questions.exists():
        texts.append(json.loads(questions.read_text().splitlines()[0])["turns"][0])
    for text in texts:
        ids = loaded.tokenizer.chat_ids([{"role": "user", "content": text}])
        expected, _ = generate_ids(loaded.model, make_drafter("ar"), ids, 64, eos=loaded.tokenizer.eos_ids)
        got, steps = generate_ids(loaded.model, make_drafter("lookahead"), ids, 64, eos=loaded.tokenizer.eos_ids)
        assert got == expected, text
