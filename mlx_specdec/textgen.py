"""Text on top of the token loop: streaming pieces, stop strings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

from .generate import Session, Step
from .sampling import SamplingParams
from .stats import RunStats
from .tokenizer import Tokenizer


@dataclass
class Generation:
    """Everything a caller reports about one generation, filled while it streams."""

    prompt_ids: list[int]
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    stats: RunStats = field(default_factory=RunStats)
    finish: str | None = None
    drafted: list[bool] = field(default_factory=list)  # per token: came from an accepted draft


def stream_text(
    session: Session,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    drafter,
    params: SamplingParams,
    max_tokens: int,
    stop_strings: Sequence[str] = (),
    result: Generation | None = None,
) -> Iterator[tuple[str, Step]]:
    """Yield (new text, step) per target forward; ``result`` accumulates tokens, text and stats.

    Stops at EOS, ``max_tokens`` or the first stop string (which is not included in the text).
    Closing the iterator early (Ctrl-C) leaves the session's cache consistent.
    """
    result = result if result is not None else Generation(list(prompt_ids))
    result.stats.prefill_tokens = 0
    detok = tokenizer.detokenizer()
    steps = session.generate(prompt_ids, drafter, params, max_tokens, tokenizer.eos_ids)
    try:
        for step in steps:
            if step.prefill:
                result.stats.prefill_tokens = session.last_prefill_tokens
            result.stats.add(step)
            result.tokens += step.tokens
            accepted = step.accepted if not step.prefill else 0
            result.drafted += [i < accepted for i in range(len(step.tokens))]
            piece = detok.add(step.tokens)
            if step.finish:
                piece += detok.flush()
            text = result.text + piece
            hit = min((text.find(s) for s in stop_strings if s and s in text), default=-1)
            if hit >= 0:
                piece = text[len(result.text) : hit] if hit >= len(result.text) else ""
                result.text, result.finish = text[:hit], "stop"
                yield piece, step
                return
            result.text = text
            result.finish = step.finish
            yield piece, step
    finally:
        steps.close()
