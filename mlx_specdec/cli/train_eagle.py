"""``mlx-specdec train-drafter --arch eagle3``: train an EAGLE-3 head online on ShareGPT answers.

The target reads each batch of (prompt, answer) pairs, giving the head its three taps and the
target's own top-k as labels (no stored data); held-out acceptance per depth is scored on the
target's own greedy answers to held-out prompts (generated once, kept in ``WORK/eval_answers.json``).
Running the same command again resumes from ``WORK/checkpoint``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .common import console, load_target, out, progress_bar


def held_out_answers(model, tokenizer, pairs, work: Path, max_new: int):
    """(prompt ids, the target's greedy answer ids) for the held-out prompts, cached as JSON."""
    from ..train.generate import _batched_greedy

    cache = work / "eval_answers.json"
    prompts = [p for p, _ in pairs]
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if [p for p, _ in saved] == prompts:
            return [tuple(x) for x in saved]
    rows = []
    with progress_bar("Answering held-out prompts") as update:
        for i in range(0, len(prompts), 8):
            rows += _batched_greedy(model, prompts[i : i + 8], max_new, set(tokenizer.eos_ids), 0)
            update(len(rows), len(prompts))
    answers = [(p, r[0][1:].tolist()) for p, r in zip(prompts, rows)]
    work.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(answers))
    return answers


def load_pairs(data: str, limit: int):
    """(prompt, answer) texts: ShareGPT's, or a .jsonl file of {"prompt": ..., "answer": ...} objects."""
    from ..errors import UserError
    from ..train.data import sharegpt_pairs

    if data == "sharegpt":
        return sharegpt_pairs(limit=limit)
    path = Path(data)
    if not path.is_file() or path.suffix != ".jsonl":
        raise UserError(f"--arch eagle3 reads --data sharegpt or a .jsonl file of prompt/answer pairs; {data} is neither")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
                pairs.append((str(record["prompt"]), str(record["answer"])))
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path}:{n} is not a JSON object with 'prompt' and 'answer'") from None
    if not pairs:
        raise UserError(f"{path} holds no prompt/answer pairs")
    return pairs[:limit]


def train_eagle3(out_dir, model, dtype, work_dir, data, num_pairs, max_prompt_tokens, max_answer_tokens, steps, lr, draft_vocab,
                 unroll, batch_tokens, top_k, eval_every, eval_prompts, max_new_tokens, seed, train_minutes=None, reader="mlx"):
    from ..errors import UserError
    from ..train.eagle_trainer import EagleTrainConfig, EagleTrainer
    from ..train.teacher_forced import encode_pairs

    for name, value in (("--steps", steps), ("--unroll", unroll), ("--batch-tokens", batch_tokens), ("--read-answers", num_pairs)):
        if value < 1:
            raise UserError(f"{name} must be >= 1, got {value}")
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / "train"
    loaded = load_target(model, dtype)
    pairs = encode_pairs(loaded.tokenizer, load_pairs(data, num_pairs + eval_prompts), max_prompt_tokens, max_answer_tokens)
    if len(pairs) <= eval_prompts:
        raise UserError(f"only {len(pairs)} usable ShareGPT pairs: fewer than --eval-prompts {eval_prompts} plus training data")
    train_pairs, held = pairs[: len(pairs) - eval_prompts], pairs[len(pairs) - eval_prompts :]
    answers = held_out_answers(loaded.model, loaded.tokenizer, held, work, max_new_tokens) if eval_prompts else []
    config = EagleTrainConfig(steps=steps, batch_tokens=batch_tokens, unroll=unroll, top_k=top_k, draft_vocab=draft_vocab, lr=lr,
                              eval_every=eval_every, seed=seed)
    from ..train.torch_target import reader_for

    torch_target = reader_for(reader, loaded)
    trainer = EagleTrainer(loaded.model, train_pairs, work, config, eval_answers=answers, side_shards=work / "redrafter-data",
                           torch_target=torch_target)
    if trainer.try_resume():
        console.print(f"[dim]resuming from step {trainer.step}[/]")
    t0 = time.perf_counter()
    with progress_bar(f"Training the EAGLE-3 head (the target reads each batch, {'PyTorch' if torch_target else 'MLX'})") as update:
        def on_step(event):
            what = f"loss {event.loss:.3f}"
            if event.eval:
                what += f"  held-out chain tau {event.eval['chain_tau']:.2f} top-1 {event.eval['top1_d1']:.3f}"
            update(event.step, event.steps, what)

        metrics = trainer.train(on_step, None if train_minutes is None else 60 * train_minutes)
    tokens_per_step = sum(len(p) + len(a) for p, a in train_pairs) / max(len(trainer.groups), 1)
    report = dict(arch="eagle3", reader="torch" if torch_target else "mlx", pairs=len(train_pairs), steps=trainer.step, tokens_read=int(tokens_per_step * trainer.step), training_s=round(time.perf_counter() - t0, 1),
                  **{f"eval_{k}": round(float(v), 4) for k, v in metrics.items()}, eval_history=trainer.history)
    trainer.export(out_dir, training=report)

    from rich.table import Table

    table = Table(title=f"EAGLE-3 head -> {out_dir}", show_header=False)
    for key, value in report.items():
        if key != "eval_history":
            table.add_row(key, str(value))
    out.print(table)
    out.print(f"use it with: mlx-specdec generate --method eagle --drafter {out_dir}")
