"""OpenAI's error JSON ``{"error": {"message", "type", "param", "code"}}`` for every failure.

FastAPI's own 422 body, Starlette's 404/405 and any unexpected exception are turned into it, so a
client always gets the same shape and the server keeps serving.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import UserError

log = logging.getLogger("mlx_specdec.server")

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 500: "server_error"}


class APIError(Exception):
    """An error answered with ``status`` and OpenAI's error JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code)


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param, "code": code}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(error: dict) -> tuple[str, str | None]:
    """One line for pydantic's first error, e.g. ``messages: Field required``; the param path."""
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    param = ".".join(loc) or None
    if error.get("type") == "json_invalid":
        return f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})", None
    if param is None and error.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return "the request body must be a JSON object (with the header 'Content-Type: application/json')", None
    return (f"{param}: {error.get('msg')}" if param else str(error.get("msg"))), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return e.response()

    @app.exception_handler(UserError)
    async def user_error(_: Request, e: UserError):
        return error_response(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, e: RequestValidationError):
        errors = e.errors()
        message, param = _validation_message(errors[0]) if errors else ("invalid request", None)
        return error_response(400, message, param, "invalid_value" if param else "invalid_json")

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, e: HTTPException):
        return error_response(e.status_code, str(e.detail))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, e: Exception):
        log.exception("unexpected error")
        return error_response(500, f"internal error: {type(e).__name__}: {e}")
