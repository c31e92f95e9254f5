"""ReDrafter's recurrent draft head, and its directory format (config.json + model.safetensors).

One draft step, for a batch of B partial drafts (shapes in brackets)::

    e_t = target.embed(previous draft token)          (B, D)   the target's own frozen table
    s_t = SiLU(W e_t + U s_{t-1} + b)                 (B, D)   s_0 = 0; [W U] is one (D, 2D) matmul
    x   = proj(concat(h, s_t))                        (B, D)   h: target's hidden at the root's parent
    x   = x + SiLU(block_i(x))     i = 1..num_blocks
    logits = RMSNorm(x) @ out_rows.T                  (B, V')  out_rows: rows of the target's LM head

The output layer is the target's own frozen LM head (tied embeddings for SmolLM2), restricted to
the ``vocab_subset`` most frequent tokens of the training data (``vocab_ids``; tokens outside it are
never drafted, verification stays exact). So the head owns only ~6 D^2 parameters (2M for D=576,
4 MB in float16) and one draft step costs a D x V' matmul instead of D x V.

Because those rows are the target's own, any token can join the draft vocabulary later without
retraining: :meth:`ReDrafterHead.draft_vocabulary` adds the tokens of the context (names and terms
the answer will copy from the prompt), and the trainer adds each batch's rarer target tokens.

The directory records which target it was trained for: architecture, hidden size, vocabulary size
and a fingerprint (a few values of a few embedding rows). :func:`load_head` checks them against the
target and raises :class:`UserError` on mismatch or a damaged file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import UserError

FORMAT = "mlx-specdec/redrafter-head"
FINGERPRINT_ROWS = (0, 1, 2, 100, 1000)
FINGERPRINT_DIMS = 16


@dataclass
class HeadConfig:
    model_type: str
    hidden_size: int
    vocab_size: int
    fingerprint: list = field(default_factory=list)  # (rows, dims) floats, see target_fingerprint
    num_blocks: int = 2
    vocab_subset: int = 0  # 0 = the whole vocabulary
    format: str = FORMAT
    version: int = 1
    training: dict = field(default_factory=dict)  # how it was made (data, steps, acceptance): informative

    @classmethod
    def for_target(cls, target, **kwargs) -> "HeadConfig":
        args = target.args
        return cls(args.model_type, args.hidden_size, args.vocab_size, target_fingerprint(target), **kwargs)

    @classmethod
    def from_dict(cls, d: dict) -> "HeadConfig":
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in d.items() if k in names})


def target_fingerprint(target) -> list[list[float]]:
    """The first FINGERPRINT_DIMS values of a few embedding rows, as floats (dtype independent)."""
    rows = [r % target.args.vocab_size for r in FINGERPRINT_ROWS]
    values = target.embed(mx.array(rows))[:, :FINGERPRINT_DIMS].astype(mx.float32)
    return np.round(np.array(values), 5).tolist()


def fingerprint_matches(a, b) -> bool:
    """Same target up to dtype/quantization rounding: correlation of the values above 0.95."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape or a.size == 0:
        return False
    if np.allclose(a, b, atol=1e-6):
        return True
    a, b = a - a.mean(), b - b.mean()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return bool(denom > 0 and (a @ b) / denom > 0.95)


def lm_head_rows(target, ids: mx.array) -> mx.array:
    """(n, D) rows of the target's output layer for the token ids (n,), dequantized if needed."""
    if target.args.tie_word_embeddings:
        return target.embed(ids)
    lm_head = target.lm_head
    if hasattr(lm_head, "scales"):
        return mx.dequantize(lm_head.weight[ids], lm_head.scales[ids], lm_head.biases[ids], lm_head.group_size, lm_head.bits)
    return lm_head.weight[ids]


@dataclass
class DraftVocab:
    """The tokens a head may draft: ids (V'',) with their output rows (V'', D) and a bias (V'',)
    that is 0 for real slots and -1e9 for padding (so padded slots are never drafted)."""

    ids: mx.array
    rows: mx.array
    bias: mx.array

    @property
    def size(self) -> int:
        return self.ids.shape[0]


class ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def __call__(self, x):
        return x + nn.silu(self.linear(x))


class ReDrafterHead(nn.Module):
    def __init__(self, config: HeadConfig):
        super().__init__()
        D = config.hidden_size
        self.config = config
        self.rnn = nn.Linear(2 * D, D)  # [W U] . concat(e_t, s_{t-1}) + b: one matmul per step
        self.proj = nn.Linear(2 * D, D)
        self.blocks = [ResBlock(D) for _ in range(config.num_blocks)]
        self.norm = nn.RMSNorm(D)
        self.vocab_ids = mx.arange(config.vocab_subset or config.vocab_size, dtype=mx.int32)
        self.freeze(keys=["vocab_ids"], recurse=False)
        self._out_rows = None  # (V', D) cached rows of the target's LM head

    def set_vocab_ids(self, ids) -> None:
        self.vocab_ids = mx.array(np.asarray(ids, dtype=np.int32))
        self.freeze(keys=["vocab_ids"], recurse=False)
        self._out_rows = None

    def output_rows(self, target) -> mx.array:
        """(V', D) the target's LM head rows for ``vocab_ids`` (frozen; computed once)."""
        if self._out_rows is None:
            self._out_rows = mx.stop_gradient(lm_head_rows(target, self.vocab_ids))
            mx.eval(self._out_rows)
        return self._out_rows

    def draft_vocabulary(self, target, extra=(), bucket: int = 256) -> DraftVocab:
        """``vocab_ids`` plus the ``extra`` token ids it lacks, those padded to a multiple of
        ``bucket`` slots (so the compiled search sees few distinct shapes).

        Example: vocab_ids [5, 9], extra [9, 7, 7], bucket 4 -> ids [5, 9, 7, 0, 0, 0],
        bias [0, 0, 0, -1e9, -1e9, -1e9].
        """
        base = np.array(self.vocab_ids)
        extra = np.setdiff1d(np.unique(np.asarray(list(extra), dtype=np.int64)), base)
        extra = extra[(extra >= 0) & (extra < self.config.vocab_size)].astype(np.int32)
        pad = -len(extra) % bucket if len(extra) else 0
        ids = mx.array(np.concatenate([base, extra, np.zeros(pad, np.int32)]))
        rows = self.output_rows(target)
        if len(extra):
            new_rows = lm_head_rows(target, mx.array(extra)).astype(rows.dtype)
            rows = mx.concatenate([rows, new_rows, mx.zeros((pad, rows.shape[1]), rows.dtype)])
        bias = mx.array(np.concatenate([np.zeros(len(base) + len(extra), np.float32), np.full(pad, -1e9, np.float32)]))
        mx.eval(ids, rows, bias)
        return DraftVocab(ids, rows, bias)

    def step(self, h: mx.array, e: mx.array, s: mx.array | None):
        """One recurrent step. h, e: (..., D); s: (..., D) or None (= 0). Returns the new state."""
        s = mx.zeros_like(e) if s is None else mx.broadcast_to(s, e.shape)
        return nn.silu(self.rnn(mx.concatenate([e, s], axis=-1)))

    def features(self, h: mx.array, s: mx.array) -> mx.array:
        x = self.proj(mx.concatenate([mx.broadcast_to(h, s.shape), s], axis=-1))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def logits(self, target, h: mx.array, s: mx.array, vocab: DraftVocab | None = None) -> mx.array:
        """(..., V') logits over ``vocab_ids`` (or over ``vocab``) for the state s (h broadcast against it)."""
        if vocab is None:
            return self.features(h, s) @ self.output_rows(target).T
        return self.features(h, s) @ vocab.rows.T + vocab.bias

    def unroll(self, target, h: mx.array, tokens: mx.array, rows: mx.array | None = None) -> mx.array:
        """Teacher-forced logits: h (B, D), tokens (B, L) the draft inputs -> (B, L, V') over
        ``vocab_ids`` (or over the output ``rows`` (V', D) given)."""
        e = mx.stop_gradient(target.embed(tokens))
        s, states = None, []
        for t in range(tokens.shape[1]):
            s = self.step(h, e[:, t], s)
            states.append(s)
        features = self.features(h[:, None], mx.stack(states, axis=1))
        return features @ (self.output_rows(target) if rows is None else rows).T


def save_head(head: ReDrafterHead, path: str | Path, dtype=mx.float16) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` (weights in ``dtype``)."""
    from mlx.utils import tree_flatten

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.astype(dtype) if k != "vocab_ids" else v) for k, v in tree_flatten(head.parameters())}
    tmp = path / "model.safetensors.tmp.safetensors"
    mx.save_safetensors(str(tmp), weights, metadata={"format": FORMAT})
    tmp.replace(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(asdict(head.config), indent=1))
    return path


def read_head_config(path: str | Path) -> HeadConfig:
    path = Path(path)
    if not path.exists():
        raise UserError(f"draft head not found: {path}")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a ReDrafter head directory (no config.json)")
    try:
        data = json.loads((path / "config.json").read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
        return HeadConfig.from_dict(data)
    except (ValueError, TypeError) as e:
        raise UserError(f"{path / 'config.json'} is not a valid ReDrafter head config ({e})") from None


def check_target(config: HeadConfig, target, path="the head") -> None:
    args = target.args
    if (config.model_type, config.hidden_size, config.vocab_size) != (args.model_type, args.hidden_size, args.vocab_size):
        raise UserError(
            f"{path} was trained for a {config.model_type} target (hidden {config.hidden_size}, vocab {config.vocab_size}),"
            f" not this {args.model_type} model (hidden {args.hidden_size}, vocab {args.vocab_size})"
        )
    if not fingerprint_matches(config.fingerprint, target_fingerprint(target)):
        raise UserError(f"{path} was trained for another {config.model_type} model (its weight fingerprint differs)")


def load_head(path: str | Path, target, dtype=None) -> ReDrafterHead:
    """Load a head directory for ``target``; UserError when it does not belong to it or is damaged."""
    path = Path(path)
    config = read_head_config(path)
    check_target(config, target, path)
    file = path / "model.safetensors"
    if not file.is_file():
        raise UserError(f"{path} has no model.safetensors")
    try:
        weights = mx.load(str(file))
    except Exception as e:
        raise UserError(f"{file} is damaged ({str(e).splitlines()[0]})") from None
    head = ReDrafterHead(config)
    vocab_ids = weights.pop("vocab_ids", None)
    if vocab_ids is None:
        raise UserError(f"{file} is damaged (no vocab_ids)")
    dtype = dtype or target.embed(mx.array([0])).dtype
    try:
        head.set_vocab_ids(np.array(vocab_ids))
        pairs = [(k, v.astype(dtype)) for k, v in weights.items()] + [("vocab_ids", head.vocab_ids)]
        head.load_weights(pairs, strict=True)
    except ValueError as e:
        raise UserError(f"{file} does not match its config ({str(e).splitlines()[0]})") from None
    if int(mx.max(head.vocab_ids).item()) >= config.vocab_size:
        raise UserError(f"{file} is damaged (a vocab id beyond the vocabulary)")
    mx.eval(head.parameters())
    return head
