"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from ..errors import ContextOverflow, InvalidParameter, MistralkitError, ModelNotFound, SessionNotFound

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
         503: "server_error"}


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": TYPES.get(status, "server_error"), "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


CODES: tuple[tuple[type[MistralkitError], int, str], ...] = (
    (ModelNotFound, 404, "model_not_found"),
    (SessionNotFound, 404, "session_not_found"),
    (ContextOverflow, 400, "context_length_exceeded"),
    (InvalidParameter, 400, "invalid_value"),
)


def from_exception(exc: MistralkitError) -> JSONResponse:
    status, code = next(((s, c) for kind, s, c in CODES if isinstance(exc, kind)), (exc.status, None))
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return error_response(status, message, code)


class Overloaded(MistralkitError):
    """The model's queue is full."""

    status = 429

    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"{model} is busy: its queue is full", hint=f"retry in {retry_after} s")
        self.retry_after = retry_after
