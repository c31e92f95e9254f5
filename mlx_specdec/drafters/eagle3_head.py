"""EAGLE-3's draft head and its directory: the published Hugging Face layout (DESIGN.md §8).

One head step over n new entries (shapes in brackets; D = the target's hidden size)::

    g   = fc(cat(tap_lo, tap_mid, tap_hi))       (n, D)    only for entries that come from the target;
                                                           a drafted entry reuses the head's own h
    x   = cat(input_layernorm(embed(token)), hidden_norm(g))          (n, 2D)
    a   = o_proj(attention(q_proj(x), k_proj(x), v_proj(x)))          (n, D)   over the head's KV cache
    h   = g + a;  h = h + mlp(post_attention_layernorm(h))            (n, D)   pre-norm: feeds the next step
    logits = lm_head(norm(h))                                         (n, V_d) over the draft vocabulary
    target id of draft id d = d + d2t[d]

Token shift: the entry at position t pairs the feature of position t with token t + 1, so it
predicts token t + 2. The embedding is the target's own (frozen, not in the checkpoint).

Directory (what EAGLE, SpecForge, SGLang and vLLM publish): ``config.json`` Llama-shaped with
``num_hidden_layers: 1`` and ``draft_vocab_size``, and ``model.safetensors`` with exactly::

    fc.weight (D, 3D)   midlayer.self_attn.{q,k,v,o}_proj.weight (q: (H*hd, 2D))
    midlayer.mlp.{gate,up,down}_proj.weight   midlayer.{input_layernorm,hidden_norm,post_attention_layernorm}.weight
    norm.weight   lm_head.weight (V_d, D)   d2t int64 (V_d,)   t2d bool (V,)

(an ``embed_tokens.weight`` some checkpoints carry is ignored). ``head_dim`` is inferred from
q_proj's shape. Heads this project trains add ``eagle_config.eagle_aux_hidden_state_layer_ids``
(SpecForge's key for the taps) and an ``mlx_specdec`` entry (target layer count, fingerprint).
:func:`load_eagle3_head` checks hidden size, vocabulary and layer count against the target.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import UserError

FORMAT = "mlx-specdec/eagle3-head"
NORMS = ("input_layernorm", "hidden_norm", "post_attention_layernorm")


def apply_rope(x: mx.array, rope, offset: int = 0, positions: mx.array | None = None) -> mx.array:
    """Rotate x (B, H, L, hd) at ``offset + arange(L)``, or each token at its own ``positions`` (L,)
    (``mx.fast.rope`` takes one offset per batch row, so the tokens go along the batch axis)."""
    if positions is None:
        return rope(x, offset=offset)
    B, H, L, D = x.shape
    flat = x.transpose(0, 2, 1, 3).reshape(B * L, H, 1, D)
    out = rope(flat, offset=mx.broadcast_to(positions.astype(mx.int32), (B, L)).reshape(-1))
    return out.reshape(B, L, H, D).transpose(0, 2, 1, 3)


def default_taps(num_layers: int) -> list[int]:
    """EAGLE-3's low, middle and high layers {2, L//2, L-3}, clamped into the model (tiny test
    models have fewer than 6 layers). Example: 30 layers -> [2, 15, 27]."""
    return [min(2, num_layers - 1), num_layers // 2, max(num_layers - 3, 0)]


def head_config(target, draft_vocab_size: int, intermediate_size: int | None = None, num_attention_heads: int | None = None,
                num_key_value_heads: int | None = None, taps=None) -> dict:
    """A config.json dict (Llama-shaped, one layer) for a new head of ``target``."""
    from .redrafter_head import target_fingerprint

    args = target.args
    D, L = args.hidden_size, len(target.layers)
    heads = num_attention_heads or getattr(args, "num_attention_heads", max(1, D // 64))
    return {
        "architectures": ["LlamaForCausalLMEagle3"],
        "model_type": "llama",
        "hidden_size": D,
        "intermediate_size": intermediate_size or getattr(args, "intermediate_size", 4 * D),
        "num_attention_heads": heads,
        "num_key_value_heads": num_key_value_heads or getattr(args, "num_key_value_heads", heads) or heads,
        "num_hidden_layers": 1,
        "rms_norm_eps": float(getattr(args, "rms_norm_eps", 1e-5)),
        "rope_theta": float(getattr(args, "rope_theta", 10000.0)),
        "vocab_size": args.vocab_size,
        "draft_vocab_size": int(draft_vocab_size),
        "tie_word_embeddings": False,
        "eagle_config": {"eagle_aux_hidden_state_layer_ids": list(taps or default_taps(L))},
        "mlx_specdec": {"format": FORMAT, "target_model_type": args.model_type, "target_num_hidden_layers": L,
                        "fingerprint": target_fingerprint(target), "training": {}},
    }


class Eagle3Head(nn.Module):
    """The head (see the module docstring). ``config``: the config.json dict; ``head_dim`` as in
    the checkpoint's q_proj."""

    def __init__(self, config: dict, head_dim: int | None = None):
        super().__init__()
        D, I = config["hidden_size"], config["intermediate_size"]
        H = config["num_attention_heads"]
        Hkv = config.get("num_key_value_heads") or H
        hd = head_dim or config.get("head_dim") or D // H
        Vd = config.get("draft_vocab_size") or config["vocab_size"]
        eps = config.get("rms_norm_eps", 1e-5)
        self._holder = SimpleNamespace(config=config)  # a dict attribute would join the parameters
        self.n_heads, self.n_kv_heads, self.head_dim = H, Hkv, hd
        self.fc = nn.Linear(3 * D, D, bias=False)
        self.midlayer = nn.Module()
        attn = self.midlayer.self_attn = nn.Module()
        attn.q_proj = nn.Linear(2 * D, H * hd, bias=False)
        attn.k_proj = nn.Linear(2 * D, Hkv * hd, bias=False)
        attn.v_proj = nn.Linear(2 * D, Hkv * hd, bias=False)
        attn.o_proj = nn.Linear(H * hd, D, bias=False)
        mlp = self.midlayer.mlp = nn.Module()
        mlp.gate_proj = nn.Linear(D, I, bias=False)
        mlp.up_proj = nn.Linear(D, I, bias=False)
        mlp.down_proj = nn.Linear(I, D, bias=False)
        for name in NORMS:
            setattr(self.midlayer, name, nn.RMSNorm(D, eps=eps))
        self.norm = nn.RMSNorm(D, eps=eps)
        self.lm_head = nn.Linear(D, Vd, bias=False)
        self.d2t = mx.zeros((Vd,), mx.int64)
        self.t2d = mx.zeros((config["vocab_size"],), mx.bool_)
        self.freeze(keys=["d2t", "t2d"], recurse=False)
        self.rope_theta = float(config.get("rope_theta", 10000.0))
        from mlx_lm.models.rope_utils import initialize_rope

        self._rope = SimpleNamespace(module=initialize_rope(hd, self.rope_theta, False, config.get("rope_scaling"),
                                                             config.get("max_position_embeddings", 8192)))  # no parameters
        self._draft_ids = None
        self.target_layers = (config.get("mlx_specdec") or {}).get("target_num_hidden_layers", 0)  # set at load

    @property
    def config(self) -> dict:
        return self._holder.config

    @property
    def taps(self) -> list[int]:
        ids = (self.config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids")
        return list(ids) if ids else default_taps(self.target_layers)

    @property
    def draft_vocab_size(self) -> int:
        return self.lm_head.weight.shape[0]

    def set_draft_vocab(self, target_ids, vocab_size: int) -> None:
        """Draft vocabulary = ``target_ids`` (V_d,) ascending: sets d2t (offsets) and t2d (membership).
        Example: target_ids [0, 5, 9] -> d2t [0, 4, 7]; t2d True at 0, 5, 9."""
        ids = np.asarray(target_ids, dtype=np.int64)
        t2d = np.zeros(vocab_size, dtype=bool)
        t2d[ids] = True
        self.d2t, self.t2d = mx.array(ids - np.arange(len(ids))), mx.array(t2d)
        self.freeze(keys=["d2t", "t2d"], recurse=False)
        self._draft_ids = None

    def draft_ids(self) -> mx.array:
        """(V_d,) the target id of each draft id."""
        if self._draft_ids is None:
            self._draft_ids = (mx.arange(self.d2t.shape[0], dtype=mx.int64) + self.d2t).astype(mx.int32)
        return self._draft_ids

    def fuse(self, taps: mx.array) -> mx.array:
        """(..., 3D) concatenated taps -> (..., D)."""
        return self.fc(taps)

    def step(self, e: mx.array, g: mx.array, positions: mx.array, past_k: mx.array | None, past_v: mx.array | None, mask: mx.array | None):
        """One pass of the decoder layer over n entries.

        e, g: (n, D) token embeddings and features; positions: (n,) int; past_k/past_v:
        (1, H_kv, S, hd) or None; mask: (n, S + n) bool (True = may attend) or None (causal).
        Returns (h (n, D) pre-norm, k, v (1, H_kv, n, hd)) — the new entries' keys and values.
        """
        layer, attn = self.midlayer, self.midlayer.self_attn
        n = e.shape[0]
        x = mx.concatenate([layer.input_layernorm(e), layer.hidden_norm(g)], axis=-1)[None]  # (1, n, 2D)
        q = attn.q_proj(x).reshape(1, n, self.n_heads, -1).transpose(0, 2, 1, 3)
        k = attn.k_proj(x).reshape(1, n, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        v = attn.v_proj(x).reshape(1, n, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
        q, k = apply_rope(q, self._rope.module, 0, positions), apply_rope(k, self._rope.module, 0, positions)
        keys = k if past_k is None else mx.concatenate([past_k, k], axis=2)
        values = v if past_v is None else mx.concatenate([past_v, v], axis=2)
        if mask is None:
            S = keys.shape[2] - n
            mask = (mx.arange(S + n)[None] <= (S + mx.arange(n))[:, None]) if n > 1 or S else None
        out = mx.fast.scaled_dot_product_attention(q, keys, values, scale=self.head_dim**-0.5, mask=mask)
        h = g + attn.o_proj(out.transpose(0, 2, 1, 3).reshape(1, n, -1))[0]
        mlp = layer.mlp
        z = layer.post_attention_layernorm(h)
        h = h + mlp.down_proj(nn.silu(mlp.gate_proj(z)) * mlp.up_proj(z))
        return h, k, v

    def logits(self, h: mx.array) -> mx.array:
        """(..., V_d) draft-vocabulary logits of pre-norm states h (..., D)."""
        return self.lm_head(self.norm(h))

    def unroll(self, e: mx.array, g: mx.array, steps: int):
        """Training-time test over a batch of sequences (EAGLE-3's ``traineagle3``).

        e: (B, T, D) embeddings of tokens 1..T (row t holds token t + 1, paired with feature t);
        g: (B, T, D) fused taps. Step 0 runs on the target's features with causal attention. Step
        i > 0 feeds the head's own output h of step i - 1 at the same row, with tokens shifted one
        more (row t: token t + 1 + i) at position t + i, attending to the step-0 keys of rows <= t
        (the committed cache at inference) and to its own row's keys of steps 1..i (its draft
        ancestors), exactly what a depth-i draft node sees. Returns ``steps`` logits (B, T, V_d);
        step i at row t predicts token t + 2 + i (rows past the end see padding: mask their loss).
        """
        B, T, D = e.shape
        layer, attn = self.midlayer, self.midlayer.self_attn
        rep = self.n_heads // self.n_kv_heads
        causal = mx.where(mx.arange(T)[None] <= mx.arange(T)[:, None], 0.0, -1e9).astype(mx.float32)
        outs, diag_k, diag_v = [], [], []
        k0 = v0 = None
        for i in range(steps):
            ei = e if i == 0 else mx.concatenate([e[:, i:], mx.zeros((B, i, D), e.dtype)], axis=1)
            x = mx.concatenate([layer.input_layernorm(ei), layer.hidden_norm(g)], axis=-1)
            q = attn.q_proj(x).reshape(B, T, self.n_heads, -1).transpose(0, 2, 1, 3)
            k = attn.k_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
            v = attn.v_proj(x).reshape(B, T, self.n_kv_heads, -1).transpose(0, 2, 1, 3)
            q, k = apply_rope(q, self._rope.module, i), apply_rope(k, self._rope.module, i)
            if rep > 1:
                k, v = mx.repeat(k, rep, axis=1), mx.repeat(v, rep, axis=1)
            q = q * self.head_dim**-0.5
            if i == 0:
                k0, v0 = k, v
            else:
                diag_k.append(k)
                diag_v.append(v)
            scores = [(q @ k0.transpose(0, 1, 3, 2)).astype(mx.float32) + causal]  # (B, H, T, T)
            scores += [(q * dk).sum(-1, keepdims=True).astype(mx.float32) for dk in diag_k]  # (B, H, T, 1) each
            probs = mx.softmax(mx.concatenate(scores, axis=-1), axis=-1).astype(q.dtype)
            out = probs[..., :T] @ v0
            for j, dv in enumerate(diag_v):
                out = out + probs[..., T + j : T + j + 1] * dv
            h = g + attn.o_proj(out.transpose(0, 2, 1, 3).reshape(B, T, -1))
            z = layer.post_attention_layernorm(h)
            h = h + layer.mlp.down_proj(nn.silu(layer.mlp.gate_proj(z)) * layer.mlp.up_proj(z))
            outs.append(self.logits(h))
            g = h
        return outs


# -- the directory ---------------------------------------------------------------------------------


def tensor_shapes(config: dict, head_dim: int) -> dict[str, tuple]:
    D, I, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    H, Hkv = config["num_attention_heads"], config.get("num_key_value_heads") or config["num_attention_heads"]
    Vd = config.get("draft_vocab_size") or V
    a = "midlayer.self_attn."
    shapes = {"fc.weight": (D, 3 * D), a + "q_proj.weight": (H * head_dim, 2 * D), a + "k_proj.weight": (Hkv * head_dim, 2 * D),
              a + "v_proj.weight": (Hkv * head_dim, 2 * D), a + "o_proj.weight": (D, H * head_dim),
              "midlayer.mlp.gate_proj.weight": (I, D), "midlayer.mlp.up_proj.weight": (I, D), "midlayer.mlp.down_proj.weight": (D, I),
              "norm.weight": (D,), "lm_head.weight": (Vd, D), "d2t": (Vd,), "t2d": (V,)}
    shapes.update({f"midlayer.{n}.weight": (D,) for n in NORMS})
    return shapes


def save_eagle3_head(head: Eagle3Head, path: str | Path, dtype=mx.float16) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` in the published layout."""
    from mlx.utils import tree_flatten

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = {k: v.astype(dtype) for k, v in tree_flatten(head.parameters()) if k not in ("d2t", "t2d")}
    weights["d2t"], weights["t2d"] = head.d2t.astype(mx.int64), head.t2d.astype(mx.bool_)
    tmp = path / "model.safetensors.tmp.safetensors"
    mx.save_safetensors(str(tmp), weights, metadata={"format": "pt"})
    tmp.replace(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps({**head.config, "head_dim": head.head_dim}, indent=1))
    return path


def is_eagle3_dir(path: str | Path) -> bool:
    """True when ``path/config.json`` describes an EAGLE-3 head (``draft_vocab_size`` or its architecture)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and ("draft_vocab_size" in config or "Eagle3" in str(config.get("architectures")))


def read_eagle3_config(path: Path) -> dict:
    file = path / "config.json"
    if not file.is_file():
        raise UserError(f"{path} is not an EAGLE-3 head directory (no config.json)")
    try:
        config = json.loads(file.read_text())
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "vocab_size"):
            if not isinstance(config.get(key), int) or config[key] < 1:
                raise ValueError(f"{key} missing or not a positive integer")
        if config.get("num_hidden_layers", 1) != 1:
            raise ValueError(f"num_hidden_layers is {config['num_hidden_layers']}, EAGLE-3 heads have 1")
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{file} is not a valid EAGLE-3 head config ({e})") from None
    return config


def check_eagle3_target(config: dict, target, path) -> None:
    from .redrafter_head import fingerprint_matches, target_fingerprint

    args = target.args
    L = len(target.layers)
    if (config["hidden_size"], config["vocab_size"]) != (args.hidden_size, args.vocab_size):
        raise UserError(f"{path} is an EAGLE-3 head for a target with hidden size {config['hidden_size']} and vocabulary"
                        f" {config['vocab_size']}, not this model's {args.hidden_size} / {args.vocab_size}")
    ours = config.get("mlx_specdec") or {}
    trained_for = ours.get("target_num_hidden_layers")
    if trained_for is not None and trained_for != L:
        raise UserError(f"{path} is an EAGLE-3 head for a {trained_for}-layer target, not this {L}-layer model")
    taps = (config.get("eagle_config") or {}).get("eagle_aux_hidden_state_layer_ids") or default_taps(trained_for or L)
    if len(taps) != 3 or not all(isinstance(t, int) and 0 <= t < L for t in taps):
        raise UserError(f"{path} taps layers {taps}, which this {L}-layer model does not have (need 3 layers in 0..{L - 1})")
    if ours.get("fingerprint") and not fingerprint_matches(ours["fingerprint"], target_fingerprint(target)):
        raise UserError(f"{path} was trained for another {args.model_type} model (its weight fingerprint differs)")


def load_eagle3_head(path: str | Path, target, dtype=None) -> Eagle3Head:
    """Load a published-layout EAGLE-3 directory for ``target``; one-line UserError when it does not
    fit the target, lacks a tensor or has a tensor of the wrong shape."""
    path = Path(path)
    config = read_eagle3_config(path)
    check_eagle3_target(config, target, path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{path} has no .safetensors weights")
    weights = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as e:
            raise UserError(f"{file} is damaged ({str(e).splitlines()[0]})") from None
    weights.pop("embed_tokens.weight", None)  # some checkpoints carry the target's embedding
    q = weights.get("midlayer.self_attn.q_proj.weight")
    if q is None or q.ndim != 2 or q.shape[0] % config["num_attention_heads"]:
        raise UserError(f"{path}: midlayer.self_attn.q_proj.weight is missing or its shape does not fit {config['num_attention_heads']} heads")
    head_dim = q.shape[0] // config["num_attention_heads"]
    expected = tensor_shapes(config, head_dim)
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise UserError(f"{path} lacks the tensor {missing[0]}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise UserError(f"{path} has an unexpected tensor {extra[0]} (not an EAGLE-3 head?)")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise UserError(f"{path}: {name} has shape {tuple(weights[name].shape)}, expected {shape}")
    d2t = np.array(weights.pop("d2t")).astype(np.int64)
    t2d = np.array(weights.pop("t2d")).astype(bool)
    ids = np.arange(len(d2t)) + d2t
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= config["vocab_size"]:
        raise UserError(f"{path}: d2t maps a draft token outside the vocabulary")
    head = Eagle3Head(config, head_dim)
    head.target_layers = len(target.layers)
    dtype = dtype or target.embed(mx.array([0])).dtype
    head.load_weights([(k, v.astype(dtype)) for k, v in weights.items()], strict=False)
    head.d2t, head.t2d = mx.array(d2t), mx.array(t2d)
    head.freeze(keys=["d2t", "t2d"], recurse=False)
    mx.eval(head.parameters())
    return head
