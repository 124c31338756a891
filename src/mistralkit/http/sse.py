"""Server-sent events with a keep-alive: what a streamed answer is sent as."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse


KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: clients ignore it, proxies see the connection is alive


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response that writes an SSE comment (``KEEPALIVE``) whenever nothing
    was sent for ``keepalive_s`` seconds (a long prompt being evaluated, a queue).

    The comment comes from a timer beside the body, not from a wrapper around the body's iterator:
    such a wrapper costs a task and a timed wait per event, on the event loop that every stream's
    tokens pass through. The body's generator runs in the response's own task, so a client that
    leaves cancels it there (Starlette listens for the disconnect) and its clean-up runs.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], keepalive_s: float) -> None:
        super().__init__(content, headers={"Cache-Control": "no-cache"})
        self.keepalive_s = keepalive_s

    async def stream_response(self, send) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()

        async def beat() -> None:
            nonlocal last
            try:
                while True:
                    await asyncio.sleep(last + self.keepalive_s - loop.time())
                    if loop.time() - last >= self.keepalive_s:
                        last = loop.time()
                        await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            except OSError:  # the client is gone: the body's next send says so
                pass

        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        beating = loop.create_task(beat())
        try:
            async for event in self.body_iterator:
                await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
                last = loop.time()
        finally:
            beating.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})
