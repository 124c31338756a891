"""uvicorn's h11 protocol, with a deadline on each request's headers.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but a connection that
never finishes sending its headers (a slowloris, or a client that died mid-request) stays open and
holds a socket forever: the first byte cancels the keep-alive timer and nothing re-arms it. Here a
timer runs from the connection's start (and from the first byte of each later request) until the
headers are complete; when it fires the server answers 408 and closes the connection.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: "


def deadline_protocol(seconds: float) -> type[asyncio.Protocol]:
    """An ``H11Protocol`` that gives up on headers not complete within ``seconds``."""

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in: the body has its own limit (BodyLimit)
            elif self._deadline is None and not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._deadline = self.loop.call_later(seconds, self._expire)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expire(self) -> None:
            self._deadline = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                body = (b'{"error": {"message": "the request headers did not arrive within %g s", '
                        b'"type": "invalid_request_error", "param": null, "code": "request_timeout"}}' % seconds)
                self.transport.write(TIMEOUT + str(len(body)).encode() + b"\r\n\r\n" + body)
                self.transport.close()

    return HeaderDeadline
