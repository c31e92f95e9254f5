"""GGUF import of Gemma 3 on a tiny hand-built file: llama.cpp's names and its ``1 + w`` norm
convention undone, the sliding-window settings, the SentencePiece-BPE tokenizer (merges from
scores, byte fallback), and the result runs in mlx-lm and as our target (tree == chain)."""

import json

import mlx.core as mx
import numpy as np
from gguf import GGUFWriter, TokenType

from mlx_specdec.gguf_import import convert_gguf

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
BYTES = [f"<0x{b:02X}>" for b in range(256)]
PIECES = {"▁": -1.0, "t": -2.0, "h": -2.0, "e": -2.0, "c": -2.0, "a": -2.0, "▁t": -3.0, "he": -4.0, "▁the": -5.0,
          "▁c": -6.0, "at": -7.0, "▁cat": -8.0, "▁th": -9.0}


def tiny_gemma3_gguf(path, hidden=64, heads=4, kv_heads=1, head_dim=16, ffn=96, layers=6, window=4, seed=0):
    """Write the GGUF; returns the Hugging Face weights it must convert back to."""
    rng = np.random.default_rng(seed)
    tokens = SPECIALS + BYTES + list(PIECES) + ["\n\n", "  "]
    scores = [-1000.0] * len(SPECIALS) + [0.0] * 256 + list(PIECES.values()) + [0.0, 0.0]
    types = [TokenType.CONTROL] * 4 + [TokenType.BYTE] * 256 + [TokenType.NORMAL] * len(PIECES) + [TokenType.USER_DEFINED] * 2
    types[3] = TokenType.UNKNOWN
    writer = GGUFWriter(path, "gemma3")
    writer.add_block_count(layers)
    writer.add_context_length(512)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(1000000.0)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_sliding_window(window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)

    expected = {}

    def add(gguf_name, hf_name, w, norm=False):
        w = w.astype(np.float32)
        stored = (w + np.float32(1.0)).astype(np.float32) if norm else w  # llama.cpp stores 1 + w
        writer.add_tensor(gguf_name, stored)
        expected[hf_name] = (stored - np.float32(1.0)).astype(np.float32) if norm else w

    add("token_embd.weight", "model.embed_tokens.weight", rng.normal(0, 0.5, (len(tokens), hidden)))
    for i in range(layers):
        p, b = f"model.layers.{i}", f"blk.{i}"
        for gguf_norm, hf_norm in [("attn_norm", "input_layernorm"), ("post_attention_norm", "post_attention_layernorm"),
                                   ("ffn_norm", "pre_feedforward_layernorm"), ("post_ffw_norm", "post_feedforward_layernorm")]:
            add(f"{b}.{gguf_norm}.weight", f"{p}.{hf_norm}.weight", 0.1 * rng.normal(size=hidden), norm=True)
        add(f"{b}.attn_q_norm.weight", f"{p}.self_attn.q_norm.weight", 0.1 * rng.normal(size=head_dim), norm=True)
        add(f"{b}.attn_k_norm.weight", f"{p}.self_attn.k_norm.weight", 0.1 * rng.normal(size=head_dim), norm=True)
        add(f"{b}.attn_q.weight", f"{p}.self_attn.q_proj.weight", rng.normal(0, 0.3, (heads * head_dim, hidden)))
        add(f"{b}.attn_k.weight", f"{p}.self_attn.k_proj.weight", rng.normal(0, 0.3, (kv_heads * head_dim, hidden)))
        add(f"{b}.attn_v.weight", f"{p}.self_attn.v_proj.weight", rng.normal(0, 0.3, (kv_heads * head_dim, hidden)))
        add(f"{b}.attn_output.weight", f"{p}.self_attn.o_proj.weight", rng.normal(0, 0.3, (hidden, heads * head_dim)))
        add(f"{b}.ffn_gate.weight", f"{p}.mlp.gate_proj.weight", rng.normal(0, 0.3, (ffn, hidden)))
        add(f"{b}.ffn_up.weight", f"{p}.mlp.up_proj.weight", rng.normal(0, 0.3, (ffn, hidden)))
        add(f"{b}.ffn_down.weight", f"{p}.mlp.down_proj.weight", rng.normal(0, 0.3, (hidden, ffn)))
    add("output_norm.weight", "model.norm.weight", 0.1 * rng.normal(size=hidden), norm=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected, tokens


def test_gemma3_gguf_converts_exactly(tmp_path):
    expected, _ = tiny_gemma3_gguf(tmp_path / "g.gguf")
    out = convert_gguf(tmp_path / "g.gguf", tmp_path / "out")
    weights = mx.load(str(out / "model.safetensors"))
    assert sorted(weights) == sorted(expected)
    for name, w in expected.items():
        assert np.array_equal(np.array(weights[name]), w), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["tie_word_embeddings"] is True
    assert (config["sliding_window"], config["sliding_window_pattern"], config["query_pre_attn_scalar"]) == (4, 6, 16)
    assert config["layer_types"] == ["sliding_attention"] * 5 + ["full_attention"]
    assert (config["head_dim"], config["num_key_value_heads"], config["rope_local_base_freq"]) == (16, 1, 10000.0)


def test_gemma3_tokenizer(tmp_path):
    _, tokens = tiny_gemma3_gguf(tmp_path / "g.gguf")
    from mlx_specdec.tokenizer import Tokenizer

    tok = Tokenizer(convert_gguf(tmp_path / "g.gguf", tmp_path / "out"))
    pieces = lambda text: [tokens[i] for i in tok.encode(text)]
    assert pieces("the cat") == ["t", "he", "▁cat"]  # merges by score: ▁the needs a leading space
    assert pieces(" the  cat") == ["▁the", "  ", "c", "at"]  # "  " is a user-defined piece (raw text)
    assert pieces("ü") == ["<0xC3>", "<0xBC>"]  # byte fallback
    assert tok.encode("the", add_special_tokens=True)[0] == 2
    for text in ["the cat", " the  cat\n\nü!", "zebra"]:
        assert tok.decode(tok.encode(text)) == text


def test_gemma3_gguf_runs_in_mlx_lm_and_as_a_target(tmp_path):
    tiny_gemma3_gguf(tmp_path / "g.gguf")
    out = convert_gguf(tmp_path / "g.gguf", tmp_path / "out")
    from mlx_lm.utils import load_model as mlx_lm_load

    from mlx_specdec.drafters import make_drafter
    from mlx_specdec.loader import load

    from conftest import generate_ids

    theirs, _ = mlx_lm_load(out)
    ours = load(out, "float32").model
    ids = mx.array([[2, 270, 271, 268, 5, 9, 270, 271, 268]])
    assert mx.abs(theirs(ids) - ours(ids)[0]).max().item() <= 1e-4
    prompt = [2, 270, 271, 268, 270, 271, 268, 270]
    expected, _ = generate_ids(ours, make_drafter("ar"), prompt, 20)  # past the 4-token window
    for method in ("pld", "lookahead"):
        assert generate_ids(ours, make_drafter(method), prompt, 20)[0] == expected, method
