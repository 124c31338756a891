"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``, for every HTTP
server of mistralkit: the status and code of each ``MistralkitError``, pydantic's refusals as a 400
naming the field, the server's folders kept out of every message, and ``error_handlers`` to install
them on an app (``serve`` adds its own on top: server/errors.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fastapi.responses import JSONResponse

from ..errors import (ContextOverflow, HistoryBusy, HistoryUnavailable, InvalidParameter, MistralkitError,
                      ModelNotFound, RemoteError, RemoteRefused, SessionNotFound, TooLarge, Unsupported)

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
         408: "invalid_request_error", 409: "conflict_error", 410: "invalid_request_error",
         502: "server_error", 504: "server_error",
         413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error"}


PRIVATE: dict[str, str] = {}  # a folder of the server's -> what an answer shows instead (see hide_folders)


def hide_folders(folders: dict[Path, str]) -> None:
    """Name these folders (the allowed model folders, the data folder, the user's home) in no answer:
    ``/srv/models/x.gguf`` reads ``x.gguf``, ``/home/ann/x`` reads ``~/x``."""
    for folder, shown in folders.items():
        for form in {str(folder), str(folder.resolve())}:
            PRIVATE[form.rstrip(os.sep) + os.sep] = shown


def redact(text: str) -> str:
    """``text`` without the server's own folders in it (longest first: a model folder inside home)."""
    for folder in sorted(PRIVATE, key=len, reverse=True):
        text = text.replace(folder, PRIVATE[folder])
    return text


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": redact(message), "type": TYPES.get(status, "server_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


CODES: tuple[tuple[type[MistralkitError], int, str], ...] = (
    (ModelNotFound, 404, "model_not_found"),
    (SessionNotFound, 404, "session_not_found"),
    (ContextOverflow, 400, "context_length_exceeded"),
    (TooLarge, 413, "request_too_large"),
    (InvalidParameter, 400, "invalid_value"),
    (Unsupported, 400, "unsupported_by_engine"),
    (RemoteRefused, 403, "remote_refused"),
    (HistoryBusy, 503, "history_busy"),
    (HistoryUnavailable, 503, "history_unavailable"),
)


def from_exception(exc: MistralkitError) -> JSONResponse:
    status, code = next(((s, c) for kind, s, c in CODES if isinstance(exc, kind)), (exc.status, None))
    if isinstance(exc, RemoteError):
        code = "remote_error"
    message = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return error_response(status, message, code, getattr(exc, "param", None))


_TYPE_TAG = re.compile(r"^(str|int|float|bool|none|list|dict|json-or-python|function-\w+)(\[.*\])?$|\[")


def _where(loc: tuple) -> str:
    """A field path people read: ``messages[0].content``, without pydantic's union-member tags."""
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _TYPE_TAG.search(str(part)):
            out += f".{part}" if out else str(part)
    return out


def validation_message(errors: list[dict]) -> tuple[int, str, str, str | None]:
    """(status, message, code, param) for a request pydantic refused: 400 with ``param`` set, as OpenAI
    answers a bad parameter (FastAPI's default 422 breaks clients that expect OpenAI's codes)."""
    text = next((e for e in errors if e.get("type") == "invalid_text"), None)
    if text is not None:
        return 400, text["msg"], "invalid_text", (text.get("ctx") or {}).get("where") or None
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return 400, f"the request body is not valid JSON{': ' + str(reason) if reason else ''}", "invalid_json", None
    where = _where(tuple(first.get("loc", ())))
    if not where and first.get("type") == "value_error":  # a check across fields (max_tokens vs ...)
        return 400, str(first.get("msg", "invalid request")).removeprefix("Value error, "), "invalid_request", None
    if not where:
        return (400, "the request body must be a JSON object (send it with Content-Type: application/json)",
                "invalid_request", None)
    return 400, f"{where}: {first.get('msg', 'invalid value')}", "invalid_request", where


UNPARSABLE_BODY = "There was an error parsing the body"  # FastAPI's words for a body not in UTF-8


def error_handlers(app) -> None:
    """Every error of ``app`` as OpenAI-shaped JSON: keys (401, 429 locked out), ``MistralkitError``,
    a refused request body, and Starlette's own (404, 405...)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from .auth import LockedOut, Unauthorized

    @app.exception_handler(LockedOut)
    async def locked_out(_: Request, exc: LockedOut) -> JSONResponse:
        return error_response(429, f"{exc.message} ({exc.hint})", "too_many_wrong_keys",
                              headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, f"{exc.message} ({exc.hint})", "invalid_api_key",
                              headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(MistralkitError)
    async def ours(_: Request, exc: MistralkitError) -> JSONResponse:
        return from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, code, param = validation_message(exc.errors())
        return error_response(status, message, code, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == UNPARSABLE_BODY:
            return error_response(400, "the request body is not valid JSON text in UTF-8", "invalid_json")
        return error_response(exc.status_code, str(exc.detail), None, headers=getattr(exc, "headers", None))
