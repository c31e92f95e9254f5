"""EAGLE-3: the published directory layout and its errors, the head's KV cache after a verified
tree (checked against a recomputation by hand), greedy losslessness on tiny random models."""

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors.numpy import save_file

from mlx_specdec.cache import KVCache
from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.eagle import Eagle
from mlx_specdec.drafters.recycle import Recycle
from mlx_specdec.drafters.eagle3_head import Eagle3Head, default_taps, head_config, load_eagle3_head, save_eagle3_head
from mlx_specdec.drafters.tree_budget import TreeBudget
from mlx_specdec.errors import UserError
from mlx_specdec.generate import Session
from mlx_specdec.tree import Tree

from conftest import generate_ids, tiny_model

ROOT = Path(__file__).resolve().parents[1]
LAYERS = 6  # taps {2, 3, 3}


def _target(arch="llama", seed=0, scale=1.0):
    return tiny_model(arch, seed=seed, scale=scale, num_hidden_layers=LAYERS)


def published_dir(path: Path, D=64, V=97, Vd=40, H=4, Hkv=2, hd=24, I=96, seed=0, drop=None, reshape=None, config_overrides=None) -> Path:
    """Write a head directory exactly as EAGLE-3 checkpoints are published (numpy safetensors,
    DESIGN.md §8 names, a Llama-shaped config.json with num_hidden_layers 1 and draft_vocab_size)."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float16)
    a = "midlayer.self_attn."
    tensors = {
        "fc.weight": w(D, 3 * D), a + "q_proj.weight": w(H * hd, 2 * D), a + "k_proj.weight": w(Hkv * hd, 2 * D),
        a + "v_proj.weight": w(Hkv * hd, 2 * D), a + "o_proj.weight": w(D, H * hd),
        "midlayer.mlp.gate_proj.weight": w(I, D), "midlayer.mlp.up_proj.weight": w(I, D), "midlayer.mlp.down_proj.weight": w(D, I),
        "midlayer.input_layernorm.weight": np.ones(D, np.float16), "midlayer.hidden_norm.weight": np.ones(D, np.float16),
        "midlayer.post_attention_layernorm.weight": np.ones(D, np.float16), "norm.weight": np.ones(D, np.float16),
        "lm_head.weight": w(Vd, D),
    }
    ids = np.sort(rng.choice(V, Vd, replace=False))
    tensors["d2t"] = (ids - np.arange(Vd)).astype(np.int64)
    t2d = np.zeros(V, dtype=bool)
    t2d[ids] = True
    tensors["t2d"] = t2d
    if drop:
        tensors.pop(drop)
    if reshape:
        tensors[reshape] = tensors[reshape][:-1]
    config = {"architectures": ["LlamaForCausalLMEagle3"], "model_type": "llama", "hidden_size": D, "intermediate_size": I,
              "num_attention_heads": H, "num_key_value_heads": Hkv, "num_hidden_layers": 1, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "vocab_size": V, "draft_vocab_size": Vd, "tie_word_embeddings": False,
              "torch_dtype": "float16", **(config_overrides or {})}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(path / "model.safetensors"))
    return path


def random_head(target, Vd=60, seed=1):
    mx.random.seed(seed)
    head = Eagle3Head(head_config(target, Vd))
    head.set_draft_vocab(np.arange(Vd), target.args.vocab_size)
    mx.eval(head.parameters())
    return head


def _prompts(seed, n, vocab=97):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, rng.integers(3, 10)).tolist() for _ in range(n)]


# -- the published layout ---------------------------------------------------------------------------


def test_default_taps():
    assert default_taps(30) == [2, 15, 27] and default_taps(6) == [2, 3, 3] and default_taps(2) == [1, 1, 0]


def test_a_published_layout_directory_loads_and_drafts(tmp_path):
    target = _target()
    head = load_eagle3_head(published_dir(tmp_path / "h"), target)
    assert head.head_dim == 24 and head.draft_vocab_size == 40  # head_dim from q_proj (not D / H = 16)
    assert head.taps == [2, 3, 3]
    ids = np.array(head.draft_ids())
    assert np.array_equal(np.flatnonzero(np.array(head.t2d)), np.sort(ids))
    drafter = Eagle(target, head, topk=3, depth=3, num_nodes=6)
    prompt = _prompts(0, 1)[0]
    expected, _ = generate_ids(target, make_drafter("ar"), prompt, 20)
    got, steps = generate_ids(target, drafter, prompt, 20)
    assert got == expected
    drafted = [s for s in steps if not s.prefill]
    assert all(s.proposed == 6 for s in drafted[:-1])
    # every drafted token is in the draft vocabulary (target ids via d2t)
    tree = drafter.propose(got[-1])
    assert set(tree.tokens[1:].tolist()) <= set(ids.tolist())


def test_save_writes_the_published_names_and_round_trips(tmp_path):
    target = _target()
    head = random_head(target)
    save_eagle3_head(head, tmp_path / "h")
    from safetensors import safe_open

    with safe_open(str(tmp_path / "h" / "model.safetensors"), framework="numpy") as f:
        names = set(f.keys())
        assert f.get_tensor("d2t").dtype == np.int64 and f.get_tensor("t2d").dtype == bool
    assert "fc.weight" in names and "midlayer.self_attn.q_proj.weight" in names and "midlayer.hidden_norm.weight" in names
    assert names == {"fc.weight", "norm.weight", "lm_head.weight", "d2t", "t2d"} | {n for n in names if n.startswith("midlayer.")}
    config = json.loads((tmp_path / "h" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and config["draft_vocab_size"] == 60
    loaded = load_eagle3_head(tmp_path / "h", target, dtype=mx.float32)
    e, g = mx.random.normal((3, 64)), mx.random.normal((3, 64))
    a = head.logits(head.step(e, g, mx.arange(3), None, None, None)[0])
    b = loaded.logits(loaded.step(e, g, mx.arange(3), None, None, None)[0])
    assert np.allclose(np.array(a), np.array(b), atol=0.05)  # float16 on disk


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(D=32), "hidden size 32"),
        (dict(V=50), "vocabulary 50"),
        (dict(drop="midlayer.hidden_norm.weight"), "lacks the tensor midlayer.hidden_norm.weight"),
        (dict(drop="d2t"), "lacks the tensor d2t"),
        (dict(reshape="midlayer.mlp.up_proj.weight"), "midlayer.mlp.up_proj.weight has shape"),
        (dict(reshape="lm_head.weight"), "lm_head.weight has shape"),
        (dict(config_overrides={"eagle_config": {"eagle_aux_hidden_state_layer_ids": [1, 3, 9]}}), "taps layers [1, 3, 9]"),
        (dict(config_overrides={"num_hidden_layers": 2}), "num_hidden_layers is 2"),
    ],
)
def test_a_head_that_does_not_fit_is_a_one_line_user_error(tmp_path, kwargs, message):
    target = _target()
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        load_eagle3_head(published_dir(tmp_path / "h", **kwargs), target)
    assert "\n" not in str(info.value)


def test_our_heads_record_the_target_layer_count(tmp_path):
    head = random_head(_target())
    save_eagle3_head(head, tmp_path / "h")
    with pytest.raises(UserError, match="for a 6-layer target, not this 4-layer model"):
        load_eagle3_head(tmp_path / "h", tiny_model("llama", num_hidden_layers=4))
    with pytest.raises(UserError, match="fingerprint"):
        load_eagle3_head(tmp_path / "h", _target(seed=9))


# -- the head's KV cache keeps only the accepted path ---------------------------------------------


NEXT_ROOT = 7  # a root for the step after a generation; inside the tiny vocabulary (97): an id past
# it makes the embedding read memory it does not own (nondeterministic values, not an error)


def _recomputed_cache(target, head, tokens, root):
    """The head's cache built from scratch: one causal target forward over ``tokens`` (with taps),
    then one head step over every position (feature t paired with token t + 1, the last with root)."""
    _, _, tapped = target(mx.array(tokens)[None], KVCache(len(target.layers)), taps=head.taps)
    g = head.fuse(mx.concatenate([tapped[i][0] for i in head.taps], axis=-1))
    _, k, v = head.step(target.embed(mx.array(tokens[1:] + [root])), g, mx.arange(len(tokens)), None, None, None)
    return k, v


def test_head_cache_holds_the_accepted_path_after_a_hand_made_tree():
    target = _target(seed=2)
    head = random_head(target, seed=4)
    drafter = Eagle(target, head, topk=2, depth=3, num_nodes=4)
    session = Session(target)
    prompt = [5, 17, 3, 22, 9]
    steps = session.generate(prompt, drafter, max_tokens=50)
    root = next(steps).tokens[0]  # prefill: the drafter has the prompt's 5 features pending
    assert drafter.k is None and drafter.pending[0][0].shape == (5, 64)
    # one step by hand: root r -> {a, b}, a -> c, c -> d; accept [r, a, c] (whatever the target says:
    # the head's bookkeeping does not depend on why a path was accepted)
    drafter.propose(root)  # writes the 5 prompt entries, drafts (the draft rounds are not kept)
    assert drafter.k.shape[2] == 5 and drafter.positions.tolist() == [0, 1, 2, 3, 4]
    tree = Tree(np.array([root, 11, 12, 13, 14]), np.array([-1, 0, 0, 1, 3]))
    past = session.cache.offset
    logits, hidden, taps = session.forward(tree, head.taps)
    path = [0, 1, 3]
    session.cache.keep(past, path)
    drafter.commit(tree, path, hidden, logits, taps=taps)
    accepted = prompt + [root, 11, 13]
    assert drafter.k.shape[2] == 5  # nothing written yet: the path waits for the next root
    drafter.propose(42)
    assert drafter.k.shape[2] == len(accepted) and drafter.positions.tolist() == list(range(len(accepted)))
    k, v = _recomputed_cache(target, head, accepted, 42)
    assert np.allclose(np.array(drafter.k), np.array(k), atol=1e-4) and np.allclose(np.array(drafter.v), np.array(v), atol=1e-4)


def test_head_cache_matches_a_recomputation_after_a_whole_generation():
    target = _target(seed=5, scale=3.0)
    head = random_head(target, seed=6)
    drafter = Eagle(target, head, topk=3, depth=3, num_nodes=6, lookup=2)
    prompt = _prompts(3, 1)[0] * 3
    out, steps = generate_ids(target, drafter, prompt, 30)
    drafter.propose(NEXT_ROOT)  # write the last step's pending entries
    assert drafter.history[: len(prompt) + len(out) - 1] == prompt + out[:-1]  # (a last step may overshoot max_tokens)
    k, v = _recomputed_cache(target, head, drafter.history, NEXT_ROOT)
    assert drafter.k.shape == k.shape and np.allclose(np.array(drafter.k), np.array(k), atol=1e-4)


# -- lossless --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "llama3-scaled", "qwen2", "qwen3", "mistral"])
def test_greedy_equals_autoregressive_on_tiny_random_models(arch):
    target = tiny_model(arch, seed=7, scale={"mistral": 6.0}.get(arch, 3.0), num_hidden_layers=LAYERS)
    head = random_head(target, Vd=97)
    accepted = 0
    for prompt in _prompts(100, 2):
        prompt = prompt * 3  # repeats: lookup chains get accepted
        for max_tokens in (1, 9, 60):
            expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
            got, steps = generate_ids(target, Eagle(target, head, topk=3, depth=4, num_nodes=8, lookup=2), prompt, max_tokens)
            assert got == expected, (arch, prompt, max_tokens)
            assert len(got) == max_tokens and steps[-1].finish == "length"
            accepted += sum(s.accepted for s in steps)
    assert accepted > 0


def test_tree_budget_and_eos_stay_lossless():
    target = _target(seed=8, scale=3.0)
    head = random_head(target, Vd=97)
    budget = TreeBudget({1: 0.05, 8: 0.06, 16: 0.5}, max_nodes=12, warmup=2, explore_every=3)
    prompt = _prompts(9, 1)[0] * 2
    reference, _ = generate_ids(target, make_drafter("ar"), prompt, 50)
    got, steps = generate_ids(target, Eagle(target, head, topk=3, depth=4, budget=budget, lookup=2), prompt, 50)
    assert got == reference and budget.count[1] > 0
    eos = [reference[20]]
    got, steps = generate_ids(target, Eagle(target, head, topk=3, depth=4, num_nodes=8, lookup=2), prompt, 50, eos=eos)
    assert got == reference[: reference.index(eos[0])] and steps[-1].finish == "eos"


def test_budget_size_zero_skips_the_head_and_keeps_its_cache_right():
    """Steps without the head leave their features pending; the next head step writes them all."""
    target = _target(seed=8, scale=3.0)
    head = random_head(target, Vd=97)

    class Alternate(TreeBudget):
        def choose(self):
            self.steps += 1
            return 0 if self.steps % 2 else 6

    budget = Alternate({1: 0.05, 8: 0.06}, max_nodes=8)
    prompt = _prompts(4, 1)[0] * 2
    reference, _ = generate_ids(target, make_drafter("ar"), prompt, 25)
    drafter = Eagle(target, head, topk=3, depth=3, budget=budget, lookup=2)
    got, _ = generate_ids(target, drafter, prompt, 25)
    assert got == reference
    drafter.budget = None
    drafter.propose(7)
    k, _ = _recomputed_cache(target, head, prompt + got[:-1], 7)
    assert np.allclose(np.array(drafter.k), np.array(k), atol=1e-4)


def test_a_second_turn_reuses_the_head_cache_of_the_shared_prefix():
    target = _target(seed=8, scale=3.0)
    head = random_head(target, Vd=97)
    session = Session(target)
    drafter = Eagle(target, head, topk=3, depth=3, num_nodes=6)
    first = [4, 8, 15, 16, 23, 42]
    out1, _ = generate_ids(target, drafter, first, 10, session=session)
    second = first + out1 + [7, 7, 9]
    out2, _ = generate_ids(target, drafter, second, 10, session=session)
    expected, _ = generate_ids(target, make_drafter("ar"), second, 10)
    assert out2 == expected


def _cli(*args, home=None):
    import os

    env = dict(os.environ, MLX_SPECDEC_NO_BLAS_REEXEC="1", **({"MLX_SPECDEC_HOME": str(home)} if home else {}))
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, env=env, timeout=300)


def _pairs_file(path):
    words = "hello world the cat sat on the mat what is a hi".split()
    rng = np.random.default_rng(0)
    lines = [json.dumps({"prompt": " ".join(rng.choice(words, 5)), "answer": " ".join(rng.choice(words, 12))}) for _ in range(30)]
    path.write_text("\n".join(lines))
    return path


def test_distill_on_gpu_script_cpu_dry_run_trains_and_the_head_drafts_losslessly(tmp_path):
    """The GPU recipe's CPU path on a tiny model: data, training, the head written, then drafting."""
    import os

    from tiny_dir import write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path / "model")
    env = dict(os.environ, DRY_RUN="1", MODEL=str(model), DATA=str(_pairs_file(tmp_path / "pairs.jsonl")), OUT=str(tmp_path / "out"),
               PAIRS="24", STEPS="6", BATCH_TOKENS="256", EVAL_PROMPTS="4", EVAL_EVERY="3", MAX_NEW="8", EXTRA_ARGS="--draft-vocab 50 --unroll 3",
               MLX_SPECDEC_NO_BLAS_REEXEC="1")
    res = subprocess.run(["bash", str(ROOT / "scripts" / "distill_on_gpu.sh")], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    head = tmp_path / "out" / "eagle3-head"
    assert "eval_chain_tau" in res.stdout and (head / "model.safetensors").is_file()
    assert not (tmp_path / "out" / "work" / "redrafter-data").exists()
    gen = _cli("generate", "-m", str(model), "-p", "the cat sat", "--method", "eagle", "--drafter", str(head), "--max-tokens", "10", "--json",
               home=tmp_path / "store")
    assert gen.returncode == 0, gen.stderr
    ar = _cli("generate", "-m", str(model), "-p", "the cat sat", "--max-tokens", "10", "--json")
    assert json.loads(gen.stdout)["tokens"] == json.loads(ar.stdout)["tokens"]
    bad = _cli("train-drafter", "--arch", "eagle4", "-m", str(model), "--out", str(tmp_path / "x"))
    assert bad.returncode != 0 and "--arch must be redrafter or eagle3" in bad.stderr


def test_cli_rejects_a_head_that_does_not_fit_in_one_line(tmp_path):
    from tiny_dir import write_tiny_model_dir

    model = write_tiny_model_dir(tmp_path / "model")
    bad = published_dir(tmp_path / "head", D=32)
    result = _cli("generate", "-m", str(model), "-p", "hi", "--method", "eagle", "--drafter", str(bad), "--max-tokens", "3")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "hidden size 32" in result.stdout + result.stderr


# -- training (online: the target reads each batch) ------------------------------------------------


def _own_answers(target, prompts, n=40):
    """(prompt, the target's greedy answer) pairs."""
    from mlx_specdec.train.generate import _batched_greedy

    rows = _batched_greedy(target, prompts, n, set(), 0)
    return [(p, r[0][1:].tolist()) for p, r in zip(prompts, rows)]


@pytest.fixture(scope="module")
def trained_eagle(tmp_path_factory):
    from mlx_specdec.train.eagle_trainer import EagleTrainConfig, EagleTrainer

    """A random tiny target is a random function of its context, so a head cannot generalise to new
    prompts in a few seconds of training: the pipeline is checked by fitting its data (acceptance on
    answers it trained on rises), and held-out generalisation is measured on the real model."""
    target = _target(seed=3, scale=4.0)
    pairs = _own_answers(target, _prompts(0, 48))
    held = pairs[:8]
    work = tmp_path_factory.mktemp("eagle")
    config = EagleTrainConfig(steps=100, batch_tokens=512, unroll=3, top_k=4, draft_vocab=64, lr=1e-2, warmup=5, eval_every=50, checkpoint_every=20)
    trainer = EagleTrainer(target, pairs, work / "run", config, eval_answers=held, side_shards=work / "redrafter-data")
    before = trainer.evaluate()
    losses = []
    after = trainer.train(lambda event: losses.append(event.loss))
    trainer.export(work / "head")
    return target, work, trainer, losses, before, after, pairs, held, config


def test_eagle_training_lowers_the_loss_and_raises_acceptance(trained_eagle):
    target, work, trainer, losses, before, after, *_ = trained_eagle
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:3])
    assert after["chain_tau"] > before["chain_tau"] + 0.2 and after["top1_d1"] > before["top1_d1"]
    assert set(after) >= {"top1_d1", "top1_d2", "top1_d3", "chain_tau"}
    head = load_eagle3_head(work / "head", target)
    assert head.draft_vocab_size == 64 and json.loads((work / "head" / "config.json").read_text())["draft_vocab_size"] == 64


def test_side_shards_hold_the_same_tokens_for_a_redrafter_head(trained_eagle):
    from mlx_specdec.train.eagle_trainer import redrafter_depth_metrics
    from mlx_specdec.train.trainer import DistillData, Trainer, TrainConfig

    target, work, trainer, *_ , pairs, held, config = trained_eagle
    data = DistillData(work / "redrafter-data")
    epoch = {j for g in trainer.groups for j in g}
    assert len(list((work / "redrafter-data").glob("shard-*.safetensors"))) == len(trainer.groups)  # first epoch only
    assert len(data.tokens) == sum(len(pairs[j][1]) + 1 for j in epoch)
    # the stored labels are the target's own argmax after each token
    first = trainer.groups[np.random.default_rng([config.seed, 0]).permutation(len(trainer.groups))[0]][0]  # step 0's first row
    p, a = pairs[first]
    logits, _ = target(mx.array(p + a)[None])
    argmax = np.array(mx.argmax(logits[0], axis=-1))
    n = len(a) + 1
    assert data.tokens[:n].tolist() == (p + a)[len(p) - 1 :] and data.labels[:n].tolist() == argmax[len(p) - 1 :].tolist()
    redrafter = Trainer(target, data, work / "rd-run", TrainConfig(steps=5, batch_size=32, vocab_subset=64, eval_every=5))
    redrafter.train()
    metrics = redrafter_depth_metrics(redrafter.head, target, held, depth=3)
    assert set(metrics) >= {"chain_tau", "top1_d1", "top1_d3"} and metrics["positions"] > 0


def test_the_trained_head_drafts_accepted_tokens_losslessly(trained_eagle):
    target, work, *_ = trained_eagle
    head = load_eagle3_head(work / "head", target)
    accepted = 0
    for prompt in _prompts(0, 4):  # prompts it trained on (see trained_eagle)
        expected, _ = generate_ids(target, make_drafter("ar"), prompt, 30)
        got, steps = generate_ids(target, Eagle(target, head, topk=3, depth=4, num_nodes=8), prompt, 30)
        assert got == expected
        accepted += sum(s.accepted for s in steps)
    assert accepted > 20


def test_eagle_training_resumes_to_the_same_weights(trained_eagle, tmp_path):
    from mlx.utils import tree_flatten

    from mlx_specdec.train.eagle_trainer import EagleTrainConfig, EagleTrainer

    target, _, _, _, _, _, pairs, held, config = trained_eagle
    config = EagleTrainConfig(**{**config.__dict__, "steps": 9, "checkpoint_every": 4, "eval_every": 3})
    straight = EagleTrainer(target, pairs, tmp_path / "a", config, held)
    straight.train()

    class Stop(Exception):
        pass

    def stop(event):
        if event.step == 6:
            raise Stop

    with pytest.raises(Stop):
        EagleTrainer(target, pairs, tmp_path / "b", config, held).train(stop)
    resumed = EagleTrainer(target, pairs, tmp_path / "b", config, held)
    assert resumed.try_resume() and resumed.step == 4
    resumed.train()
    assert [r["step"] for r in resumed.history] == [3, 6, 9]
    for (name, x), (_, y) in zip(tree_flatten(straight.head.trainable_parameters()), tree_flatten(resumed.head.trainable_parameters())):
        assert np.allclose(np.array(x), np.array(y), atol=1e-5), name


# -- the default model (slow) ------------------------------------------------------------------------


@pytest.mark.slow
def test_greedy_equals_autoregressive_on_the_default_model(tmp_path):
    """SmolLM2-135M (float32) with an EAGLE-3 head in the published layout (the shipped one when
    there is one, else random weights of the right shapes) drafting budgeted trees plus lookup."""
    from mlx_specdec.drafters.eagle import find_shipped_eagle_head
    from mlx_specdec.loader import load
    from mlx_specdec.store import default_model_dir

    loaded = load(default_model_dir(), "float32")
    target = loaded.model
    path = find_shipped_eagle_head(target)
    if path is None:
        save_eagle3_head(random_head(target, Vd=2048), tmp_path / "head")
        path = tmp_path / "head"
    drafter = make_drafter("eagle", target=target, head_path=path, budget=TreeBudget({1: 0.03, 8: 0.04, 16: 0.06, 32: 0.1}, max_nodes=16), lookup=2)
    for text in ["Write a haiku about the sea.", "Repeat after me: the cat sat on the mat, the cat sat on the mat."]:
        ids = loaded.tokenizer.chat_ids([{"role": "user", "content": text}])
        expected, _ = generate_ids(target, make_drafter("ar"), ids, 48)
        got, steps = generate_ids(target, drafter, ids, 48)
        assert got == expected


# -- the head as a source of recycle's merged tree ----------------------------------------------------


class AlternatingRecycle(Recycle):
    """recycle whose head runs every other step (what its speed comparison may choose)."""

    def _head_pays(self):
        self.arm.steps += 1
        return self.arm.steps % 2 == 1


def test_recycle_with_an_eagle_head_equals_ar_and_keeps_the_head_cache_right():
    target = _target(seed=8, scale=3.0)
    head = random_head(target, Vd=97)
    head_trials = 0
    for prompt in _prompts(21, 3):
        prompt = prompt * 2
        for max_tokens in (1, 8, 40):
            expected, _ = generate_ids(target, make_drafter("ar"), prompt, max_tokens)
            drafter = AlternatingRecycle(97, num_nodes=6, head=Eagle(target, head, topk=3, depth=3))
            got, steps = generate_ids(target, drafter, prompt, max_tokens)
            assert got == expected, (prompt, max_tokens)
            head_trials += drafter.stats.totals("head")[1]
    assert head_trials > 0  # head nodes were verified
    # after steps with and without the head, its cache holds exactly the accepted text
    drafter.head.draft(NEXT_ROOT)
    history = drafter.head.history
    assert history[: len(prompt) + len(got) - 1] == prompt + got[:-1]
    k, _ = _recomputed_cache(target, head, history, NEXT_ROOT)
    assert np.allclose(np.array(drafter.head.k), np.array(k), atol=1e-4)
