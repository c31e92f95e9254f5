"""Multi-turn chat on one :class:`Session`: the conversation, its token ids, history files.

The KV cache is reused across turns because the ids of turn k+1 extend those of turn k exactly:
the answer enters as the tokens the model generated (never re-tokenized text), followed by the
template's end-of-turn text and the next user message, which are all that gets prefilled.
Worked example with a ChatML template (``⏎`` = newline)::

    turn 1 ids  = tok("<|im_start|>user⏎hi<|im_end|>⏎<|im_start|>assistant⏎")
    answer      = [Hel, lo]                          # generated; EOS <|im_end|> ends it
    turn 2 ids  = turn 1 ids + [Hel, lo] + tok("<|im_end|>⏎")
                  + tok("<|im_start|>user⏎bye<|im_end|>⏎<|im_start|>assistant⏎")
    prefilled   = tok("<|im_end|>⏎") + tok("<|im_start|>user⏎bye...assistant⏎")

A template that renders earlier turns differently once the conversation grows (one that drops
reasoning from old answers, say) breaks that prefix property; the ids are then re-tokenized from
the rendered text and the cache keeps whatever prefix still matches.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import UserError
from .generate import Session, Step
from .sampling import SamplingParams
from .stats import RunStats
from .store import write_json_atomic
from .textgen import Generation, stream_text

ROLES = ("system", "user", "assistant")
DEFAULT_SETTINGS = dict(method="pld", temp=0.0, top_p=1.0, top_k=0, max_tokens=512, draft_model=None)
SETTING_TYPES = dict(method=str, temp=float, top_p=float, top_k=int, max_tokens=int)
AUTOSAVE_EVERY_S = 1.0  # while an answer streams, the partial answer is saved this often


def history_dir() -> Path:
    """``$MLX_SPECDEC_HISTORY_DIR``, else ``$MLX_SPECDEC_HOME/history``, else the user data dir."""
    if os.environ.get("MLX_SPECDEC_HISTORY_DIR"):
        return Path(os.environ["MLX_SPECDEC_HISTORY_DIR"]).expanduser()
    if os.environ.get("MLX_SPECDEC_HOME"):
        return Path(os.environ["MLX_SPECDEC_HOME"]).expanduser() / "history"
    from platformdirs import user_data_dir

    return Path(user_data_dir("mlx-specdec")) / "history"


def new_history_path() -> Path:
    now = time.time()
    return history_dir() / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{int(now * 1000) % 1000:03d}-{os.getpid()}.json"


def latest_history() -> Path | None:
    files = list(history_dir().glob("*.json")) if history_dir().is_dir() else []
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


@dataclass
class Conversation:
    """Messages ``{"role", "content"}`` (an answer stopped by Ctrl-C also has ``"interrupted": true``,
    one cut by the max tokens ``"cut": true``; a system prompt is message 0) and the settings it was
    held with."""

    messages: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=lambda: dict(DEFAULT_SETTINGS))

    @property
    def system(self) -> str | None:
        return self.messages[0]["content"] if self.messages and self.messages[0]["role"] == "system" else None

    @system.setter
    def system(self, text: str | None) -> None:
        if self.system is not None:
            self.messages.pop(0)
        if text:
            self.messages.insert(0, {"role": "system", "content": text})

    def template_messages(self) -> list[dict]:
        return [{"role": m["role"], "content": m["content"]} for m in self.messages]

    def to_dict(self) -> dict:
        return {"messages": [dict(m) for m in self.messages], "settings": {**self.settings, "system": self.system}}

    @classmethod
    def from_dict(cls, data, source: str = "the conversation") -> "Conversation":
        messages = data.get("messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages
        ):
            raise UserError(f"{source} is not a saved conversation (expected {{\"messages\": [{{\"role\", \"content\"}}, ...]}})")
        settings = {**DEFAULT_SETTINGS, **(data.get("settings") if isinstance(data.get("settings"), dict) else {})}
        for key, kind in SETTING_TYPES.items():
            try:
                settings[key] = kind(settings[key])
            except (TypeError, ValueError):
                raise UserError(f"{source}: setting {key!r} should be a {kind.__name__}, got {settings[key]!r}") from None
        if settings["draft_model"] is not None and not isinstance(settings["draft_model"], str):
            raise UserError(f"{source}: setting 'draft_model' should be a path, got {settings['draft_model']!r}")
        conversation = cls([dict(m) for m in messages], settings)
        system = conversation.settings.pop("system", None)
        if system and conversation.system is None:
            conversation.system = system
        return conversation

    def save(self, path: str | Path, create_folder: bool = True) -> None:
        try:
            write_json_atomic(Path(path).expanduser(), self.to_dict(), create_folder)
        except OSError as e:
            raise UserError(f"cannot save to {path}: {e.strerror or e}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Conversation":
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror or e}") from None
        except ValueError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None
        return cls.from_dict(data, str(path))


@dataclass
class Turn:
    """One answer: what :meth:`ChatEngine.stream` fills while it runs."""

    generation: Generation  # prompt_ids = the whole conversation's ids; tokens/text = the answer
    method: str
    prompt_text: str  # the rendered conversation that prompt_ids encode
    dropped: int = 0  # oldest messages dropped so that the turn fits the model's context
    interrupted: bool = False
    done: bool = False  # the answer is recorded in the conversation


class ChatEngine:
    """A conversation on one model: token ids built turn by turn, statistics per method, autosave.

    Usage: ``turn = engine.begin("hi")`` then ``for piece, step in engine.stream(turn)``; closing
    the stream early or an exception inside it (Ctrl-C) records the partial answer, marked. A
    caller interrupted before the stream started calls :meth:`finish` (it is idempotent).
    """

    def __init__(self, loaded, drafter, conversation: Conversation | None = None,
                 history_path: Path | None = None, seed: int | None = None):
        self.tokenizer = loaded.tokenizer
        self.max_context = loaded.max_context
        self.session = Session(loaded.model, loaded.max_context)
        self.drafter = drafter
        self.conversation = conversation or Conversation()
        self.history_path = history_path  # None: no autosave
        self.seed = seed
        self.stats: dict[str, RunStats] = {}  # session totals per method
        self.answers: Counter = Counter()
        self.save_error: str | None = None  # the last autosave failure, for the caller to show
        self._ids: list[int] | None = None  # ids of the first _ids_messages messages, as cached
        self._ids_messages = 0

    @property
    def method(self) -> str:
        return self.conversation.settings["method"]

    @property
    def params(self) -> SamplingParams:
        s = self.conversation.settings
        return SamplingParams(temperature=float(s["temp"]), top_p=float(s["top_p"]), top_k=int(s["top_k"]), seed=self.seed)

    def set_method(self, name: str, drafter) -> None:
        self.drafter = drafter
        self.conversation.settings["method"] = name

    def load(self, conversation: Conversation) -> None:
        """Continue ``conversation`` (the cache keeps whatever prefix it shares with it)."""
        self.conversation, self._ids = conversation, None

    def reset(self) -> None:
        """Forget the turns (the system prompt and settings stay)."""
        self.conversation.messages = self.conversation.messages[: 1 if self.conversation.system else 0]
        self._ids = None

    def begin(self, text: str) -> Turn:
        """Add the user message and build the turn's ids, dropping the oldest turns if they do not fit."""
        self.params  # raises UserError on bad settings before the conversation changes
        messages = self.conversation.messages
        messages.append({"role": "user", "content": text})
        dropped = 0
        while True:
            prompt_text, ids = self._prompt_ids()
            if self._fits(len(ids)):
                break
            dropped_now = self._drop_oldest_turn()
            if not dropped_now:
                if self.max_context is None or len(ids) < self.max_context - 1:
                    break  # the message fits, its answer will be cut short
                messages.pop()
                raise UserError(f"the message is {len(ids)} tokens with the template; the model's context is "
                                f"{self.max_context}: shorten it")
            dropped += dropped_now
        self.autosave()
        return Turn(Generation(ids), self.method, prompt_text, dropped)

    def stream(self, turn: Turn) -> Iterator[tuple[str, Step]]:
        """Yield (new text, step) while the answer streams; the answer is recorded when this ends."""
        gen, run = turn.generation, self.stats.setdefault(turn.method, RunStats())
        settings = self.conversation.settings
        steps = stream_text(self.session, self.tokenizer, gen.prompt_ids, self.drafter, self.params,
                            int(settings["max_tokens"]), result=gen)
        saved = time.monotonic()
        try:
            for piece, step in steps:
                run.add(step)
                run.prefill_tokens += self.session.last_prefill_tokens if step.prefill else 0
                yield piece, step
                if time.monotonic() - saved > AUTOSAVE_EVERY_S:
                    self.autosave(partial=gen.text)
                    saved = time.monotonic()
        finally:
            steps.close()
            self.finish(turn)

    def finish(self, turn: Turn) -> None:
        """Record the answer (marked interrupted unless it ended), extend the ids, autosave."""
        if turn.done:
            return
        turn.done, gen = True, turn.generation
        self._ids = None  # until the new ids are known
        turn.interrupted = gen.finish is None
        answer = {"role": "assistant", "content": gen.text}
        if turn.interrupted:
            answer["interrupted"] = True
        elif gen.finish == "length" and len(gen.tokens) >= int(self.conversation.settings["max_tokens"]):
            answer["cut"] = True
        self.conversation.messages.append(answer)
        self.answers[turn.method] += 1
        rendered = self.tokenizer.apply_chat_template(self.conversation.template_messages(), add_generation_prompt=False)
        head = turn.prompt_text + gen.text
        if rendered.startswith(head):
            self._set_ids(gen.prompt_ids + gen.tokens + self.tokenizer.encode(rendered[len(head):]))
        self.autosave()

    def _set_ids(self, ids: list[int]) -> None:
        self._ids, self._ids_messages = ids, len(self.conversation.messages)

    def _prompt_ids(self) -> tuple[str, list[int]]:
        """(rendered text, ids) of the conversation plus the generation prompt."""
        messages = self.conversation.template_messages()
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if self._ids and self._ids_messages == len(messages) - 1:
            before = self.tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=False)
            if text.startswith(before):
                return text, self._ids + self.tokenizer.encode(text[len(before):])
        return text, self.tokenizer.encode(text)

    def _fits(self, n: int) -> bool:
        """Room for the prompt and a reasonable answer (the answer's budget, at most a quarter of the context)."""
        if self.max_context is None:
            return True
        return n + min(int(self.conversation.settings["max_tokens"]), self.max_context // 4) <= self.max_context

    def _drop_oldest_turn(self) -> int:
        """Remove the oldest user message and the answer after it (never the last message); returns the count."""
        messages = self.conversation.messages
        first = 1 if self.conversation.system is not None else 0
        if len(messages) - first < 2:
            return 0
        end = next((i for i in range(first + 1, len(messages) - 1) if messages[i]["role"] == "user"), len(messages) - 1)
        del messages[first:end]
        self._ids = None
        return end - first

    def autosave(self, partial: str | None = None) -> None:
        """Write the conversation (plus a streaming answer, marked interrupted) to the history file."""
        if self.history_path is None:
            return
        data = self.conversation.to_dict()
        if partial is not None:
            data["messages"].append({"role": "assistant", "content": partial, "interrupted": True})
        try:
            write_json_atomic(self.history_path, data)
            self.save_error = None
        except OSError as e:
            self.save_error = f"cannot write the history file {self.history_path}: {e.strerror or e}"
