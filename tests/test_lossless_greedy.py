"""Greedy speculative output equals greedy autoregressive output, token for token (float32)."""

import numpy as np
import pytest

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.draft_model import DraftModel

from conftest import generate_ids, tiny_model


def _prompts(seed, n=4, vocab=97):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = rng.integers(0, vocab, size=rng.integers(3, 9)).tolist()
        out.append(base * int(rng.integers(1, 4)) + rng.integers(0, vocab, size=3).tolist())  # repeats help lookup
    return out


DRAFTERS = {
    "pld": lambda target: make_drafter("pld"),
    "pld-wide": lambda target: make_drafter("pld", max_ngram=2, min_ngram=1, num_draft=5, num_matches=4),
    "draft-model-self": lambda target: DraftModel(target, num_draft=4),
    "draft-model-other": lambda target: DraftModel(tiny_model("llama", seed=99, scale=3.0, num_hidden_layers=1), num_draft=3),
}


@pytest.mark.parametrize("drafter_name", list(DRAFTERS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_autoregressive(drafter_name, seed):
    target = tiny_model("llama", seed=seed, scale=3.0)
    for prompt in _prompts(seed):
        for max_tokens in (1, 7, 33):
            expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
            got, steps = generate_ids(target, DRAFTERS[drafter_name](target), prompt, max_tokens)
            assert got == expected, (drafter_name, seed, prompt, max_tokens)
            assert len(got) == max_tokens and steps[-1].finish == "length"


@pytest.mark.parametrize("drafter_name", list(DRAFTERS))
def test_eos_inside_an_accepted_run(drafter_name):
    target = tiny_model("qwen2", seed=5, scale=3.0)
    prompt = [3, 4, 5, 6, 3, 4, 5, 6, 3, 4]
    reference, _ = generate_ids(target, make_drafter("ar"), prompt, 40)
    hits = 0
    for position in range(3, 30, 4):  # declare a token deep in the output to be EOS
        eos = [reference[position]]
        expected = reference[: reference.index(eos[0])]
        got, steps = generate_ids(target, DRAFTERS[drafter_name](target), prompt, 40, eos=eos)
        assert got == expected and steps[-1].finish == "eos"
        hits += any(s.accepted > 0 and s.finish == "eos" for s in steps)
    if drafter_name.startswith("draft-model-self"):
        assert hits > 0  # EOS did land inside an accepted run


def test_target_as_its_own_draft_accepts_everything():
    target = tiny_model("qwen3", seed=7, scale=2.0)
    _, steps = generate_ids(target, DraftModel(target, num_draft=5), [1, 2, 3, 4, 5], 60)
    decode = [s for s in steps if not s.prefill]
    assert all(s.accepted == s.proposed == 5 for s in decode[:-1])
    assert sum(len(s.tokens) for s in steps) == 60


def test_drafts_are_sometimes_rejected_and_sometimes_accepted():
    """Guards the other tests: a drafter that never gets anything accepted proves little."""
    target = tiny_model("llama", seed=1, scale=3.0)
    accepted = proposed = 0
    for prompt in _prompts(1):
        _, steps = generate_ids(target, DRAFTERS["pld-wide"](target), prompt, 33)
        accepted += sum(s.accepted for s in steps)
        proposed += sum(s.proposed for s in steps)
    assert 0 < accepted < proposed


@pytest.mark.parametrize("drafter_name", ["draft-model-self", "lookahead"])
def test_output_runs_to_the_end_of_the_context_like_autoregressive(drafter_name):
    """Near the context limit a tree no longer fits: the loop falls back to plain steps, so the
    output still equals ar's up to the very last position (not a prefix of it)."""
    from mlx_specdec.generate import Session

    target = tiny_model("llama", seed=3, scale=3.0, max_position_embeddings=40)
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]
    make = DRAFTERS.get(drafter_name) or (lambda t: make_drafter("lookahead", window=3, ngram=3, guesses=2))
    expected, ref_steps = generate_ids(target, make_drafter("ar"), prompt, 100, session=Session(target, 40))
    got, steps = generate_ids(target, make(target), prompt, 100, session=Session(target, 40))
    assert len(expected) == 40 - len(prompt) + 1 and ref_steps[-1].finish == "context"  # the last token needs no cache slot
    assert got == expected and steps[-1].finish == "context"
    assert any(s.forward_tokens > 1 for s in steps)  # it did verify trees before the end


def test_accepted_counts_only_the_drafts_that_were_produced():
    """The target drafting for itself accepts every draft; a step cut by max tokens or by EOS
    counts only the drafts it produced (a drafted EOS included, as tau counts it)."""
    target = tiny_model("qwen3", seed=7, scale=2.0)
    prompt = [1, 2, 3, 4, 5]
    reference, _ = generate_ids(target, make_drafter("ar"), prompt, 40)
    _, steps = generate_ids(target, DraftModel(target, num_draft=5), prompt, 4)  # 1 from the prefill, then 6 > 3
    decode = [s for s in steps if not s.prefill]
    assert [len(s.tokens) for s in decode] == [3] and decode[0].accepted == 3 and decode[0].proposed == 5
    assert decode[0].finish == "length"
    k = next(i for i in range(2, 6) if reference[i] not in reference[:i])  # an EOS first seen at k, inside the first run
    got, steps = generate_ids(target, DraftModel(target, num_draft=5), prompt, 40, eos=[reference[k]])
    decode = [s for s in steps if not s.prefill]
    assert got == reference[:k] and decode[0].finish == "eos"
    assert decode[0].accepted == k  # k - 1 drafts emitted + the drafted EOS; the drafts after it are not counted
    for max_tokens in range(1, 12):  # every cut: never more drafts counted than tokens produced
        for eos in ([], [reference[k]]):
            _, steps = generate_ids(target, DraftModel(target, num_draft=5), prompt, max_tokens, eos=eos)
            assert all(s.accepted <= len(s.tokens) + (s.finish == "eos") for s in steps), (max_tokens, eos)
