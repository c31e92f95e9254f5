"""Where ``generate``'s prompt comes from: ``--prompt TEXT``, ``--prompt -`` (stdin), ``--prompt @FILE``
or ``--prompt-file FILE`` (``-`` = stdin too), so prompts longer than a shell argument work.

A prompt starting with ``@`` names a file (as in curl's ``-d @file``); ``@@`` keeps one literal
``@``: ``-p @@home`` sends "@home". One final newline of a file or of stdin is dropped (``echo``
adds it), nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError


def read_prompt(prompt: str | None, prompt_file: Path | None, stdin=None) -> str:
    stdin = stdin or sys.stdin
    if (prompt is None) == (prompt_file is None):
        raise UserError("give exactly one of --prompt TEXT (- reads stdin, @FILE reads a file) or --prompt-file FILE")
    if prompt_file is not None:
        text = _read_stdin(stdin) if str(prompt_file) == "-" else _read_file(prompt_file)
    elif prompt == "-":
        text = _read_stdin(stdin)
    elif prompt.startswith("@@"):
        text = prompt[1:]
    elif prompt.startswith("@"):
        text = _read_file(Path(prompt[1:]), " (to send text starting with @, write @@)")
    else:
        text = prompt
    if not text.strip():
        raise UserError("the prompt is empty")
    return text


def _drop_final_newline(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text


def _read_stdin(stdin) -> str:
    try:
        return _drop_final_newline(stdin.read())
    except UnicodeDecodeError as e:
        raise UserError(f"the prompt on stdin is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _read_file(path: Path, hint: str = "") -> str:
    path = path.expanduser()
    if not path.exists():
        raise UserError(f"prompt file not found: {path}{hint}")
    if path.is_dir():
        raise UserError(f"prompt file {path} is a directory")
    try:
        return _drop_final_newline(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"prompt file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise UserError(f"cannot read prompt file {path}: {e.strerror or e}") from None
