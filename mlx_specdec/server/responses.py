"""OpenAI response objects for chat and text completions, whole or as server-sent event chunks."""

from __future__ import annotations

import json
import time
import uuid

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "context": "length"}  # OpenAI has no "context": the answer was cut


def finish_reason(finish: str | None) -> str:
    return FINISH.get(finish, "stop")  # None: cut short (shutdown); reported as a stop


def sse(obj) -> str:
    """One server-sent event (``data: [DONE]`` ends the stream)."""
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n"


class Format:
    """Builds one request's response objects; ``chat`` selects chat.completion vs text_completion."""

    def __init__(self, chat: bool, model: str, prompt_ids: list[int], token_ids: bool):
        self.chat, self.model, self.prompt_ids, self.token_ids = chat, model, prompt_ids, token_ids
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    def _envelope(self, obj: str, choices: list[dict], usage: dict | None = None) -> dict:
        body = dict(id=self.id, object=obj, created=self.created, model=self.model, choices=choices)
        if usage is not None:
            body["usage"] = usage
        return body

    def whole(self, text: str, tokens: list[int], finish: str | None, usage: dict) -> dict:
        choice = dict(index=0, message=dict(role="assistant", content=text)) if self.chat else dict(index=0, text=text)
        choice.update(logprobs=None, finish_reason=finish_reason(finish))
        if self.token_ids:
            choice["token_ids"] = tokens
        body = self._envelope("chat.completion" if self.chat else "text_completion", [choice], usage)
        if self.token_ids:
            body["prompt_token_ids"] = self.prompt_ids
        return body

    def chunk(self, text: str | None = None, tokens: list[int] | None = None, finish: str | None = None,
              first: bool = False) -> dict:
        choice = dict(index=0, logprobs=None, finish_reason=finish_reason(finish) if finish is not None else None)
        if self.chat:
            delta = dict(role="assistant", content="") if first else {}
            if text:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        if self.token_ids and tokens is not None:
            choice["token_ids"] = tokens
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [choice])
        if first and self.token_ids:
            body["prompt_token_ids"] = self.prompt_ids
        return body

    def usage_chunk(self, usage: dict) -> dict:
        return self._envelope("chat.completion.chunk" if self.chat else "text_completion", [], usage)
