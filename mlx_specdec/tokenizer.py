"""Tokenizer of a model directory: encode/decode, the chat template, EOS ids, streaming text.

Uses ``tokenizer.json`` with the ``tokenizers`` library (fast, no torch); a directory that only
has a sentencepiece model falls back to ``transformers.AutoTokenizer`` (local files only).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from .errors import UserError


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
    def __init__(self, path: str | Path):
        path = Path(path)
        config = _read_json(path / "tokenizer_config.json")
        self._hf = None
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer as FastTokenizer

            try:
                self._fast = FastTokenizer.from_file(str(path / "tokenizer.json"))
            except Exception as e:
                raise UserError(f"cannot read {path / 'tokenizer.json'}: {str(e).splitlines()[0]}") from None
        else:
            try:
                from transformers import AutoTokenizer

                self._hf = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
            except Exception as e:
                raise UserError(f"{path} has no usable tokenizer ({str(e).splitlines()[0]})") from None
        self.chat_template = config.get("chat_template") or self._separate_template(path)
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.eos_ids = self._eos_ids(path, config)

    @staticmethod
    def _separate_template(path: Path) -> str | None:
        jinja = path / "chat_template.jinja"
        if jinja.is_file():
            return jinja.read_text()
        return _read_json(path / "chat_template.json").get("chat_template")

    def _eos_ids(self, path: Path, config: dict) -> set[int]:
        ids: set[int] = set()
        for source in (_read_json(path / "config.json"), _read_json(path / "generation_config.json")):
            value = source.get("eos_token_id")
            ids.update(value if isinstance(value, list) else [value] if value is not None else [])
        if self.eos_token is not None and (token_id := self.token_to_id(self.eos_token)) is not None:
            ids.add(token_id)
        return ids

    @property
    def vocab_size(self) -> int:
        return self._fast.get_vocab_size() if self._hf is None else len(self._hf)

    def token_to_id(self, token: str) -> int | None:
        return self._fast.token_to_id(token) if self._hf is None else self._hf.convert_tokens_to_ids(token)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if self._hf is not None:
            return self._hf.encode(text, add_special_tokens=add_special_tokens)
        return self._fast.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids) -> str:
        if self._hf is not None:
            return self._hf.decode(list(ids), skip_special_tokens=True)
        return self._fast.decode(list(ids), skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render the conversation with the model's own Jinja chat template (sandboxed)."""
        if not self.chat_template:
            return "".join(m["content"] for m in messages)
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise UserError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent, ensure_ascii=False)
        return env.from_string(self.chat_template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
        )

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation (special tokens in the text are parsed). A model
        without a chat template (a base model) gets the raw text with its tokenizer's BOS."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt), add_special_tokens=not self.chat_template)

    def detokenizer(self) -> "StreamingDetokenizer":
        return StreamingDetokenizer(self)


class StreamingDetokenizer:
    """Turns a growing list of ids into text pieces, holding back incomplete UTF-8 characters.

    Example: ``d.add([72, 105])`` returns "Hi"; a multi-byte character split over two tokens is
    returned whole once its last byte arrives.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def add(self, ids) -> str:
        self.ids += list(ids)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        piece, self.text = text[len(self.text) :], text
        return piece

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids)
        piece, self.text = text[len(self.text) :], text
        return piece
