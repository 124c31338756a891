"""Request bodies: at most ``limit`` bytes (413) and no stalling between parts (408), for every HTTP
server of mistralkit."""

from __future__ import annotations

import asyncio

from fastapi.responses import Response

from .errors import error_response


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413), by Content-Length or as they stream in, and
    bodies that stall: each part must come within ``timeout_s`` (408).

    Such a body is cut: the app sees a client that left (an exception raised from ``receive`` would
    reach FastAPI's body parsing wrapped in an ExceptionGroup and turn into a 400), and whatever it
    answers is replaced by the 413 or 408.
    """

    def __init__(self, app, limit: int, timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        seen, refusal, started, complete = 0, None, False, False

        async def counted():
            nonlocal seen, refusal, complete
            if refusal is not None:
                return {"type": "http.disconnect"}
            if complete:  # after the body: waiting for a disconnect has no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                refusal = _stalled(self.timeout_s)
                return {"type": "http.disconnect"}
            seen += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > self.limit:
                refusal = _too_large(self.limit)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message):
            nonlocal started
            if refusal is not None and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if refusal is None or started:
                raise
        if refusal is not None and not started:
            await refusal(scope, receive, send)


def _too_large(limit: int) -> Response:
    return error_response(413, f"request body over the limit of {limit} bytes", "request_too_large")


def _stalled(timeout_s: float) -> Response:
    return error_response(408, f"the request body did not arrive within {timeout_s:g} s", "request_timeout",
                          headers={"Connection": "close"})
