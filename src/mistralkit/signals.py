"""SIGTERM handled as Ctrl-C where a command must clean up on its way out (a vLLM child, leases)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def interrupt_on_sigterm() -> Iterator[None]:
    """Within the block a SIGTERM raises KeyboardInterrupt in the main thread, so the code that handles
    Ctrl-C runs for it too (vLLM is stopped, not orphaned; `datagen work` gives its leases back)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
