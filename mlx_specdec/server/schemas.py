"""Request bodies of the OpenAI endpoints, as pydantic models (unknown fields are ignored, as
front-ends send many; the speculative decoding fields are the extra ones below)."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class MethodFields(BaseModel):
    """Per-request decoding method and its options, named as ``generate``'s flags (``--tree-topk``
    -> ``tree_topk``). Unset fields take the server's startup values."""

    model_config = ConfigDict(extra="ignore")

    method: Optional[str] = None
    num_draft: Optional[int] = Field(None, ge=1)
    tree: Optional[Literal["beam", "dynamic"]] = None
    beam_width: Optional[int] = Field(None, ge=1)
    beam_length: Optional[int] = Field(None, ge=1)
    tree_topk: Optional[int] = Field(None, ge=1)
    tree_depth: Optional[int] = Field(None, ge=1)
    tree_size: Optional[Union[int, Literal["auto"]]] = None
    lookup: Optional[int] = Field(None, ge=0)
    window: Optional[Union[int, Literal["auto"]]] = None
    ngram: Optional[int] = Field(None, ge=1)
    guesses: Optional[int] = Field(None, ge=0)


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationFields(MethodFields):
    """Fields both endpoints share. ``temperature`` defaults to the server's ``--temp`` (0: greedy)."""

    model: Optional[str] = None
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stop: Optional[Union[str, list[str]]] = None
    seed: Optional[int] = None
    n: int = Field(1, ge=1, le=1)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    return_token_ids: bool = False  # vLLM's extension: the prompt's and the answer's token ids

    @property
    def stop_strings(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(GenerationFields):
    messages: list[ChatMessage] = Field(min_length=1)

    def template_messages(self) -> list[dict]:
        """``{"role", "content"}`` dicts for the chat template (``developer`` is OpenAI's new name for ``system``)."""
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


class CompletionRequest(GenerationFields):
    prompt: Union[str, list[str]]

    def prompt_text(self) -> str | None:
        """The one prompt (a list must hold exactly one string; None otherwise)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return self.prompt[0] if len(self.prompt) == 1 else None
