"""ReDrafter: prefix-tree masks by hand, greedy losslessness for beam and dynamic trees, the head's
directory format and its errors, and the distillation trainer end to end on a tiny model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import load_file

from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.redrafter import ReDrafter, select_tree
from mlx_specdec.drafters.redrafter_head import HeadConfig, ReDrafterHead, load_head, save_head
from mlx_specdec.drafters.tree_budget import TreeBudget
from mlx_specdec.errors import UserError
from mlx_specdec.train.data import file_prompts, iter_json_records
from mlx_specdec.train.generate import generate_dataset
from mlx_specdec.train.teacher_forced import read_dataset
from mlx_specdec.train.trainer import DistillData, Trainer, TrainConfig
from mlx_specdec.tree import beams_to_tree, merge_beams

from conftest import generate_ids, tiny_model

ROOT = Path(__file__).resolve().parents[1]


# -- beams -> prefix tree, masks written out by hand ------------------------------------------------


def test_beams_merge_into_a_prefix_tree_with_the_expected_mask():
    r, a, b, c, d, e, f, g = 90, 1, 2, 3, 4, 5, 6, 7
    tree, index = beams_to_tree(r, [[a, b, c], [a, b, d], [e, f, g]])  # 9 beam tokens -> 7 nodes
    assert tree.tokens.tolist() == [r, a, b, c, d, e, f, g]
    assert tree.parents.tolist() == [-1, 0, 1, 2, 2, 0, 5, 6]
    assert index.tolist() == [[1, 2, 3], [1, 2, 4], [5, 6, 7]]
    expected = np.array(
        [
            # r  a  b  c  d  e  f  g
            [1, 0, 0, 0, 0, 0, 0, 0],  # r
            [1, 1, 0, 0, 0, 0, 0, 0],  # a
            [1, 1, 1, 0, 0, 0, 0, 0],  # b
            [1, 1, 1, 1, 0, 0, 0, 0],  # c
            [1, 1, 1, 0, 1, 0, 0, 0],  # d (sibling of c: does not see it)
            [1, 0, 0, 0, 0, 1, 0, 0],  # e
            [1, 0, 0, 0, 0, 1, 1, 0],  # f
            [1, 0, 0, 0, 0, 1, 1, 1],  # g
        ],
        dtype=bool,
    )
    assert (tree.mask() == expected).all()
    assert tree.positions(10).tolist() == [10, 11, 12, 13, 13, 11, 12, 13]


def test_identical_beams_collapse_to_one_chain():
    tree, index = beams_to_tree(9, [[4, 5], [4, 5], [4, 6]])
    assert tree.tokens.tolist() == [9, 4, 5, 6] and tree.parents.tolist() == [-1, 0, 1, 1]
    expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]], dtype=bool)
    assert (tree.mask() == expected).all() and index.tolist() == [[1, 2], [1, 2], [1, 3]]


def test_dynamic_selection_keeps_the_best_nodes_and_their_parents():
    # candidates 1..5: a(0) b(0) c(a) d(c) e(b); scores make d better than b
    tokens = np.array([11, 12, 13, 14, 15])
    parents = np.array([0, 0, 1, 3, 2])
    scores = np.array([-0.1, -3.0, -0.5, -0.9, -3.5])
    tree, kept = select_tree(7, tokens, parents, scores, 3)
    assert tree.tokens.tolist() == [7, 11, 13, 14] and tree.parents.tolist() == [-1, 0, 1, 2]
    tree, kept = select_tree(7, tokens, parents, scores, 4)
    assert tree.tokens.tolist() == [7, 11, 12, 13, 14] and tree.parents.tolist() == [-1, 0, 0, 1, 3]
    # a child that ranks above its parent (ties are possible) still brings its parent along
    tree, _ = select_tree(7, tokens, parents, np.array([-0.1, -3.0, -0.5, -0.9, -0.2]), 2)
    assert tree.parents.tolist() == [-1, 0, 1] and tree.tokens.tolist() == [7, 11, 13]


def test_lookup_chains_merge_into_an_existing_tree():
    tree, _ = beams_to_tree(9, [[1, 2]])
    merged, index = merge_beams(tree, [[1, 3], [4]])  # r -> a -> {b, c}, r -> d
    assert merged.tokens.tolist() == [9, 1, 2, 3, 4] and merged.parents.tolist() == [-1, 0, 1, 1, 0]
    assert sorted(index[index >= 0].tolist()) == [1, 3, 4]


# -- a head trained on a tiny model, shared by the tests below ------------------------------------


def _prompts(seed, n, vocab=97):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, rng.integers(3, 10)).tolist() for _ in range(n)]


CONFIG = TrainConfig(steps=120, batch_size=64, length=3, lr=3e-3, warmup=10, num_blocks=1, vocab_subset=64,
                     eval_every=60, checkpoint_every=60, eval_positions=500)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(target, data dir, trainer, losses): a head distilled from a peaky tiny target."""
    target = tiny_model("llama", seed=3, scale=4.0)
    work = tmp_path_factory.mktemp("redrafter")
    generate_dataset(target, _prompts(0, 48), work / "data", eos_ids=[], batch_size=16, max_new_tokens=40)
    trainer = Trainer(target, DistillData(work / "data", eval_fraction=0.2), work / "run", CONFIG)
    before = trainer.evaluate()
    losses = []
    after = trainer.train(lambda event: losses.append(event.loss))
    trainer.export(work / "head")
    return target, work, trainer, losses, before, after


def test_trainer_loss_decreases_and_acceptance_rises(trained):
    target, work, trainer, losses, before, after = trained
    assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:5])
    assert after["loss"] < before["loss"] and after["chain_tau"] > before["chain_tau"]
    assert (work / "head" / "config.json").is_file() and (work / "head" / "model.safetensors").is_file()


def test_trainer_resumes_from_its_checkpoint(trained, tmp_path):
    """With feature noise on: the noise of a step depends only on (seed, step), so a resumed run
    ends with the same weights as a straight one (and the noise does change the training)."""
    target, work, _, _, _, _ = trained
    config = TrainConfig(**{**CONFIG.__dict__, "steps": 12, "checkpoint_every": 5, "eval_every": 4, "feature_noise": 0.5})
    data = DistillData(work / "data", eval_fraction=0.2)
    straight = Trainer(target, data, tmp_path / "straight", config)
    straight.train()

    class Stop(Exception):
        pass

    def stop_at_7(event):
        if event.step == 7:
            raise Stop

    interrupted = Trainer(target, data, tmp_path / "resumed", config)
    with pytest.raises(Stop):
        interrupted.train(stop_at_7)
    resumed = Trainer(target, data, tmp_path / "resumed", config)
    assert resumed.try_resume() and resumed.step == 5
    resumed.train()
    assert resumed.step == 12
    assert [row["step"] for row in resumed.history] == [4, 8, 12] and "chain_tau" in resumed.history[-1]
    quiet = Trainer(target, data, tmp_path / "quiet", TrainConfig(**{**config.__dict__, "feature_noise": 0.0}))
    quiet.train()
    assert not np.allclose(np.array(quiet.head.proj.weight), np.array(straight.head.proj.weight), atol=1e-6)
    for (name, a), (_, b) in zip(sorted(straight.head.trainable_parameters().items()), sorted(resumed.head.trainable_parameters().items())):
        from mlx.utils import tree_flatten

        for (_, x), (_, y) in zip(tree_flatten(a), tree_flatten(b)):
            assert np.allclose(np.array(x), np.array(y), atol=1e-6), name


@pytest.mark.parametrize("tree", ["beam", "dynamic", "beam+lookup"])
def test_greedy_equals_autoregressive(trained, tree):
    target, work, *_ = trained
    head = load_head(work / "head", target)
    options = dict(beam_width=3, beam_length=3) if tree.startswith("beam") else dict(topk=3, depth=4, num_nodes=8)
    if tree.endswith("+lookup"):
        tree, options["lookup"] = "beam", 2
    accepted = 0
    for prompt in _prompts(100, 3) + _prompts(101, 3):
        for max_tokens in (1, 7, 30):
            expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
            got, steps = generate_ids(target, ReDrafter(target, head, tree=tree, **options), prompt, max_tokens)
            assert got == expected, (tree, prompt, max_tokens)
            assert len(got) == max_tokens and steps[-1].finish == "length"
            accepted += sum(s.accepted for s in steps)
    assert accepted > 0  # the trained head does get drafts accepted


@pytest.mark.parametrize("tree", ["beam", "dynamic"])
def test_eos_inside_an_accepted_run(trained, tree):
    target, work, *_ = trained
    head = load_head(work / "head", target)
    hits = 0
    for prompt in _prompts(7, 3):
        reference, _ = generate_ids(target, make_drafter("ar"), prompt, 40)
        for position in range(2, 30, 3):
            eos = [reference[position]]
            expected = reference[: reference.index(eos[0])]
            got, steps = generate_ids(target, ReDrafter(target, head, tree=tree), prompt, 40, eos=eos)
            assert got == expected and steps[-1].finish == "eos"
            hits += any(s.accepted > 0 and s.finish == "eos" for s in steps)
    assert hits > 0


@pytest.mark.parametrize("lookup", [0, 2])
def test_tree_budget_with_dynamic_trees_stays_lossless(trained, lookup):
    """(With lookup, prompt-lookup chains merge into the budgeted tree as free nodes.)"""
    target, work, *_ = trained
    head = load_head(work / "head", target)
    budget = TreeBudget({1: 0.05, 8: 0.06, 16: 0.08, 32: 0.2}, max_nodes=16, warmup=3, explore_every=4)
    prompt = _prompts(9, 1)[0] * (2 if lookup else 1)
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, 60)
    drafter = ReDrafter(target, head, tree="dynamic", topk=4, depth=4, budget=budget, lookup=lookup)
    got, steps = generate_ids(target, drafter, prompt, 60)
    assert got == expected
    sizes = {s.proposed for s in steps if not s.prefill}
    assert budget.count[1] > 0 and max(sizes) >= 16  # the warm-up drafts the largest head tree (lookup chains on top)


def test_tree_budget_prefers_the_size_with_the_best_rate():
    # forward_s by tokens in the forward (root + drafted nodes): 4 tokens cost 1, 5 tokens cost 4
    budget = TreeBudget({1: 1.0, 4: 1.0, 5: 4.0, 8: 8.0}, max_nodes=4, warmup=0, explore_every=1000)
    ranks, path = np.array([0, 1, 2, 3, 4]), [0, 1, 2, 3]  # a chain of 4 drafted nodes; 3 accepted
    budget.observe(ranks, path, draft_s=0.0)
    assert budget.accepted[1:].tolist() == [1, 2, 3, 3]
    assert budget.choose() == 3  # (1 + 3) / 1 beats (1 + 3) / 4 and (1 + 2) / 1


def test_tree_budget_turns_the_head_off_when_it_does_not_pay():
    """Size 0 = no head draft, only the free (rank 0) lookup nodes. Tree r -> a (lookup, free) ->
    b (head rank 1), r -> c (head rank 2); a and b accepted."""
    costs = {1: 1.0, 2: 1.0, 3: 1.2, 4: 1.4, 8: 2.0}
    ranks, path = np.array([0, 0, 1, 2]), [0, 1, 2]
    slow = TreeBudget(costs, max_nodes=2, warmup=0, explore_every=1000)
    slow.observe(ranks, path, draft_s=2.0)  # a draft that costs two forwards
    assert slow.accepted.tolist() == [1, 2, 2] and slow.free_nodes == 1.0
    assert slow.choose() == 0  # (1 + 1) / 1.0 beats (1 + 2) / (1.2 + 2)
    cheap = TreeBudget(costs, max_nodes=2, warmup=0, explore_every=1000)
    cheap.observe(ranks, path, draft_s=0.01)
    assert cheap.choose() == 1  # (1 + 2) / (1.2 + 0.01)
    cheap.observe(np.array([0, 0]), [0, 1], draft_s=None)  # a step without the head: its draft time is not a draft's
    assert cheap.draft_s == 0.01


class ScriptedBudget:
    """Sizes from a script (0 = skip the head), recording what the drafter reports."""

    def __init__(self, sizes):
        self.sizes, self.reports = list(sizes), []

    def choose(self):
        return self.sizes[len(self.reports) % len(self.sizes)]

    def observe(self, ranks, path, draft_s):
        self.reports.append((ranks.copy(), list(path), draft_s))

    def pad(self, tree):
        return tree.padded(len(tree.tokens) + 2)  # two root copies in every forward: must change nothing


def test_a_step_without_the_head_drafts_only_lookup_chains_and_stays_lossless(trained):
    target, work, *_ = trained
    head = load_head(work / "head", target)
    prompt = _prompts(9, 1)[0] * 3  # repeated: prompt lookup finds continuations
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, 50)
    budget = ScriptedBudget([0, 6, 0, 0, 3])
    drafter = ReDrafter(target, head, tree="dynamic", topk=3, depth=3, budget=budget, lookup=2)
    got, steps = generate_ids(target, drafter, prompt, 50)
    assert got == expected
    off = [j for j in range(len(budget.reports)) if budget.sizes[j % 5] == 0]
    assert all(budget.reports[j][2] is None and not budget.reports[j][0].any() for j in off)  # no draft; all nodes free
    assert all(budget.reports[j][2] is not None and budget.reports[j][0].max() == 6 for j in range(1, len(budget.reports), 5))
    decode = steps[1:]  # (steps[0] is the prefill)
    assert sum(decode[j].proposed for j in off) > 0  # the lookup-only steps did draft (the lookup's chains)


def test_rare_targets_join_the_batch_softmax(trained):
    """Targets outside the 64-token subset get their own output rows in that batch, instead of
    being masked out: the head learns them too."""
    target, work, trainer, *_ = trained
    positions = trainer.data.train_positions[:200]
    _, _, slots, weights, _, _, rows = trainer._arrays(positions, rare_targets=True)
    _, _, _, subset_weights, _, _, no_rows = trainer._arrays(positions)
    raw_targets, valid = trainer.data.batch(positions, trainer.config.length)[2:4]
    assert no_rows is None and rows.shape[0] > 64 and float(weights.sum()) == valid.sum() > float(subset_weights.sum())
    picked = np.array(rows[slots])[valid]  # each target's row must be its own row of the output layer
    assert np.allclose(picked, np.array(target.embed(mx.array(raw_targets[valid]))))


def test_draft_vocabulary_adds_context_tokens_with_padding(trained):
    target, work, *_ = trained
    head = load_head(work / "head", target)
    head.set_vocab_ids([5, 9])
    vocab = head.draft_vocabulary(target, [9, 7, 7], bucket=4)  # the docstring's example
    assert vocab.ids.tolist() == [5, 9, 7, 0, 0, 0] and vocab.bias.tolist() == [0, 0, 0, -1e9, -1e9, -1e9]
    assert np.allclose(np.array(vocab.rows[:3]), np.array(target.embed(mx.array([5, 9, 7]))))  # tied: the embedding rows
    assert not np.array(vocab.rows[3:]).any()
    assert head.draft_vocabulary(target, [5]).ids.tolist() == [5, 9]  # nothing new: no padding


def test_a_context_token_outside_the_head_vocabulary_gets_drafted(trained):
    """With a 2-token head vocabulary, drafts can only contain other tokens if the context's joined."""
    target, work, *_ = trained
    head = load_head(work / "head", target)
    head.set_vocab_ids([0, 1])
    prompt = [40, 41, 42, 43, 44, 45]
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, 30)
    for context_vocab in (False, True):
        drafter = ReDrafter(target, head, tree="beam", beam_width=2, beam_length=2, context_vocab=context_vocab)
        got, steps = generate_ids(target, drafter, prompt, 30)
        assert got == expected
        drafted = set(drafter.vocab.ids.tolist()) - {0}
        assert drafted == ({1} | set(prompt) if context_vocab else {1})


# -- the head's directory format and its errors --------------------------------------------------


def test_head_round_trip_and_wrong_target(trained, tmp_path):
    target, work, *_ = trained
    head = load_head(work / "head", target)
    assert head.vocab_ids.shape[0] == 64
    config = json.loads((work / "head" / "config.json").read_text())
    assert {"model_type", "hidden_size", "vocab_size", "fingerprint"} <= config.keys()
    other = tiny_model("llama", seed=4, scale=4.0)  # same shapes, other weights
    with pytest.raises(UserError, match="another llama model"):
        load_head(work / "head", other)
    wider = tiny_model("llama", seed=3, hidden_size=32, num_attention_heads=2, num_key_value_heads=1)
    with pytest.raises(UserError, match="trained for a llama target"):
        load_head(work / "head", wider)
    # the same target in float16 still matches (the fingerprint tolerates rounding)
    from mlx.utils import tree_map

    half = tiny_model("llama", seed=3, scale=4.0)
    half.update(tree_map(lambda a: a.astype(mx.float16), half.parameters()))
    assert load_head(work / "head", half).proj.weight.dtype == mx.float16


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 40), "damaged"),
        (lambda d: (d / "model.safetensors").unlink(), "no model.safetensors"),
        (lambda d: (d / "config.json").write_text("{not json"), "not a valid ReDrafter head config"),
        (lambda d: (d / "config.json").unlink(), "not a ReDrafter head directory"),
    ],
)
def test_damaged_head_is_a_user_error(trained, tmp_path, damage, message):
    import shutil

    target, work, *_ = trained
    shutil.copytree(work / "head", tmp_path / "head")
    damage(tmp_path / "head")
    with pytest.raises(UserError, match=message):
        load_head(tmp_path / "head", target)


def test_read_answers_store_the_targets_own_next_token(tmp_path):
    """Teacher-forced shards: right-padded rows of different lengths give, at every answer
    position, the hidden state and argmax of the target run on that sequence alone."""
    target = tiny_model("llama", seed=3, scale=4.0)
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 97, n).tolist(), rng.integers(0, 97, m).tolist()) for n, m in ((3, 9), (7, 2), (4, 15), (5, 5))]
    read_dataset(target, pairs, tmp_path, shard_samples=4, batch_tokens=40, top_k=3)
    shard = load_file(str(tmp_path / "shard-00000.safetensors"))
    starts = shard["starts"]
    got = {tuple(shard["tokens"][a:b]): (shard["labels"][a:b], shard["hidden"][a:b], shard["topk_ids"][a:b]) for a, b in zip(starts, starts[1:])}
    assert len(got) == 4
    for prompt, answer in pairs:
        logits, hidden = target(mx.array(prompt + answer))
        lo = len(prompt) - 1
        labels, h, topk = got[tuple(prompt[-1:] + answer)]
        expected = np.array(mx.argmax(logits[0, lo:], axis=-1))
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_allclose(h.astype(np.float32), np.array(hidden[0, lo:]), atol=2e-2, rtol=2e-2)
        assert all(e in row for e, row in zip(expected, topk))


def test_mixed_data_trains_on_labels_and_scores_generated_answers(trained, tmp_path):
    """A generated shard's label is its next token; a read shard's is the stored one. Held-out
    acceptance is scored on generated samples only."""
    target, work, _, _, _, _ = trained
    pairs = [(p, q) for p, q in zip(_prompts(5, 40), _prompts(6, 40))]
    read_dataset(target, pairs, tmp_path / "read", shard_samples=16)
    both = DistillData([work / "data", tmp_path / "read"], eval_fraction=0.3)
    generated_only = DistillData(work / "data", eval_fraction=0.3)
    n = len(generated_only.tokens)
    assert both.generated[:n].all() and not both.generated[n:].any()
    np.testing.assert_array_equal(both.eval_positions, generated_only.eval_positions)
    inside = np.flatnonzero(np.arange(n) + 1 < generated_only.end)
    np.testing.assert_array_equal(both.labels[inside], both.tokens[inside + 1])
    read_rows = np.flatnonzero(~both.generated)
    assert (both.labels[read_rows] != both.tokens[np.minimum(read_rows + 1, len(both.tokens) - 1)]).any()
    positions = both.train_positions[both.train_positions >= n][:50]
    _, inputs, targets, valid, _ = both.batch(positions, 2)
    np.testing.assert_array_equal(inputs[:, 0], both.tokens[positions + 1])
    np.testing.assert_array_equal(targets[valid[:, 0], 0], both.labels[positions + 1][valid[:, 0]])


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no training data"):
        DistillData(tmp_path / "nothing")
    with pytest.raises(UserError, match="not found"):
        file_prompts(tmp_path / "nothing.jsonl")
    with pytest.raises(UserError, match="no shipped ReDrafter head"):
        make_drafter("redrafter", target=tiny_model("llama", seed=0))


def test_truncated_json_array_is_read_record_by_record():
    assert list(iter_json_records('[{"a": 1}, {"b": [2, 3]}, {"c": "x')) == [{"a": 1}, {"b": [2, 3]}]
    assert list(iter_json_records("[]")) == []


# -- the command line -------------------------------------------------------------------------------


def _cli(*args, home=None):
    env = dict(os.environ, MLX_SPECDEC_NO_BLAS_REEXEC="1", **({"MLX_SPECDEC_HOME": str(home)} if home else {}))
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, env=env, timeout=300)


def test_train_drafter_cli_end_to_end_and_bad_input(tmp_path):
    from tiny_dir import write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path / "model")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(["hello world the cat", "what is the mat ?", "the cat sat on the mat", "hi a cat"] * 3))
    args = ["train-drafter", "-m", str(model), "--data", str(prompts), "--out", str(tmp_path / "head"), "--steps", "6",
            "--batch-size", "16", "--max-new-tokens", "12", "--gen-batch", "4", "--eval-every", "3", "--vocab-subset", "0"]
    res = _cli(*args)
    assert res.returncode == 0, res.stderr
    assert "eval_chain_tau" in res.stdout and (tmp_path / "head" / "model.safetensors").is_file()
    gen = _cli("generate", "-m", str(model), "-p", "the cat sat", "--method", "redrafter", "--drafter", str(tmp_path / "head"),
               "--max-tokens", "10", "--json", home=tmp_path / "store")  # default: dynamic tree, size auto, lookup 2
    assert gen.returncode == 0, gen.stderr
    ar = _cli("generate", "-m", str(model), "-p", "the cat sat", "--max-tokens", "10", "--json")
    assert json.loads(gen.stdout)["tokens"] == json.loads(ar.stdout)["tokens"]
    use_head = ["generate", "-m", str(model), "-p", "the cat sat", "--method", "redrafter", "--drafter", str(tmp_path / "head"), "--max-tokens", "10"]
    for shape in (["--tree", "beam", "--beam-width", "2", "--beam-length", "3"],
                  ["--tree", "dynamic", "--tree-topk", "3", "--tree-depth", "3", "--tree-size", "6"],
                  ["--tree", "dynamic", "--tree-size", "auto"],
                  ["--beam-width", "3", "--lookup", "0"],  # a beam option alone picks the beam tree
                  ["--tree-size", "5", "--lookup", "3"]):
        res = _cli(*use_head, *shape, "--json", home=tmp_path / "store")  # (--tree-size auto caches its cost table there)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["tokens"] == json.loads(ar.stdout)["tokens"], shape
    bad_uses = [
        (use_head + ["--tree", "beam", "--tree-size", "8"], "--tree-size only applies to --tree dynamic"),
        (use_head + ["--beam-width", "2", "--tree-topk", "2"], "--tree-topk only applies to --tree dynamic"),
        (use_head + ["--lookup", "-1"], "--lookup must be an integer >= 0"),
        (args + ["--feature-noise", "-1"], "Invalid value for '--feature-noise'"),
        (use_head + ["--tree", "dynamic", "--beam-width", "2"], "--beam-width only applies to --tree beam"),
        (use_head + ["--tree", "dynamic", "--tree-size", "many"], "--tree-size must be an integer >= 1 or 'auto'"),
        (use_head + ["--tree", "dynamic", "--tree-depth", "0"], "--tree-depth must be an integer >= 1"),
        (args + ["--data", str(tmp_path / "missing.jsonl")], "not found"),
        (args + ["--steps", "0"], "Invalid value for '--steps'"),
        (args + ["--read-answers", "5"], "it needs --data sharegpt"),
        (args + ["--read-answers", "-1"], "Invalid value for '--read-answers'"),
    ]
    for bad_args, message in bad_uses:
        res = _cli(*bad_args)
        lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
        assert res.returncode != 0 and len(lines) == 1 and message in lines[0], (bad_args, res.stderr)
    (tmp_path / "head" / "model.safetensors").write_bytes(b"junk")
    res = _cli("generate", "-m", str(model), "-p", "hi", "--method", "redrafter", "--drafter", str(tmp_path / "head"), "--max-tokens", "2")
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "damaged" in lines[0], res.stderr


def test_recycle_with_the_head_as_a_source_equals_ar(trained):
    """The head's dynamic tree merged with the automaton and the table (every node ranked by its
    measured acceptance): greedy output is ar's, with the head on every step or on every other."""
    from mlx_specdec.drafters.recycle import Recycle

    class Alternating(Recycle):
        def _head_pays(self):
            self.arm.steps += 1
            return self.arm.steps % 2 == 1

    target, work, *_ = trained
    head = load_head(work / "head", target)
    vocab = target.args.vocab_size
    head_accepted = 0
    for kind in (Recycle, Alternating):
        for prompt in _prompts(100, 3):
            for max_tokens in (1, 7, 30):
                expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
                drafter = kind(vocab, num_nodes=6, head=ReDrafter(target, head, tree="dynamic", topk=3, depth=3))
                got, steps = generate_ids(target, drafter, prompt, max_tokens)
                assert got == expected, (kind.__name__, prompt, max_tokens)
                head_accepted += drafter.stats.totals("head")[0]
        reference, _ = generate_ids(target, make_drafter("ar"), _prompts(7, 1)[0], 40)
        eos = [reference[12]]
        got, steps = generate_ids(target, kind(vocab, num_nodes=6, head=ReDrafter(target, head, tree="dynamic", topk=3, depth=3)),
                                  _prompts(7, 1)[0], 40, eos=eos)
        assert got == reference[: reference.index(eos[0])] and steps[-1].finish == "eos"
    assert head_accepted > 0  # the trained head's nodes get accepted inside the merged tree


def test_the_head_runs_where_its_steps_measure_faster():
    """With both arms measured, the faster one runs, and every 8th step tries the other."""
    from mlx_specdec.drafters.head_source import HEAD_EXPLORE
    from mlx_specdec.drafters.recycle import Recycle

    drafter = Recycle(10, num_nodes=2, head=object())
    assert drafter._head_pays() is True  # nothing measured: try the head first
    drafter.arm.rate[(False, True)] = 20.0
    assert drafter._head_pays() is False  # then the steps without it
    drafter.arm.rate[(False, False)] = 25.0
    runs = [drafter._head_pays() for _ in range(2 * HEAD_EXPLORE)]
    assert runs.count(True) == 2 and runs.count(False) == 2 * HEAD_EXPLORE - 2
    drafter._hot = True  # a copy in progress is judged on its own measurements
    assert drafter._head_pays() is True
