"""recycle: the merged tree of the worked example, and greedy equality with ar on tiny models."""

import numpy as np
import pytest

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.recycle import Candidates, Recycle
from mlx_specdec.drafters.tree_budget import TreeBudget
from mlx_specdec.generate import Session

from conftest import generate_ids, tiny_model
from test_lossless_greedy import _prompts

COSTS = {1: 0.050, 2: 0.059, 4: 0.077, 8: 0.086, 12: 0.125, 16: 0.098, 24: 0.150, 32: 0.2}


def test_worked_example_merged_tree():
    """The module docstring's example: context chain [8 9 4], table row of 7 = [8 5], of 5 = [6]."""
    cands = Candidates(7)
    a = cands.add(0, 8, 0.9, "ctx")
    b = cands.add(a, 9, 0.8, "ctx")
    cands.add(b, 4, 0.5, "ctx")
    assert cands.add(0, 8, 0.6, "tab") == a  # shared prefix: one node, the higher estimate
    c = cands.add(0, 5, 0.3, "tab")
    cands.add(c, 6, 0.1 * 0.3, "tab")
    assert cands.values[a] == 0.9 and cands.keys[a] == ["ctx", "tab"]
    ranked = cands.ranked()
    assert [cands.tokens[i] for i in ranked] == [8, 9, 4, 5, 6]
    tree, ids = cands.tree(ranked[:4])
    assert tree.tokens.tolist() == [7, 8, 5, 9, 4]
    assert tree.parents.tolist() == [-1, 0, 0, 1, 3]
    assert tree.depth.tolist() == [0, 1, 1, 2, 3]


def test_a_child_never_scores_above_its_parent():
    cands = Candidates(1)
    a = cands.add(0, 2, 0.3, "x")
    b = cands.add(a, 3, 0.9, "x")
    assert cands.values[b] == 0.3 and cands.ranked() == [a, b]


def test_budget_cut_by_hand():
    budget = TreeBudget({1: 0.05, 2: 0.06, 3: 0.1}, max_nodes=8)
    assert budget.best_cut([0.6, 0.3]) == 1  # 20 / 26.7 / 19 tokens per second
    assert budget.best_cut([0.05]) == 0  # 20 against 1.05 / 0.06 = 17.5
    assert budget.best_cut([0.99, 0.99]) == 1  # 33.2 against 2.98 / 0.1 = 29.8
    flat = TreeBudget({1: 0.05, 2: 0.06, 3: 0.065}, max_nodes=8)
    assert flat.best_cut([0.99, 0.99]) == 2  # 2.98 / 0.065 = 45.8
    assert TreeBudget({1: 0.05, 2: 0.06, 3: 0.065}, max_nodes=1).best_cut([0.99, 0.99]) == 1  # capped


def test_budget_cost_grows_with_the_context_by_hand():
    """Costs timed behind 256 and 2,048 cached tokens, read linearly in the context."""
    from mlx_specdec.drafters.tree_budget import LONG_PAST, SHORT_PAST

    assert (SHORT_PAST, LONG_PAST) == (256, 2048)
    budget = TreeBudget({1: 0.05, 2: 0.06, 3: 0.065}, max_nodes=8, long_forward_s={1: 0.05, 2: 0.087, 3: 0.13})
    assert budget.best_cut([0.99, 0.3]) == 2  # short context: 2.29 / 0.065 = 35.2 against 1.99 / 0.06 = 33.2
    budget.context = 1152  # half-way: 1 node 0.0735 s, 2 nodes 0.0975 s
    assert np.allclose(budget.costs()[1:4], [0.05, 0.0735, 0.0975])
    assert budget.best_cut([0.99, 0.3]) == 1  # 1.99 / 0.0735 = 27.1 against 2.29 / 0.0975 = 23.5
    budget.context = 3840  # beyond the long table: linear (2 nodes 0.16 s, 3 tokens 0.195 s)
    assert np.allclose(budget.costs()[1:4], [0.05, 0.114, 0.195])
    assert budget.best_cut([0.5, 0.2]) == 0  # 20 against 1.5 / 0.114 = 13.2
    budget.context = 100  # shorter than the short table's context: the short costs
    assert np.allclose(budget.costs()[1:4], [0.05, 0.06, 0.065])
    assert np.allclose(TreeBudget({1: 0.05, 2: 0.06}).costs()[1:3], [0.05, 0.06])  # no long table: no context term


def test_budget_pads_to_a_cheaper_size_by_hand():
    budget = TreeBudget({1: 0.05, 2: 0.06, 3: 0.1, 4: 0.07, 5: 0.2, 6: 0.069}, max_nodes=8)
    assert [budget.pad_size(t) for t in range(1, 7)] == [1, 2, 4, 4, 6, 6]  # 3 -> 4 and 5 -> 6 are cheaper
    assert np.allclose(budget.costs()[1:7], [0.05, 0.06, 0.07, 0.07, 0.069, 0.069])
    assert np.allclose(budget.raw_costs()[1:7], [0.05, 0.06, 0.1, 0.07, 0.2, 0.069])
    # values [0.6, 0.3, 0.1]: 2 nodes (3 tokens) now cost 70 ms, not 100: 1.9 / 0.07 beats 1.6 / 0.06
    assert budget.best_cut([0.6, 0.3, 0.1]) == 3  # and the third node rides in the same 4-token forward
    near = TreeBudget({1: 0.05, 2: 0.06, 3: 0.0595}, max_nodes=4)
    assert near.pad_size(2) == 2  # under 3% cheaper: not worth the pad


def test_monotone_budget_reads_dips_as_noise_by_hand():
    """Where the Linears already run at their cheapest row count, a dip in the timed curve is the
    machine's load: the costs are pooled into a non-decreasing curve and nothing is padded."""
    from mlx_specdec.drafters.tree_budget import isotonic

    assert np.allclose(isotonic([5, 7, 6, 9, 8, 8]), [5, 6.5, 6.5, 25 / 3, 25 / 3, 25 / 3])
    assert np.allclose(isotonic([1, 2, 3]), [1, 2, 3]) and len(isotonic([])) == 0
    budget = TreeBudget({1: 0.05, 2: 0.06, 3: 0.1, 4: 0.07, 5: 0.2, 6: 0.069}, max_nodes=8, monotone=True)
    assert np.allclose(budget.costs()[1:7], [0.05, 0.06, 0.085, 0.085, 0.1345, 0.1345])
    assert [budget.pad_size(t) for t in range(1, 7)] == [1, 2, 3, 4, 5, 6]
    assert budget.best_cut([0.6, 0.3, 0.1]) == 1  # 1.6 / 0.06 = 26.7 against 2.0 / 0.085 = 23.5
    long = TreeBudget({1: 0.05, 2: 0.06, 3: 0.065}, long_forward_s={1: 0.05, 2: 0.1, 3: 0.09}, monotone=True)
    long.context = 2048  # the extra cost of the context is pooled too: 0 / 0.04 / 0.025 -> 0 / 0.0325 / 0.0325
    assert np.allclose(long.costs()[1:4], [0.05, 0.0925, 0.0975])


def test_acceptance_rates_pool_by_key_prefix_by_hand():
    from mlx_specdec.drafters.recycle import AcceptanceStats

    stats, siblings = AcceptanceStats(), AcceptanceStats(nested=False)
    for accepted in (True, True, True, False):
        for s in (stats, siblings):
            s.observe(("ctx", True, 9), accepted)  # counted for ("ctx",), ("ctx", True) and the full key
    # nested (greedy): each level towards its parent's rate, own trials included
    assert np.isclose(stats.rate(("ctx",), 0.5), (3 + 4 * 0.5) / 8)  # 0.625
    assert np.isclose(stats.rate(("ctx", True), 0.5), (3 + 4 * 0.625) / 8)  # 0.6875
    assert np.isclose(stats.rate(("ctx", True, 5), 0.5), 0.6875)  # a key never seen: its coarser key's rate
    assert np.isclose(stats.rate(("ctx", False), 0.5), 0.625)
    # siblings (sampling): no trial counted twice
    assert np.isclose(siblings.rate(("ctx",), 0.5), (3 + 4 * 0.5) / 8)  # 0.625
    assert np.isclose(siblings.rate(("ctx", True), 0.5), 0.625)  # the same trials: not shrunk twice
    assert np.isclose(siblings.rate(("ctx", True, 9), 0.5), 0.625)
    unseen = siblings.rate(("ctx", True, 5), 0.5)
    assert np.isclose(unseen, (0 + 4 * (3 + 4 * 0.5) / 8) / 4)  # a key never seen: its siblings' rate, 0.625
    assert np.isclose(siblings.rate(("ctx", False), 0.5), 0.625)
    for _ in range(9):
        siblings.observe(("tab", 3, False), False)  # early rejections lower a key once, not once per level
    assert np.isclose(siblings.rate(("tab", 3, False), 0.5), 4 * 0.5 / 13)


def test_padded_tree_by_hand():
    from mlx_specdec.tree import Tree

    tree = Tree.chain(7, [8, 9]).padded(5)
    assert tree.tokens.tolist() == [7, 8, 9, 7, 7] and tree.num_nodes == 3 and tree.num_aux == 2
    assert tree.positions(10).tolist() == [10, 11, 12, 10, 10]
    assert tree.mask().astype(int).tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
    ]
    assert Tree.chain(7, [8]).padded(2).num_aux == 0


def test_padded_trees_are_lossless():
    target = tiny_model("llama", seed=2, scale=3.0)
    drafter = Recycle(target.args.vocab_size, budget=TreeBudget({1: 0.05, 2: 0.06, 3: 0.2, 16: 0.061}, max_nodes=12))
    padded = 0
    for prompt in _prompts(2):
        expected, _ = generate_ids(target, make_drafter("ar"), prompt, 40)
        got, steps = generate_ids(target, drafter, prompt, 40)
        assert got == expected
        padded += sum(s.forward_tokens == 16 for s in steps if not s.prefill)
    assert padded  # 3 to 15 tokens run as 16


def _drafters(target):
    vocab = target.args.vocab_size
    return {
        "budget": Recycle(vocab, budget=TreeBudget(COSTS, max_nodes=24)),
        "fixed-8": Recycle(vocab, num_nodes=8),
        "all-candidates": Recycle(vocab, max_chain=5, branches=4),
        "no-table": Recycle(vocab, num_nodes=6, table=False),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_equals_autoregressive(seed):
    target = tiny_model("llama", seed=seed, scale=3.0)
    for name in _drafters(target):
        drafter = _drafters(target)[name]  # one drafter across prompts: its table and stats carry over
        for prompt in _prompts(seed):
            for max_tokens in (1, 7, 33):
                expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
                got, steps = generate_ids(target, drafter, prompt, max_tokens)
                assert got == expected, (name, seed, prompt, max_tokens)
                assert len(got) == max_tokens and steps[-1].finish == "length"


def test_drafts_are_accepted_and_rejected():
    target = tiny_model("llama", seed=1, scale=3.0)
    drafter = Recycle(target.args.vocab_size, max_chain=5, branches=4)
    accepted = proposed = branched = 0
    for prompt in _prompts(1):
        _, steps = generate_ids(target, drafter, prompt, 33)
        accepted += sum(s.accepted for s in steps)
        proposed += sum(s.proposed for s in steps)
        branched += sum(s.proposed > s.max_depth for s in steps)
    assert 0 < accepted < proposed and branched > 0


def test_eos_inside_an_accepted_run():
    target = tiny_model("qwen2", seed=5, scale=3.0)
    prompt = [3, 4, 5, 6, 3, 4, 5, 6, 3, 4]
    reference, _ = generate_ids(target, make_drafter("ar"), prompt, 40)
    hits = 0
    for position in range(3, 30, 4):
        eos = [reference[position]]
        expected = reference[: reference.index(eos[0])]
        got, steps = generate_ids(target, Recycle(target.args.vocab_size, num_nodes=8), prompt, 40, eos=eos)
        assert got == expected and steps[-1].finish == "eos"
        hits += any(s.accepted > 0 and s.finish == "eos" for s in steps)
    assert hits > 0


def test_output_runs_to_the_end_of_the_context():
    target = tiny_model("llama", seed=3, scale=3.0, max_position_embeddings=40)
    prompt = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, 100, session=Session(target, 40))
    got, steps = generate_ids(target, Recycle(target.args.vocab_size, num_nodes=8), prompt, 100, session=Session(target, 40))
    assert got == expected and steps[-1].finish == "context"
    assert any(s.forward_tokens > 1 for s in steps)


def test_multi_turn_extends_the_automaton():
    """A second turn that continues the first conversation keeps the automaton (and matches it)."""
    target = tiny_model("llama", seed=0, scale=3.0)
    session, drafter = Session(target), Recycle(target.args.vocab_size, num_nodes=8)
    first = [1, 2, 3, 4, 5, 1, 2, 3]
    out, _ = generate_ids(target, drafter, first, 10, session=session)
    states = drafter.sam.num_states
    second = first + out + [9, 9]
    got, _ = generate_ids(target, drafter, second, 10, session=session)
    expected, _ = generate_ids(target, make_drafter("ar"), second, 10)
    assert got == expected and drafter.sam.num_states > states
    assert drafter.sam.history[: len(second)] == second


def test_make_drafter_builds_it():
    target = tiny_model("llama", seed=0)
    drafter = make_drafter("recycle", target=target, budget=TreeBudget(COSTS), max_chain=4)
    assert drafter.name == "recycle" and drafter.table.tokens.shape == (97, 8)


def test_the_cost_tables_are_timed_at_two_contexts_and_cached(tmp_path):
    """Behind 256 and 2,048 cached tokens where the model's context allows it, one JSON file per
    device and model, read back as measured; a shorter context gets no long table."""
    import json

    from mlx_specdec.drafters.tree_budget import LONG_SIZES, SIZES, cached_forward_costs, cost_key

    target = tiny_model("llama", seed=1, max_position_embeddings=4096)
    short, long = cached_forward_costs(target, tmp_path)
    assert sorted(short) == sorted(SIZES) and sorted(long) == sorted(LONG_SIZES)
    assert all(v > 0 for v in [*short.values(), *long.values()])
    saved = json.loads((tmp_path / ".tree-costs" / f"{cost_key(target)}.json").read_text())
    assert saved["past"] == [256, 2048]
    assert cached_forward_costs(target, tmp_path) == (short, long)  # read back, not timed again
    small = tiny_model("llama", seed=2, max_position_embeddings=1024)
    assert cached_forward_costs(small, tmp_path)[1] == {}


def test_rejected_short_matches_do_not_silence_long_ones():
    """Short (1-2 token) and long context matches pool their evidence apart: a session that starts
    with 30 rejected one-token matches still drafts a long copy."""
    from mlx_specdec.sampling import SamplingParams

    drafter = Recycle(100, budget=TreeBudget({1: 0.05, 2: 0.051, 4: 0.052, 8: 0.053}, max_nodes=8), table=False)
    drafter.couple(None, SamplingParams())
    drafter.num_nodes = 3  # draft whatever the estimates say, to gather the evidence
    for i in range(30):
        drafter.reset(list(range(20)), None)  # distinct tokens: the root (5) repeats one, a match of length 1
        tree = drafter.propose(5)
        assert drafter.sam.match_length == 1 and tree.tokens[1] == 6
        drafter.commit(tree, [0], None, None)  # the target accepts none of it
    assert drafter.stats.totals("ctx") == (0, 30)  # one depth-1 trial per step
    drafter.num_nodes = None  # the budget decides again
    drafter.reset(list(range(20)), None)
    assert drafter.propose(5).num_nodes == 1  # measured useless: no more short matches
    drafter.reset(list(range(50, 70)) + list(range(50, 60)), None)
    tree = drafter.propose(60)  # the suffix 50..60 occurred before: a match of 11 tokens
    assert drafter.sam.match_length == 11 and tree.num_nodes > 1 and tree.tokens[1] == 61
