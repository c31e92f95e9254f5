"""Long-document prompts cut to a given context length (the TriForce benchmark).

The prompts of ``../shared/data/longctx/question.jsonl`` are one turn each: a header line, the
document, and an instruction (summarize / continue), separated by blank lines::

    The text below is from "Dracula" by Bram Stoker (1897); ...\\n\\n<document>\\n\\nSummarize the text above ...

:func:`cut_to_context` keeps the header and the instruction and cuts the document to its first k
tokens, the largest k for which the chat-templated prompt plus ``max_tokens`` new tokens fit in
``context`` tokens. The cut depends only on the prompt, the tokenizer and the two numbers.
Example: ``--context 8192 --max-tokens 128`` gives prompts of at most 8064 tokens.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .errors import UserError
from .prompts import Prompt


def default_longctx_file() -> Path:
    """``shared/data/longctx/question.jsonl`` beside the checkout (or beside a folder above it,
    for a worktree nested one level deeper)."""
    here = Path(__file__).resolve().parents[1]  # the checkout
    for folder in here.parents:
        path = folder / "shared" / "data" / "longctx" / "question.jsonl"
        if path.is_file():
            return path
    raise UserError("no long-document prompts found (../shared/data/longctx/question.jsonl): pass --prompts FILE")


def cut_to_context(prompt: Prompt, tokenizer, context: int, max_tokens: int) -> Prompt:
    """``prompt`` with its document cut so that its chat ids + ``max_tokens`` <= ``context``."""
    text = prompt.turns[0]
    head, _, rest = text.partition("\n\n")
    body, _, instruction = rest.rpartition("\n\n")
    if not body or len(prompt.turns) != 1:
        raise UserError(f"prompt {prompt.question_id} is not a long-document prompt (header, document, instruction in one turn)")

    def build(n: int) -> str:
        return f"{head}\n\n{tokenizer.decode(doc[:n]).strip()}\n\n{instruction}"

    def length(n: int) -> int:
        return len(tokenizer.chat_ids([{"role": "user", "content": build(n)}]))

    doc = tokenizer.encode(body)
    room = context - max_tokens
    n = min(len(doc), room - (length(0) - 0))
    if n <= 0:
        raise UserError(f"--context {context} leaves no room for a document after {max_tokens} new tokens")
    while n > 0 and length(n) > room:  # decode/encode round trips may add a few tokens
        n -= max(1, (length(n) - room))
    if n <= 0:
        raise UserError(f"--context {context} leaves no room for a document after {max_tokens} new tokens")
    return replace(prompt, turns=(build(n),))
