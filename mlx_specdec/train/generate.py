"""The target answers the prompts: distillation data for draft heads.

Batched greedy generation with the chat template. Prompts are sorted by length and left-padded
into batches of B rows; padding is masked out and every row gets its own RoPE positions, so each
row is generated as if it were alone (up to float rounding).

Each batch becomes one shard ``shard-NNNNN.safetensors`` (never pickle) holding, for its S samples
concatenated along T::

    tokens   (T,)    int32    per sample: the last prompt token, then the response (EOS included)
    hidden   (T, D)  float16  the target's final (normed) hidden state at each of those tokens
    starts   (S + 1,) int64   sample s is rows starts[s]:starts[s + 1]
    topk_ids (T, K)  int32    optional: the target's K most likely next tokens after each token
    topk_probs (T, K) float16 and their probabilities

so ``hidden[i]`` predicts ``tokens[i + 1]``. Shards already on disk are skipped (resumable).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import mlx.core as mx
import numpy as np

from ..cache import KVCache


def _batched_greedy(model, prompts: list[list[int]], max_new: int, eos: set[int], top_k: int):
    """Greedy continuation of each prompt. Returns per row: (tokens, hidden, topk_ids, topk_probs).

    Rows that finish (EOS or max_new) leave the batch: their KV rows are dropped, so a step costs
    what the rows still running need.
    """
    B = len(prompts)
    lengths = np.array([len(p) for p in prompts])
    width = int(lengths.max())
    pad = width - lengths
    ids = np.zeros((B, width), dtype=np.int32)
    for b, p in enumerate(prompts):
        ids[b, pad[b] :] = p
    cols = np.arange(width)
    valid = cols[None, :] >= pad[:, None]  # (B, S) key slots that hold real tokens
    mask = (cols[None, :] <= cols[:, None])[None] & valid[:, None, :]
    mask |= np.eye(width, dtype=bool)[None]  # pad queries see themselves (no empty rows -> no NaN)
    positions = np.maximum(cols[None, :] - pad[:, None], 0)
    cache = KVCache(len(model.layers))
    _, hidden = model(mx.array(ids), cache, mx.array(mask[:, None]), mx.array(positions))
    h = hidden[:, -1]
    out_tok = [[int(p[-1])] for p in prompts]
    out_h, out_ki, out_kp = [[] for _ in range(B)], [[] for _ in range(B)], [[] for _ in range(B)]
    rows = np.arange(B)  # original row of each batch row still running
    pos = lengths.copy()
    for step in range(max_new + 1):
        logits = model.lm_head_logits(h).astype(mx.float32)
        nxt = mx.argmax(logits, axis=-1)
        extra = []
        if top_k:
            probs = mx.softmax(logits, axis=-1)
            kid = mx.argpartition(-probs, top_k - 1, axis=-1)[:, :top_k]
            extra = [kid, mx.take_along_axis(probs, kid, axis=-1)]
        mx.eval(nxt, h, *extra)
        nxt_np, h_np = np.array(nxt), np.array(h.astype(mx.float16))
        extra_np = [np.array(e) for e in extra]
        running = np.ones(len(rows), dtype=bool)
        for i, b in enumerate(rows):
            out_h[b].append(h_np[i])
            if top_k:
                out_ki[b].append(extra_np[0][i])
                out_kp[b].append(extra_np[1][i].astype(np.float16))
            if step == max_new:
                running[i] = False
                continue
            out_tok[b].append(int(nxt_np[i]))
            running[i] = int(nxt_np[i]) not in eos
        if not running.any():
            break
        if not running.all():
            keep = mx.array(np.flatnonzero(running))
            for layer in range(len(cache.keys)):
                cache.keys[layer], cache.values[layer] = cache.keys[layer][keep], cache.values[layer][keep]
            rows, valid, pos, nxt = rows[running], valid[running], pos[running], nxt[keep]
        valid = np.concatenate([valid, np.ones((len(rows), 1), dtype=bool)], axis=1)
        _, hidden = model(nxt[:, None], cache, mx.array(valid[:, None, None, :]), mx.array(pos[:, None]))
        h = hidden[:, -1]
        pos += 1
    result = []
    for b in range(B):
        n = len(out_h[b])
        result.append(
            (
                np.array(out_tok[b][:n], dtype=np.int32),
                np.stack(out_h[b]),
                np.stack(out_ki[b]).astype(np.int32) if top_k else None,
                np.stack(out_kp[b]) if top_k else None,
            )
        )
    return result


def encode_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int = 512) -> list[list[int]]:
    """Chat-template token ids of each prompt as a single user turn; longer prompts are dropped."""
    encoded = [tokenizer.chat_ids([{"role": "user", "content": text}]) for text in prompts]
    return [ids for ids in encoded if len(ids) <= max_prompt_tokens]


def generate_dataset(
    model,
    encoded: Sequence[Sequence[int]],
    out_dir: str | Path,
    eos_ids: Sequence[int] = (),
    batch_size: int = 16,
    max_new_tokens: int = 256,
    top_k: int = 0,
    seed: int = 0,
    max_seconds: float | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> Path:
    """Answer the prompts ``encoded`` (token ids) with ``model``; one shard per batch in ``out_dir``.

    Batches whose shard exists are skipped, so an interrupted run resumes. With ``max_seconds``,
    no new batch starts after that much time (a time budget; 0 = use only the shards on disk).
    progress(done_prompts, total, tokens_so_far) after each batch.
    """
    encoded = [list(ids) for ids in encoded]
    order = np.random.default_rng(seed).permutation(len(encoded)).tolist()
    window = batch_size * 8
    order = [i for w in range(0, len(order), window) for i in sorted(order[w : w + window], key=lambda i: len(encoded[i]))]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    eos = set(eos_ids)
    meta = dict(prompts=len(encoded), batches=len(batches), batch_size=batch_size, max_new_tokens=max_new_tokens, top_k=top_k, seed=seed)
    return write_shards(out_dir, batches, lambda batch: _batched_greedy(model, [encoded[j] for j in batch], max_new_tokens, eos, top_k),
                        meta, max_seconds, progress)


def write_shards(out_dir, groups: list[list[int]], make_rows: Callable[[list[int]], list], meta: dict,
                 max_seconds: float | None = None, progress: Callable[[int, int, int], None] | None = None) -> Path:
    """One shard ``shard-NNNNN.safetensors`` per group of sample indices, from ``make_rows(group)``.

    Shards already on disk are skipped (an interrupted run resumes); with ``max_seconds`` no new
    shard starts after that much time (0 = use only the shards on disk).
    progress(samples_done, samples_total, tokens_so_far) after each shard.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    total = sum(len(g) for g in groups)
    done, done_tokens = 0, 0
    for i, group in enumerate(groups):
        shard = out_dir / f"shard-{i:05d}.safetensors"
        if not shard.exists():
            if max_seconds is not None and time.perf_counter() - start >= max_seconds:
                break
            save_shard(shard, make_rows(group))
        if progress:
            done, done_tokens = done + len(group), done_tokens + shard_tokens(shard)
            progress(done, total, done_tokens)
    return out_dir


def save_shard(path: Path, rows) -> None:
    from safetensors.numpy import save_file

    tensors = {
        "tokens": np.concatenate([r[0] for r in rows]),
        "hidden": np.concatenate([r[1] for r in rows]),
        "starts": np.cumsum([0] + [len(r[0]) for r in rows]).astype(np.int64),
    }
    if rows[0][2] is not None:
        tensors["topk_ids"] = np.concatenate([r[2] for r in rows])
        tensors["topk_probs"] = np.concatenate([r[3] for r in rows])
    if len(rows[0]) > 4:  # teacher-forced shards: the target's own next token (see teacher_forced.py)
        tensors["labels"] = np.concatenate([r[4] for r in rows])
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.rename(path)


def shard_tokens(path: Path) -> int:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        return int(f.get_tensor("starts")[-1])


def load_shard(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    from ..errors import UserError

    try:
        return load_file(str(path))
    except Exception as e:
        raise UserError(f"{path} is not a readable data shard ({str(e).splitlines()[0]})") from None

