"""Listening and running: the socket bound before anything is announced, and uvicorn with the header
deadline (``protocol``), exiting 0 on SIGTERM/SIGINT. Shared by ``serve`` and ``datagen serve``."""

from __future__ import annotations

import errno
import ipaddress
import socket


def run(app, listening: socket.socket, host: str, port: int, level: str, body_timeout_s: float,
        grace_s: float | None = None) -> None:
    """Serve ``app`` on the bound socket until SIGTERM/SIGINT (``level``: mistralkit's log level)."""
    import uvicorn

    from .protocol import deadline_protocol

    options = {"timeout_graceful_shutdown": int(grace_s)} if grace_s is not None else {}
    server_class()(uvicorn.Config(app, host=host, port=port, log_level=uvicorn_level(level),
                                  http=deadline_protocol(body_timeout_s), access_log=level == "debug",
                                  **options)).run(sockets=[listening])


def bind(host: str, port: int) -> socket.socket:
    from ..errors import InvalidParameter

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidParameter(f"cannot serve on {host}: {exc.strerror}", hint="pass --host 127.0.0.1 or an address "
                               "of this machine") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        busy = exc.errno == errno.EADDRINUSE
        raise InvalidParameter(f"cannot listen on {host}:{port}: "
                               + ("the port is in use" if busy else (exc.strerror or str(exc))),
                               hint="stop what uses it or pass --port N" if busy else None) from exc
    return sock


def server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would die of the
        signal (exit -15); a clean shutdown should exit 0."""

        def handle_exit(self, sig, frame) -> None:
            stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
            if stopping is not None:  # work running in threads stops at its next check
                stopping.set()
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    return Server


def uvicorn_level(level: str) -> str:
    return {"debug": "debug", "info": "info"}.get(level, "warning")


def is_loopback(host: str) -> bool:
    """An address of this machine only: ``localhost`` (and ``*.localhost``, RFC 6761) or a loopback IP.
    A server there may run without a key; a remote there is not "leaving the machine"."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
