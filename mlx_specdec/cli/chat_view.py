"""What the chat draws while an answer streams: the answer (accepted drafts in colour with
``--show-drafts``) and a status line of live speed, tau and acceptance by depth."""

from __future__ import annotations

from rich.text import Text

BARS = "▁▂▃▄▅▆▇█"
DRAFTED_STYLE = "bold cyan"


class AnswerView:
    """The streaming answer (its last screenful) with the status line under it."""

    def __init__(self, ui, turn):
        self.ui, self.turn = ui, turn
        self.text = Text()

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
            yield Text(f"{self.turn.method} · prefilling {len(gen.prompt_ids)} tokens...", style="dim", no_wrap=True)
        else:
            yield status_line(self.turn.method, gen.stats, self.ui.engine.stats.get(self.turn.method))


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


def sparkline(rates: list[float], width: int = 8) -> str:
    return "".join(BARS[min(len(BARS) - 1, int(r * len(BARS)))] for r in rates[:width])


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole > 0 else "-"


def status_line(method: str, answer, session=None) -> Text:
    """``pld · 84.2 tok/s · tau 2.41 (session 2.10) · accept ▇▅▂▁ 61% · tree 9 · draft 4% verify 93%``"""
    steps = max(1, answer.target_forwards - 1)  # decode forwards (the prefill's excluded)
    parts = [method, f"{answer.tokens_per_s:.1f} tok/s",
             f"tau {answer.tau:.2f}" + (f" (session {session.tau:.2f})" if session is not None else "")]
    if answer.proposed:
        parts.append(f"accept {sparkline(answer.acceptance_by_depth)} {100 * answer.accepted / answer.proposed:.0f}%")
    parts.append(f"tree {answer.forward_tokens / steps:.1f}" if answer.forward_tokens else "tree -")
    if answer.middle:  # TriForce's middle level (the target over the retrieval view)
        parts.append(f"middle tau {answer.middle['tau']:.2f} accept {100 * answer.middle['acceptance']:.0f}%")
    parts.append(f"draft {_share(answer.draft_s, answer.decode_s)} verify {_share(answer.verify_s, answer.decode_s)}")
    return Text(" · ".join(parts), style="dim", no_wrap=True, overflow="ellipsis")
