"""The one mapping from a request's method fields to the drafter options ``generate`` takes.

The server starts with a method and options (its command line, in ``method_options``' keywords);
a request may name another method and override any option but the model files (``draft_model``
and ``drafter`` are fixed per process: one model per process, loaded at startup).
"""

from __future__ import annotations

from ..drafters import METHODS
from ..errors import UserError
from ..method_options import MethodOptions
from .errors import APIError
from .schemas import MethodFields

FIXED = ("draft_model", "drafter")  # model files: loaded once per process
PER_REQUEST = tuple(name for name in MethodOptions.names() if name not in FIXED)


def request_method(fields: MethodFields, method: str, options: dict) -> tuple[str, dict]:
    """(method, options) for one request: its fields over the server's ``method`` and ``options``.

    Example: a server started with ``--method pld --num-draft 8`` and a request with
    ``{"method": "lookahead", "ngram": 4}`` -> ``("lookahead", {..., "num_draft": 8, "ngram": 4})``
    (``build_drafter`` uses the options that apply to the method).
    """
    name = fields.method or method
    if name not in METHODS:
        raise APIError(400, f"unknown method {name!r} (choose from: {', '.join(METHODS)})", "method", "unknown_method")
    given = {key: getattr(fields, key) for key in PER_REQUEST if getattr(fields, key, None) is not None}
    merged = {**options, **given}
    try:
        MethodOptions.from_dict(merged)  # every value parsed as the CLI parses it, before queueing
        MethodOptions.from_dict(given).check(name)  # the request's own options must apply to its method
    except UserError as e:
        raise APIError(400, str(e), None, "invalid_value") from None
    return name, merged
