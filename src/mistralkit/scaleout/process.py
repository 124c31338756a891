"""The vLLM child process: start it with its log in a file, wait until ``GET /v1/models`` answers,
register its remotes, and stop it cleanly (SIGINT, then SIGTERM, then SIGKILL) on the way out.

vLLM runs in a session of its own, so a Ctrl-C in the terminal reaches mistralkit alone, which then
stops vLLM in order and removes the remotes; its worker processes share that session and go with it.

>>> with launch(plan("mistralai/Mistral-7B-Instruct-v0.3")) as server:  # doctest: +SKIP
...     server.wait()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Self

from .. import paths
from ..errors import InvalidParameter, MistralkitError
from ..signals import interrupt_on_sigterm
from .vllm import KEY_ENV, Launch, plan, require_vllm

PROGRESS_EVERY_S = 10.0
POLL_S = 0.5
TAIL_LINES = 15


class VllmServer:
    """A running ``vllm serve`` and the remotes registered for it."""

    def __init__(self, spec: Launch, process: subprocess.Popen, log_path: Path, log: IO[bytes]) -> None:
        self.plan, self.process, self.log_path, self._log = spec, process, log_path, log
        self.registered: list[str] = []
        self._stopped = False
        # An ignored SIGINT (nohup, a background job) is inherited by vLLM: then SIGTERM is the polite signal.
        self._polite = signal.SIGTERM if signal.getsignal(signal.SIGINT) == signal.SIG_IGN else signal.SIGINT

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.plan.url

    def wait(self) -> int:
        """Block until vLLM exits (Ctrl-C raises KeyboardInterrupt here); its exit code."""
        return self.process.wait()

    def tail(self, lines: int = TAIL_LINES) -> list[str]:
        """The last lines of vLLM's log."""
        try:
            text = self.log_path.read_bytes()[-16384:].decode("utf-8", "replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    def log_hint(self) -> str:
        shown = "\n  ".join(self.tail())
        return f"last lines of {self.log_path}:\n  {shown}" if shown else f"vLLM's log: {self.log_path}"

    def register(self) -> None:
        from ..models.remotes import Remote, add

        for fields in self.plan.remotes:
            add(Remote(**fields))
            self.registered.append(fields["name"])

    def stop(self, grace_s: float = 30.0) -> int | None:
        """Remove the remotes, then stop vLLM: SIGINT, SIGTERM after ``grace_s``, SIGKILL 10 s later."""
        if self._stopped:
            return self.process.returncode
        self._stopped = True
        self._unregister()
        try:
            self._signal(grace_s)
        except KeyboardInterrupt:  # a second Ctrl-C: no more waiting
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)  # workers left behind would keep GPU memory
        self._log.close()
        return self.process.returncode

    def _signal(self, grace_s: float) -> None:
        # SIGINT to vLLM alone (it stops its workers); then the whole session, harder each time.
        for i, (sig, wait_s) in enumerate(((self._polite, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0))):
            if self.process.poll() is not None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                (os.killpg if i else os.kill)(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)

    def _unregister(self) -> None:
        if not self.registered:
            return
        from ..models.remotes import remove

        for name in self.registered:
            with contextlib.suppress(MistralkitError, KeyError):
                remove(name)
        self.registered = []


def launch(spec: Launch, *, ready_timeout_s: float = 1800.0, register: bool = True,
           on_progress: Callable[[str], None] | None = None,
           environ: Mapping[str, str] | None = None) -> VllmServer:
    """Start ``spec``'s command and return once vLLM answers and its remotes are registered."""
    environ = dict(os.environ if environ is None else environ)
    executable = require_vllm(spec, environ)
    if register:
        _check_names_free(spec)  # before minutes of model loading, not after
    _check_port_free(spec.host, spec.port)
    log_path = paths.state_dir() / "vllm" / f"{spec.remote['name'].replace(':', '_')}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    try:
        process = subprocess.Popen([executable, *spec.command[1:]], stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, env=environ, start_new_session=True)
    except OSError as exc:
        log.close()
        raise MistralkitError(f"cannot start {executable}: {exc}", hint=f"it would run: {spec.shell}") from exc
    server = VllmServer(spec, process, log_path, log)
    if on_progress is not None:
        on_progress(f"started (pid {process.pid}, log {log_path}): {spec.shell}")
    try:
        _wait_ready(server, ready_timeout_s, on_progress, environ.get(KEY_ENV))
        if register:
            server.register()
    except BaseException:
        server.stop(grace_s=10.0)
        raise
    return server


def _check_names_free(spec: Launch) -> None:
    """A remote of the same name is replaced only when it is this server's (left by an earlier run)."""
    from ..models.remotes import configured

    known = configured()
    for fields in spec.remotes:
        found = known.get(fields["name"])
        if found and (found[1], found[0].flavor, found[0].base_url) != ("remotes.json", "vllm", fields["base_url"]):
            raise InvalidParameter(f"a remote named {fields['name']!r} exists already ({found[0].base_url}, "
                                   f"from {found[1]})", hint="pick another --name (NAME=RUN for an adapter), "
                                                            f"or `mistralkit remotes remove {fields['name']}`")


def _check_port_free(host: str, port: int) -> None:
    """A busy port is refused now, not after vLLM has spent minutes loading (or answered for another server)."""
    bind_host = host.strip("[]") or "0.0.0.0"
    try:
        family = socket.getaddrinfo(bind_host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bind_host, port))
    except OSError as exc:
        raise InvalidParameter(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                               hint="another server holds the port: pick another with --port") from exc


def _answers(url: str, key: str | None) -> bool:
    request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=2):
            return True
    except urllib.error.HTTPError as exc:  # it answers, if only to say no (a key mismatch)
        return exc.code < 500
    except (OSError, ValueError):
        return False


def _wait_ready(server: VllmServer, timeout_s: float, on_progress: Callable[[str], None] | None,
                key: str | None) -> None:
    started = time.monotonic()
    told = started
    while not _answers(server.url, key):
        code = server.process.poll()
        if code is not None:
            raise MistralkitError(f"vLLM exited with code {code} before it answered on {server.url}",
                                  hint=server.log_hint())
        now = time.monotonic()
        if now - started > timeout_s:
            raise MistralkitError(f"vLLM did not answer on {server.url}/v1/models within {timeout_s:.0f} s",
                                  hint=server.log_hint())
        if on_progress is not None and now - told >= PROGRESS_EVERY_S:
            told = now
            last = (server.tail(1) or ["(no output yet)"])[0]
            on_progress(f"waiting for vLLM on {server.url} ({now - started:.0f} s): {last[:160]}")
        time.sleep(POLL_S)


def start(target: Launch | str, *, ready_timeout_s: float = 1800.0, register: bool = True,
          on_progress: Callable[[str], None] | None = None, on_ready: Callable[[Any], None] | None = None,
          **options: Any) -> None:
    """Start vLLM, wait until it answers, register the remotes, and stay in the foreground until Ctrl-C
    (or SIGTERM), which stops vLLM cleanly and removes the remotes.

    ``target`` is a ``Launch`` or a model reference (then ``options`` go to ``plan``).

    >>> start("mistralai/Mistral-7B-Instruct-v0.3", adapters=["runs/support"])  # doctest: +SKIP
    """
    spec = target if isinstance(target, Launch) else plan(target, **options)
    with interrupt_on_sigterm():  # from the start: vLLM may take minutes to load, and must not be orphaned
        server = launch(spec, ready_timeout_s=ready_timeout_s, register=register, on_progress=on_progress)
        try:
            if on_ready is not None:
                on_ready(server)
            code = server.wait()
        except KeyboardInterrupt:
            return
        finally:
            server.stop()
    raise MistralkitError(f"vLLM stopped on its own with exit code {code}", hint=server.log_hint())
