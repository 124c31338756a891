"""The OpenAI server's own errors, on top of the shared ones (http/errors.py): a model's full queue
(429 with ``Retry-After``) and a history database another program holds (503)."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from ..errors import HistoryBusy, MistralkitError
from ..http.errors import error_handlers, error_response


def history_busy(exc: HistoryBusy) -> JSONResponse:
    """503 with ``Retry-After``: another program holds the history database's write lock."""
    return error_response(503, str(exc), "history_busy", headers={"Retry-After": str(exc.retry_after)})


class Overloaded(MistralkitError):
    """The model's queue is full."""

    status = 429

    def __init__(self, model: str, retry_after: int) -> None:
        super().__init__(f"{model} is busy: its queue is full", hint=f"retry in {retry_after} s")
        self.retry_after = retry_after


def server_error_handlers(app) -> None:
    """``http.errors.error_handlers`` plus the server's own."""
    from fastapi import Request

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return error_response(429, exc.message, "queue_full", headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(HistoryBusy)
    async def history_is_busy(_: Request, exc: HistoryBusy) -> JSONResponse:
        return history_busy(exc)

    error_handlers(app)
