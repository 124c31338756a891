"""API keys: a constant-time check, and a lock-out for an address that keeps sending wrong keys.

Without the lock-out a script can try about 900 keys a second. Each wrong key waits a quarter of
a second before its 401, and an address with ``limit`` wrong keys within ``window_s`` gets 429
(with ``Retry-After``) on every request, right or wrong key, until the oldest of them is older
than the window: no key is even compared while it is locked out.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time
from collections import deque

from fastapi import Request

from ..errors import MistralkitError

WRONG_KEY_DELAY_S = 0.25


class Unauthorized(MistralkitError):
    status = 401


class LockedOut(MistralkitError):
    """Too many wrong keys from one address."""

    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__("too many wrong API keys from this address", hint=f"retry in {retry_after} s")
        self.retry_after = retry_after


class KeyGuard:
    """Wrong-key times per client address (the oldest addresses are forgotten past ``max_clients``)."""

    def __init__(
        self, limit: int = 10, window_s: float = 60.0, max_clients: int = 10_000, clock=time.monotonic
    ) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self.failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> deque[float]:
        times = self.failures.get(client, deque())
        while times and times[0] <= self.clock() - self.window_s:
            times.popleft()
        return times

    def locked_for(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may now."""
        times = self._recent(client)
        if len(times) < self.limit:
            return 0
        return max(1, math.ceil(times[-self.limit] + self.window_s - self.clock()))

    def failed(self, client: str) -> None:
        times = self._recent(client)
        times.append(self.clock())
        self.failures.pop(client, None)
        self.failures[client] = times  # most recent last, so the first ones are the oldest
        while len(self.failures) > self.max_clients:
            self.failures.pop(next(iter(self.failures)))


async def require_key(request: Request) -> None:
    """Bearer key check in constant time; no key configured = open (loopback only, see ServerConfig)."""
    keys = request.app.state.config.api_keys
    if not keys:
        return
    guard: KeyGuard = request.app.state.key_guard
    client = request.client.host if request.client else "unknown"
    wait = guard.locked_for(client)
    if wait:
        raise LockedOut(wait)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)
    if not ok:
        guard.failed(client)
        await asyncio.sleep(WRONG_KEY_DELAY_S)
        raise Unauthorized("missing or wrong API key", hint="send the header Authorization: Bearer YOUR_KEY")
