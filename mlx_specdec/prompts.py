"""Benchmark prompts: ``{question_id, category, turns}`` JSONL records, read and sampled evenly
across categories (Spec-Bench's dev split beside a checkout, else the packaged set)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import UserError


@dataclass(frozen=True)
class Prompt:
    question_id: int | str
    category: str
    turns: tuple[str, ...]


def default_prompt_file() -> Path:
    """The Spec-Bench dev split next to a checkout (``../shared/data/specbench/dev.jsonl``), else the
    prompts packaged with mlx-specdec (three per Spec-Bench category)."""
    dev = Path(__file__).resolve().parents[2] / "shared" / "data" / "specbench" / "dev.jsonl"
    return dev if dev.is_file() else Path(__file__).parent / "data" / "bench_prompts.jsonl"


def read_prompts(paths: Sequence[Path]) -> list[Prompt]:
    """Records of every file in order; a (category, question_id) seen before is skipped."""
    prompts, seen = [], set()
    for path in map(Path, paths):
        if not path.is_file():
            raise UserError(f"no prompt file at {path}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                turns = record["turns"]
                prompt = Prompt(record["question_id"], str(record.get("category") or path.stem), tuple(turns))
                if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
                    raise TypeError("turns must be a non-empty list of strings")
            except (ValueError, KeyError, TypeError) as e:
                raise UserError(f"{path}:{n} is not a {{question_id, category, turns}} record ({e})") from None
            if (prompt.category, prompt.question_id) not in seen:
                seen.add((prompt.category, prompt.question_id))
                prompts.append(prompt)
    return prompts


def select(prompts: Sequence[Prompt], categories: Sequence[str] = (), limit: int | None = None) -> list[Prompt]:
    """Round-robin over categories (first prompt of each, then the second of each, ...), cut at
    ``limit`` prompts in total: any limit samples the categories evenly, and a larger limit extends
    a smaller one's selection (what ``--resume`` relies on). 40 prompts cover Spec-Bench's 13."""
    by_category: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_category.setdefault(p.category, []).append(p)
    unknown = [c for c in categories if c not in by_category]
    if unknown:
        raise UserError(f"no prompts in category {', '.join(unknown)} (there are: {', '.join(by_category)})")
    groups = [by_category[c] for c in (categories or by_category)]
    order = [g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)]
    return order[:limit] if limit is not None else order
