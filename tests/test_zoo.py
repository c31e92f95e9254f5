"""mlx-lm's architectures as targets through the adapter (tiny random models from mlx-lm's own
ModelArgs): one tree forward equals the same path's chain forwards, greedy ar == pld == lookahead
== redrafter (random head), the CLI generates from each saved directory, and recurrent/hybrid
architectures are refused with one line."""

import json
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_map

from mlx_specdec.cache import KVCache
from mlx_specdec.drafters import make_drafter
from mlx_specdec.drafters.redrafter import ReDrafter
from mlx_specdec.drafters.redrafter_head import HeadConfig, ReDrafterHead
from mlx_specdec.errors import UserError
from mlx_specdec.generate import Session
from mlx_specdec.models import build_model, load_model
from mlx_specdec.tree import Tree

from conftest import generate_ids
from tiny_dir import write_model_dir

BASE = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=96, num_attention_heads=4, num_key_value_heads=2,
            rms_norm_eps=1e-5, vocab_size=97, max_position_embeddings=2048, rope_theta=10000.0, tie_word_embeddings=True)
ZOO = {
    "llama": dict(model_type="llama"),
    "llama-sliding": dict(model_type="llama", layer_types=["sliding_attention", "full_attention"], sliding_window=6),
    "mistral": dict(model_type="mistral", tie_word_embeddings=False),
    "qwen2": dict(model_type="qwen2"),
    "qwen3": dict(model_type="qwen3", head_dim=32),
    "qwen3_moe": dict(model_type="qwen3_moe", head_dim=16, num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1,
                      mlp_only_layers=[], moe_intermediate_size=32, norm_topk_prob=True),
    "gemma3_text": dict(model_type="gemma3_text", head_dim=16, num_key_value_heads=1, query_pre_attn_scalar=16,
                        sliding_window=6, sliding_window_pattern=2, rope_local_base_freq=10000.0, rms_norm_eps=1e-6),
    "phi3": dict(model_type="phi3", tie_word_embeddings=False),
    "granite": dict(model_type="granite", logits_scaling=2.0, attention_multiplier=0.2, embedding_multiplier=3.0,
                    residual_multiplier=0.5, attention_bias=False, mlp_bias=False),
    "olmo2": dict(model_type="olmo2"),
    "glm4": dict(model_type="glm4", head_dim=16, attention_bias=True, partial_rotary_factor=0.5),
    "smollm3": dict(model_type="smollm3", num_hidden_layers=4, no_rope_layer_interval=2),
}


def zoo_config(arch: str) -> dict:
    return {**BASE, **ZOO[arch]}


def zoo_model(arch: str, seed: int = 0, scale: float = 3.0):
    """Random weights, scaled so greedy continuations repeat (drafts get accepted)."""
    mx.random.seed(seed)
    model = build_model(zoo_config(arch))
    model.update(tree_map(lambda a: a * scale if a.ndim > 1 else a, model.parameters()))
    mx.eval(model.parameters())
    return model


@pytest.fixture(params=list(ZOO))
def zoo_arch(request):
    return request.param


def test_tree_forward_equals_chain_forward(zoo_arch):
    model = zoo_model(zoo_arch, seed=1, scale=1.0)
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 97, size=9).tolist()
    parents = np.array([-1, 0, 1, 2, 0, 4, 4, 3, 7, 1])  # a deep chain (past the sliding window) and fan-outs
    tree = Tree(rng.integers(0, 97, size=10), parents)
    session = Session(model)
    session._prefill(prompt)
    logits, hidden = session.forward(tree)
    for node in range(tree.num_nodes):
        cache = KVCache(len(model.layers))
        model(mx.array(prompt)[None], cache)
        ref, ref_hidden = model(mx.array(tree.tokens[tree.path_to(node)])[None], cache)
        assert mx.abs(ref[0, -1] - logits[node]).max().item() <= 1e-4, (zoo_arch, node)
        assert mx.abs(ref_hidden[0, -1] - hidden[node]).max().item() <= 1e-4, (zoo_arch, node)


def test_same_logits_as_mlx_lm_generate_path(zoo_arch):
    """The adapter's chain forward over our cache == mlx-lm's own model over its own caches."""
    from mlx_lm.models.cache import make_prompt_cache

    model = zoo_model(zoo_arch, seed=2, scale=1.0)
    tokens = mx.array([[1, 17, 42, 8, 96, 0, 33, 5, 61, 4, 9]])
    theirs_cache = make_prompt_cache(model.module)
    theirs = model.module(tokens, cache=theirs_cache)
    cache = KVCache(len(model.layers))
    ours, _ = model(tokens, cache)
    assert mx.abs(ours - theirs).max().item() <= 1e-4
    for token in (7, 3, 55, 12, 80, 1, 2, 3):  # one-token steps, past the sliding window
        step, _ = model(mx.array([[token]]), cache)
        their_step = model.module(mx.array([[token]]), cache=theirs_cache)
        assert mx.abs(step - their_step).max().item() <= 1e-4, zoo_arch


def test_lm_head_logits_and_taps(zoo_arch):
    model = zoo_model(zoo_arch, seed=3, scale=1.0)
    tokens = mx.array([[5, 9, 11, 3, 7]])
    logits, hidden, taps = model(tokens, KVCache(len(model.layers)), taps=(0, len(model.layers) - 1))
    assert mx.abs(model.lm_head_logits(hidden) - logits).max().item() <= 1e-5
    assert mx.abs(model.lm_head_logits(hidden[0, -1]) - logits[0, -1]).max().item() <= 1e-5
    assert sorted(taps) == [0, len(model.layers) - 1] and taps[0].shape == (1, 5, model.args.hidden_size)
    embedded = model.embed(tokens)
    assert taps[0].shape == embedded.shape


def _prompts(seed, n=2):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 97, size=5).tolist() * 2 + rng.integers(0, 97, size=2).tolist() for _ in range(n)]


def test_greedy_ar_pld_lookahead_redrafter_agree(zoo_arch):
    target = zoo_model(zoo_arch, seed=4)
    head = ReDrafterHead(HeadConfig.for_target(target))
    mx.eval(head.parameters())
    drafters = {
        "pld": lambda: make_drafter("pld"),
        "lookahead": lambda: make_drafter("lookahead", window=3, ngram=3, guesses=2),
        "redrafter": lambda: ReDrafter(target, head, tree="dynamic", topk=3, depth=3, num_nodes=6, lookup=2),
    }
    accepted = {name: 0 for name in drafters}
    for prompt in _prompts(5):
        expected, _ = generate_ids(target, make_drafter("ar"), prompt, 24)
        for name, drafter in drafters.items():
            got, steps = generate_ids(target, drafter(), prompt, 24)
            assert got == expected, (zoo_arch, name, prompt)
            accepted[name] += sum(s.accepted for s in steps)
    assert accepted["pld"] + accepted["lookahead"] > 0, accepted  # drafts did get accepted somewhere


@pytest.mark.parametrize(
    "config",
    [
        dict(model_type="mamba", vocab_size=97, hidden_size=32, intermediate_size=64, state_size=4, num_hidden_layers=2,
             conv_kernel=3, use_bias=False, use_conv_bias=True, time_step_rank=4),
        dict(BASE, model_type="qwen3_next", linear_num_value_heads=2, linear_num_key_heads=2, linear_key_head_dim=16,
             linear_value_head_dim=16, linear_conv_kernel_dim=3, num_experts=2, num_experts_per_tok=1, decoder_sparse_step=1,
             shared_expert_intermediate_size=32, mlp_only_layers=[], moe_intermediate_size=32, partial_rotary_factor=0.5,
             head_dim=16, full_attention_interval=2),
    ],
    ids=["mamba", "qwen3_next"],
)
def test_recurrent_architectures_are_refused(config):
    with pytest.raises(UserError, match="cannot roll back") as error:
        build_model(config)
    assert "\n" not in str(error.value)


def test_unknown_architecture_is_refused():
    with pytest.raises(UserError, match="unsupported architecture 'no_such_model'"):
        build_model(dict(BASE, model_type="no_such_model"))


@pytest.fixture(scope="module")
def zoo_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {arch: write_model_dir(root / arch, zoo_config(arch), zoo_model(arch, seed=6)) for arch in ZOO}


def test_saved_directory_loads_with_the_same_logits(zoo_dirs, zoo_arch):
    loaded, _ = load_model(zoo_dirs[zoo_arch])
    model = zoo_model(zoo_arch, seed=6)
    tokens = mx.array([[3, 4, 5, 6, 7]])
    assert mx.abs(loaded(tokens)[0] - model(tokens)[0]).max().item() <= 1e-5


def test_generate_pld_from_each_directory(zoo_dirs, zoo_arch):
    """`generate -m DIR --method pld` (in-process; the subprocess form is tested once below)."""
    from typer.testing import CliRunner

    from mlx_specdec.cli.app import app

    result = CliRunner().invoke(app, ["generate", "-m", str(zoo_dirs[zoo_arch]), "-p", "the cat sat on the mat the cat",
                                      "--method", "pld", "--max-tokens", "8", "--temp", "0", "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    out = json.loads(result.stdout)
    assert out["method"] == "pld" and out["stats"]["new_tokens"] >= 1


def test_cli_py_generate_pld(zoo_dirs):
    cli = Path(__file__).resolve().parent.parent / "cli.py"
    result = subprocess.run(
        [sys.executable, str(cli), "generate", "-m", str(zoo_dirs["gemma3_text"]), "-p", "the cat sat on the mat the cat",
         "--method", "pld", "--max-tokens", "8", "--temp", "0", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["stats"]["new_tokens"] >= 1


def test_a_sparse_cache_view_equals_masking_the_hidden_slots():
    """The seam for StreamingLLM / TriForce caches: a LayerCache subclass that exposes only some
    slots to one-token steps (here 2 sinks + the last 3 + itself) gives the same logits as hiding
    the others with a mask."""
    from mlx_specdec.layer_cache import LayerCache

    class SinksAndRecent(LayerCache):
        def visible_slots(self, window):
            past = self.plan.past
            if self.plan.n > 1:  # the prompt sees everything, like the reference
                return slice(0, None)
            return mx.array([0, 1, past - 3, past - 2, past - 1, past])  # past: the new token's slot

    class StreamingKV(KVCache):
        def layer_views(self, plan, windows):
            return [SinksAndRecent(self, i, plan, w) for i, w in enumerate(windows)]

    model = zoo_model("qwen3", seed=8, scale=1.0)
    prompt = mx.array([[4, 8, 15, 16, 23, 42, 7, 9, 11, 2]])
    sparse, plain = StreamingKV(len(model.layers)), KVCache(len(model.layers))
    model(prompt, sparse)
    model(prompt, plain)
    for token in (5, 6):
        past = plain.offset
        mask = np.zeros((1, past + 1), dtype=bool)
        mask[0, [0, 1, past - 3, past - 2, past - 1, past]] = True
        ref, _ = model(mx.array([[token]]), plain, mx.array(mask), mx.array([past]))
        got, _ = model(mx.array([[token]]), sparse)
        assert mx.abs(got - ref).max().item() <= 1e-4
