"""Suffix automaton: hand-worked matches and continuations, and agreement with a brute force."""

import numpy as np

from mlx_specdec.drafters.suffix_automaton import SuffixAutomaton


def test_docstring_example_frequency_ranked():
    sam = SuffixAutomaton([1, 2, 3, 1, 2, 3, 1, 2, 4, 1, 2])
    assert sam.match_length == 2
    assert sam.continuations(4, 2) == [[3, 1, 2, 4], [4, 1, 2]]
    assert sam.continuations(4, 1) == [[3, 1, 2, 4]]


def test_ties_go_to_the_most_recent():
    sam = SuffixAutomaton([1, 2, 3, 1, 2, 4, 1, 2])
    assert sam.match_length == 2
    assert sam.continuations(4, 3) == [[4, 1, 2], [3, 1, 2, 4]]


def test_long_match_gives_a_long_chain():
    sam = SuffixAutomaton([5, 6, 7, 8, 9, 5, 6, 7])
    assert sam.match_length == 3
    assert sam.continuations(4) == [[8, 9, 5, 6]]
    sam.extend(8)  # the copy goes on: the match grows by one
    assert sam.match_length == 4
    assert sam.continuations(10) == [[9, 5, 6, 7, 8]]


def test_no_match_and_self_overlap():
    sam = SuffixAutomaton([1, 2, 3])
    assert sam.match_length == 0 and sam.continuations(4) == []
    sam = SuffixAutomaton([7, 7, 7])
    assert sam.match_length == 2  # "7 7" ends at 1 and 2
    assert sam.continuations(5) == [[7]]  # only the last 7 followed it so far (the copy overlaps its source)


def _brute(history, max_len):
    """Longest suffix occurring earlier, and the most recent earlier continuation."""
    n = len(history)
    for L in range(n - 1, 0, -1):
        suffix = history[n - L :]
        for end in range(n - 2, L - 2, -1):
            if history[end - L + 1 : end + 1] == suffix:
                return L, history[end + 1 : end + 1 + max_len]
    return 0, None


def test_matches_brute_force_on_random_histories():
    rng = np.random.default_rng(0)
    for trial in range(30):
        history = rng.integers(0, 4 if trial % 2 else 12, size=int(rng.integers(2, 60))).tolist()
        sam = SuffixAutomaton()
        for i, t in enumerate(history):
            sam.extend(t)
            length, follow = _brute(history[: i + 1], 6)
            assert sam.match_length == length
            if length:
                conts = sam.continuations(6, 20)
                assert follow in conts  # the most recent continuation of its branch
                firsts = [c[0] for c in conts]
                assert len(firsts) == len(set(firsts))
