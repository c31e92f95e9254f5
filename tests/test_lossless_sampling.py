"""Sampling is lossless: with speculation, generated tokens follow the target's distribution.

On a 6-token vocabulary the exact joint distribution of the first three generated tokens is
enumerated from the target (216 outcomes), then compared with many seeded runs of the loop by a
chi-square test. Deliberately broken rules must fail the same test, so the test can fail:
``min(1, p/q)`` applied to top-1 drafts that were never sampled from q, one noise row shared by
every position, and the sibling rule without renormalisation.
"""

import itertools

import mlx.core as mx
import numpy as np
import pytest

from mlx_specdec.cache import KVCache
from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.draft_model import DraftModel
from mlx_specdec.generate import Session
from mlx_specdec.sampling import SamplingParams, process_probs
from mlx_specdec.tree import Tree

from conftest import tiny_model

VOCAB, LENGTH, RUNS = 6, 3, 1200
PROMPT = [1, 2, 3, 1, 2]
PARAMS = dict(temperature=0.9, top_k=5, top_p=0.95)


def _model(seed, scale):
    return tiny_model("llama", seed=seed, scale=scale, vocab_size=VOCAB, hidden_size=32, num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)


def exact_distribution(model, params) -> dict:
    out = {}
    for seq in itertools.product(range(VOCAB), repeat=LENGTH):
        logits, _ = model(mx.array(PROMPT + list(seq[:-1]))[None], KVCache(len(model.layers)))
        probs = process_probs(np.array(logits[0, len(PROMPT) - 1 :]), params)
        out[seq] = float(np.prod([probs[i, t] for i, t in enumerate(seq)]))
    return out


class RandomTree:
    """Deterministic drafts shaped as random trees (siblings, depth up to 3)."""

    name = "random-tree"

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def reset(self, context, hidden):
        pass

    def propose(self, root):
        n = int(self.rng.integers(1, 7))
        parents = [-1] + [int(self.rng.integers(0, i)) for i in range(1, n)]
        return Tree(np.array([root] + self.rng.integers(0, VOCAB, n - 1).tolist()), np.array(parents))

    def commit(self, tree, path, hidden, logits):
        pass


class BiasedTop1(DraftModel):
    """The published ReDrafter-style rule on deterministic drafts: biased on purpose."""

    def propose(self, root):
        logits = self._feed(self.history[len(self.cached) :] + [root])
        probs = process_probs(np.array(logits), self.params)
        token = int(np.argmax(probs))
        return Tree.chain(root, [token], draft_probs=np.stack([np.zeros_like(probs), probs]))


def chi_square_p_value(exact: dict, counts: dict, runs: int) -> float:
    from math import erf, sqrt

    cells = sorted(exact, key=exact.get, reverse=True)
    stat, dof, pool_e, pool_o = 0.0, -1, 0.0, 0
    for seq in cells:  # pool small cells so every expected count is >= 5
        pool_e += exact[seq] * runs
        pool_o += counts.get(seq, 0)
        if pool_e >= 5:
            stat += (pool_o - pool_e) ** 2 / pool_e
            dof, pool_e, pool_o = dof + 1, 0.0, 0
    # Wilson-Hilferty approximation of the chi-square upper tail
    z = ((stat / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / sqrt(2 / (9 * dof))
    return 0.5 * (1 - erf(z / sqrt(2)))


def empirical(model, make, params_kwargs) -> dict:
    counts = {}
    for seed in range(RUNS):
        params = SamplingParams(seed=seed, **params_kwargs)
        steps = Session(model).generate(PROMPT, make(seed, params), params, LENGTH)
        seq = tuple(t for s in steps for t in s.tokens)
        counts[seq] = counts.get(seq, 0) + 1
    return counts


DRAFTERS = {
    "ar": lambda target, draft: (lambda seed, params: make_drafter("ar")),
    "pld": lambda target, draft: (lambda seed, params: make_drafter("pld", num_draft=2, num_matches=3)),
    "random-tree": lambda target, draft: (lambda seed, params: RandomTree(seed)),
    "draft-model-sampled": lambda target, draft: (lambda seed, params: DraftModel(draft, num_draft=2, params=params)),
    "lookahead": lambda target, draft: (lambda seed, params: make_drafter("lookahead", window=2, ngram=3, guesses=2, seed=seed)),
    "recycle": lambda target, draft: (lambda seed, params: make_drafter("recycle", vocab_size=VOCAB, budget=None, num_nodes=4, max_chain=3, branches=2, table_nodes=4)),
    "redrafter": lambda target, draft: _redrafter(target, tree="beam", beam_width=2, beam_length=2),
    "redrafter-dynamic": lambda target, draft: _redrafter(target, tree="dynamic", topk=2, depth=2, num_nodes=3),
    "eagle": lambda target, draft: _eagle(target, topk=2, depth=3, num_nodes=4, lookup=1),
    "recycle+redrafter": lambda target, draft: _recycle_with(_redrafter(target, tree="dynamic", topk=2, depth=2)),
    "recycle+eagle": lambda target, draft: _recycle_with(_eagle(target, topk=2, depth=2)),
}


def _recycle_with(head):
    """recycle with a random head as a third source of its tree (``head``: a factory like the others)."""
    return lambda seed, params: make_drafter("recycle", vocab_size=VOCAB, budget=None, num_nodes=4, max_chain=3, branches=2,
                                             table_nodes=4, head=head(seed, params))


def _eagle(target, **options):
    """EAGLE with a random EAGLE-3 head (deterministic top-k trees; verified sibling-wise)."""
    from mlx_specdec.drafters.eagle import Eagle
    from mlx_specdec.drafters.eagle3_head import Eagle3Head, head_config

    mx.random.seed(5)
    V = target.args.vocab_size
    head = Eagle3Head(head_config(target, V))
    head.set_draft_vocab(np.arange(V), V)
    return lambda seed, params: Eagle(target, head, **options)


def _redrafter(target, **options):
    """ReDrafter with a random head (deterministic beams / top-k trees; verified sibling-wise)."""
    from mlx_specdec.drafters.redrafter import ReDrafter
    from mlx_specdec.drafters.redrafter_head import HeadConfig, ReDrafterHead

    mx.random.seed(5)
    head = ReDrafterHead(HeadConfig.for_target(target))
    return lambda seed, params: ReDrafter(target, head, **options)


@pytest.fixture(scope="module")
def setup():
    target, draft = _model(11, 2.5), _model(12, 2.5)
    return target, draft, exact_distribution(target, SamplingParams(**PARAMS))


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_speculative_sampling_matches_target_distribution(setup, name):
    target, draft, exact = setup
    counts = empirical(target, DRAFTERS[name](target, draft), PARAMS)
    assert chi_square_p_value(exact, counts, RUNS) > 1e-3


def no_renormalisation_verify(tree, probs, rng):
    """The sibling rule with a bug: a rejected sibling's mass is not removed (no p(x) = 0 and
    renormalise), so each later sibling and the final sample still see the full p."""
    from mlx_specdec.sampling import sample

    children = tree.children()
    path = [0]
    while True:
        p = probs[path[-1]]
        accepted = next((c for c in children[path[-1]] if rng.random() * p.sum() < p[tree.tokens[c]]), None)
        if accepted is None:
            return path, sample(p, rng)
        path.append(accepted)


def sibling_rule_counts(rule, p, draws=6000) -> dict:
    """The token each of ``draws`` one-step verifications emits (an accepted child, else the next
    root) with every token of the vocabulary drafted as a child of the root, in id order (many
    siblings, and a fixed order: a random one would average a sibling bug's bias out)."""
    tree = Tree(np.array([0] + list(range(len(p)))), np.array([-1] + [0] * len(p)))
    rng, counts = np.random.default_rng(0), {}
    for _ in range(draws):
        path, root = rule(tree, [p] * tree.num_nodes, rng)
        token = (int(tree.tokens[path[1]]) if len(path) > 1 else root,)
        counts[token] = counts.get(token, 0) + 1
    return counts


def test_sibling_rule_without_renormalisation_is_caught():
    """TriForce's middle level verifies the bottom drafts with the sibling rule (``verify_deterministic``)."""
    from mlx_specdec.verify import verify_deterministic

    p = np.array([0.3, 0.25, 0.2, 0.15, 0.1])
    exact = {(t,): float(q) for t, q in enumerate(p)}
    assert chi_square_p_value(exact, sibling_rule_counts(verify_deterministic, p), 6000) > 1e-3
    assert chi_square_p_value(exact, sibling_rule_counts(no_renormalisation_verify, p), 6000) < 1e-3


def test_noise_shared_across_positions_is_caught(setup, monkeypatch):
    """The coupled rule is exact only because each position draws its own noise: one noise row for
    every position (a keying bug) correlates the tokens and must fail the same test."""
    from mlx_specdec.sampling import Noise

    target, draft, exact = setup
    row = Noise.row
    monkeypatch.setattr(Noise, "row", lambda self, position, vocab_size: row(self, 0, vocab_size))
    counts = empirical(target, DRAFTERS["ar"](target, draft), PARAMS)
    assert chi_square_p_value(exact, counts, RUNS) < 1e-3


FLAT = dict(temperature=2.0)  # several live tokens per step, so seeds give different texts


@pytest.mark.parametrize("name", [n for n in DRAFTERS if n not in ("ar", "draft-model-sampled")])
def test_sampled_output_is_ars_for_the_same_seed(setup, name):
    """Drafts that were not sampled are accepted when they equal the target's sample at that
    position, so the text is exactly ``ar``'s with the same seed (float32, no near-ties here)."""
    target, draft, _ = setup
    make, reference = DRAFTERS[name](target, draft), DRAFTERS["ar"](target, draft)
    for seed in range(4):
        params = SamplingParams(seed=seed, **FLAT)
        ours = [t for s in Session(target).generate(PROMPT, make(seed, params), params, 24) for t in s.tokens]
        ars = [t for s in Session(target).generate(PROMPT, reference(seed, params), params, 24) for t in s.tokens]
        assert ours == ars


def test_biased_rule_is_caught(setup):
    target, draft, exact = setup
    # the target drafts for itself (q = p), so the rule accepts its top-1 every time: biased for any
    # random weights, however close a separate draft model happens to be to the target
    counts = empirical(target, lambda seed, params: BiasedTop1(target, num_draft=1, params=params), PARAMS)
    assert chi_square_p_value(exact, counts, RUNS) < 1e-3
