"""Request work in threads that stops when its client leaves or the server is stopping.

``cancelled(request)`` opens a watch on the request's connection and yields a ``() -> bool`` that work
in a thread checks between its steps (between correction pieces, between embedding batches): true
once the client has disconnected or SIGTERM/SIGINT asked the server to stop (``app.state.stopping``).
``cancel_event(request)`` is the same watch as a ``threading.Event``, the ``cancel`` engines take.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Request


@asynccontextmanager
async def cancel_event(request: Request, every_s: float = 0.1) -> AsyncIterator[threading.Event]:
    """An event set once the client has disconnected or the server is stopping (the one watch of a
    request: several readers of ``request.is_disconnected`` at once would race for its messages)."""
    gone = threading.Event()
    stopping: threading.Event = request.app.state.stopping

    async def watch() -> None:
        while not gone.is_set():
            if stopping.is_set() or await request.is_disconnected():
                gone.set()
                return
            await asyncio.sleep(every_s)

    task = asyncio.create_task(watch())
    try:
        yield gone
    finally:
        task.cancel()


@asynccontextmanager
async def cancelled(request: Request, every_s: float = 0.1) -> AsyncIterator[Callable[[], bool]]:
    stopping: threading.Event = request.app.state.stopping
    async with cancel_event(request, every_s) as gone:
        yield lambda: gone.is_set() or stopping.is_set()
