"""What the chat draws while an answer streams: the answer (accepted drafts in colour with
``--show-drafts``) and a status line of live speed, tau and acceptance by depth (LEGEND explains it)."""

from __future__ import annotations

import time

from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
DRAFTED_STYLE = "bold cyan"


class AnswerView:
    """The streaming answer (its last screenful) with the status line under it."""

    def __init__(self, ui, turn):
        self.ui, self.turn = ui, turn
        self.text = Text()
        self.prefill: tuple[int, int, float] | None = None  # tokens read, total, start time

    def prefilled(self, done: int, total: int) -> None:
        """The Session's prefill_progress callback (the caller refreshes the Live display)."""
        start = self.prefill[2] if self.prefill else time.monotonic()
        self.prefill = (done, total, start)

    def add(self, piece: str, step) -> None:
        if not piece:
            return
        if not self.ui.show_drafts:
            self.text.append(piece)
            return
        for part, drafted in split_drafted(self.ui.engine.tokenizer, self.turn.generation, step, piece):
            self.text.append(part, style=DRAFTED_STYLE if drafted else None)

    def __rich_console__(self, console, options):
        lines = self.text.wrap(console, options.max_width)
        room = max(1, console.size.height - 3)
        if len(lines):
            yield Text("\n").join(lines[-room:])
        gen = self.turn.generation
        if gen.stats.target_forwards == 0:
            yield Text(f"{self.turn.method} · {prefill_text(self.prefill, len(gen.prompt_ids))}", style="dim", no_wrap=True)
        else:
            yield status_line(self.turn.method, gen.stats, self.ui.engine.stats.get(self.turn.method), options.max_width)


def split_drafted(tokenizer, gen, step, piece: str) -> list[tuple[str, bool]]:
    """Split a step's text into the part from accepted drafts (a prefix of the step) and the rest."""
    start = len(gen.tokens) - len(step.tokens)
    flags = gen.drafted[start:]
    k = next((i for i, f in enumerate(flags) if not f), len(flags))
    if k == 0 or k == len(flags):
        return [(piece, k > 0)]
    drafted_text = tokenizer.decode(gen.tokens[: start + k])
    cut = len(drafted_text) - (len(gen.text) - len(piece))
    if not gen.text.startswith(drafted_text) or not 0 <= cut <= len(piece):
        return [(piece, True)]
    return [(piece[:cut], True), (piece[cut:], False)]


def prefill_text(prefill: tuple[int, int, float] | None, prompt_tokens: int) -> str:
    """``reading the prompt 1024/3000 tokens · 12s left`` (the time left once a chunk is read)."""
    if prefill is None:
        return f"reading the prompt ({prompt_tokens} tokens)..."
    done, total, start = prefill
    text = f"reading the prompt {done}/{total} tokens"
    elapsed = time.monotonic() - start
    if 0 < done < total and elapsed > 0:
        text += f" · {(total - done) * elapsed / done:.0f}s left"
    return text


def sparkline(rates: list[float], width: int = 8) -> str:
    return "".join(BARS[min(len(BARS) - 1, int(r * len(BARS)))] for r in rates[:width])


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


LEGEND = """The line under each answer:
  tok/s: new tokens per second of decoding
  tau: tokens produced per forward of the model (1.00 = plain decoding)
  N% of drafts accepted: the share of drafted tokens the model kept
    (the bars: the same share at draft position 1, 2, 3, ...)
  tree: tokens the model checks per forward
  draft/verify: share of the time spent drafting / running the model"""


def status_line(method: str, answer, session=None, width: int | None = None) -> Text:
    """``pld · 84.2 tok/s · tau 2.41 (session 2.10) · 61% of drafts accepted ▇▅▂▁ · tree 9.0 ·
    draft 4% verify 93%``, broken between its parts (never inside one) to fit ``width`` columns."""
    steps = max(1, answer.target_forwards - 1)  # decode forwards (the prefill's excluded)
    parts = [method, f"{answer.tokens_per_s:.1f} tok/s",
             f"tau {answer.tau:.2f}" + (f" (session {session.tau:.2f})" if session is not None else "")]
    if answer.proposed:
        parts.append(f"{100 * answer.accepted / answer.proposed:.0f}% of drafts accepted {sparkline(answer.acceptance_by_depth)}".rstrip())
    parts.append(f"tree {answer.forward_tokens / steps:.1f}" if answer.forward_tokens else "tree -")
    if answer.middle:  # TriForce's middle level (the target over the retrieval view)
        parts.append(f"middle tau {answer.middle['tau']:.2f} accept {100 * answer.middle['acceptance']:.0f}%")
    parts.append(f"draft {_share(answer.draft_s, answer.decode_s)} verify {_share(answer.verify_s, answer.decode_s)}")
    lines = [parts[0]]
    for part in parts[1:]:
        if width is not None and len(lines[-1]) + 3 + len(part) > width:
            lines.append(part)
        else:
            lines[-1] += " · " + part
    return Text("\n".join(lines), style="dim", no_wrap=True, overflow="ellipsis")
