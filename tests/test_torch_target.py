"""The PyTorch reader computes what the MLX target computes, and stores the same shards."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from conftest import tiny_model
from mlx_specdec.errors import UserError
from mlx_specdec.train.generate import load_shard
from mlx_specdec.train.teacher_forced import read_dataset
from mlx_specdec.train.torch_target import TorchTarget, torch_available

if not torch_available():  # the train extra; the test extra installs it
    pytest.skip("PyTorch is not installed", allow_module_level=True)


def padded_rows(vocab, lengths, seed=0):
    rng = np.random.default_rng(seed)
    ids = np.zeros((len(lengths), max(lengths)), dtype=np.int32)
    for b, n in enumerate(lengths):
        ids[b, :n] = rng.integers(3, vocab, n)
    return ids


@pytest.mark.parametrize("arch,overrides", [("llama", {}), ("mistral", {}), ("qwen2", {}), ("qwen2", {"tie_word_embeddings": False})])
def test_forward_matches_the_mlx_target(arch, overrides):
    target = tiny_model(arch, seed=1, scale=2.0, **overrides)
    ids = padded_rows(target.args.vocab_size, [23, 17, 9])
    logits, hidden, taps = target(mx.array(ids), taps=(0, 1))
    reader = TorchTarget(target, threads=1)
    t_hidden, t_taps = reader.forward(ids, taps=(0, 1))
    np.testing.assert_allclose(t_hidden.numpy(), np.array(hidden), atol=2e-4, rtol=1e-4)
    for layer in (0, 1):
        np.testing.assert_allclose(t_taps[layer].numpy(), np.array(taps[layer]), atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(reader.logits(t_hidden).numpy(), np.array(logits), atol=1e-3, rtol=1e-4)


def test_a_wrong_forward_is_caught():
    """Negative control: the comparison above fails for a reader whose RoPE is off by one position."""
    target = tiny_model("llama", seed=1, scale=2.0)
    ids = padded_rows(target.args.vocab_size, [23])
    _, hidden = target(mx.array(ids))
    reader = TorchTarget(target, threads=1)
    reader.inv_freq = reader.inv_freq * 1.01
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(reader.forward(ids)[0].numpy(), np.array(hidden), atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["qwen3", "llama3-scaled"])
def test_other_architectures_are_refused_in_one_line(arch):
    with pytest.raises(UserError, match="--reader mlx") as error:
        TorchTarget(tiny_model(arch))
    assert "\n" not in str(error.value)


def test_read_dataset_stores_the_same_shard_with_either_reader(tmp_path):
    target = tiny_model("qwen2", seed=2, scale=3.0)
    rng = np.random.default_rng(0)
    pairs = [(rng.integers(3, 97, int(rng.integers(2, 9))).tolist(), rng.integers(3, 97, int(rng.integers(1, 30))).tolist()) for _ in range(12)]
    read_dataset(target, pairs, tmp_path / "mlx", shard_samples=12, batch_tokens=96, top_k=4)
    read_dataset(target, pairs, tmp_path / "torch", shard_samples=12, batch_tokens=96, top_k=4, torch_target=TorchTarget(target, threads=1))
    a, b = (load_shard(tmp_path / name / "shard-00000.safetensors") for name in ("mlx", "torch"))
    assert a.keys() == b.keys() == {"tokens", "hidden", "starts", "topk_ids", "topk_probs", "labels"}
    assert np.array_equal(a["tokens"], b["tokens"]) and np.array_equal(a["starts"], b["starts"])
    assert np.array_equal(a["labels"], b["labels"])
    assert a["hidden"].dtype == b["hidden"].dtype == np.float16
    np.testing.assert_allclose(b["hidden"].astype(np.float32), a["hidden"].astype(np.float32), atol=2e-3, rtol=2e-3)
    # top-k: the same ids with the same probabilities (MLX's argpartition leaves them unordered)
    for ids_a, p_a, ids_b, p_b in zip(a["topk_ids"], a["topk_probs"], b["topk_ids"], b["topk_probs"]):
        oa, ob = np.argsort(ids_a), np.argsort(ids_b)
        assert np.array_equal(ids_a[oa], ids_b[ob])
        np.testing.assert_allclose(p_b[ob].astype(np.float32), p_a[oa].astype(np.float32), atol=2e-3)


def test_eagle_trainer_reads_the_same_batch_with_either_reader(tmp_path):
    from mlx_specdec.train.eagle_trainer import EagleTrainConfig, EagleTrainer

    target = tiny_model("llama", seed=3, scale=3.0, num_hidden_layers=6)
    rng = np.random.default_rng(1)
    pairs = [(rng.integers(3, 97, int(rng.integers(2, 7))).tolist(), rng.integers(3, 97, int(rng.integers(3, 20))).tolist()) for _ in range(6)]
    config = EagleTrainConfig(steps=1, batch_tokens=256, top_k=4, draft_vocab=64)
    mlx_reader = EagleTrainer(target, pairs, tmp_path / "a", config)
    torch_reader = EagleTrainer(target, pairs, tmp_path / "b", config, torch_target=TorchTarget(target, threads=1))
    e1, g1, s1, p1, w1, a1 = (np.array(x) for x in mlx_reader.read(pairs))
    e2, g2, s2, p2, w2, a2 = (np.array(x) for x in torch_reader.read(pairs))
    assert np.array_equal(e1, e2) and np.array_equal(w1, w2) and w1.sum() > 0
    np.testing.assert_allclose(g2, g1, atol=5e-5 * np.abs(g1).max(), rtol=1e-4)  # float32 rounding at |g| ~ 80
    live = w1 > 0
    assert np.array_equal(a1[live], a2[live])
    for sa, pa, sb, pb in zip(s1[live], p1[live], s2[live], p2[live]):  # the same soft label, in any order
        label_a = {int(s): float(p) for s, p in zip(sa, pa) if p > 0}
        label_b = {int(s): float(p) for s, p in zip(sb, pb) if p > 0}
        assert label_a.keys() == label_b.keys()
        np.testing.assert_allclose([label_b[k] for k in label_a], list(label_a.values()), atol=2e-3)  # logits ~ 80: float32 rounding
