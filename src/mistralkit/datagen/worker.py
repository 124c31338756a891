"""A local worker: agents that lease instructions, write cases with a model mistralkit runs, and submit them.

>>> report = work("http://127.0.0.1:8765", engine_writer(loaded), agents=4, count=20)  # doctest: +SKIP

Each agent is a thread with its own agent id; they share one loaded model, which writes as many
cases at once as it runs generations (``Engine.parallel``: ``datagen work --agents N`` loads llama.cpp
with N sequences decoded together; an engine that runs one at a time takes the agents in turn).
A case the server rejects is written again, up to ``tries`` times; then the agent gives its lease
back (``/release``) so the instruction goes to someone else. Ctrl-C (``stop``; SIGTERM too under
``datagen work``) ends every agent after its current piece of text and releases what they held.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import MistralkitError

Writer = Callable[[dict, int, threading.Event], str]  # (instruction, attempt, cancel) -> case text


class ServerUnreachable(MistralkitError):
    """The instruction server did not answer."""


@dataclass
class WorkReport:
    accepted: int = 0
    rejected: Counter = field(default_factory=Counter)
    released: int = 0
    handled: int = 0  # instructions finished: accepted or released
    done: bool = False  # the server said the goal is met
    interrupted: bool = False  # Ctrl-C
    elapsed_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    retries: int = 0  # calls asked again while the server was away

    def to_dict(self) -> dict:
        return {"accepted": self.accepted, "rejected": dict(self.rejected), "released": self.released,
                "handled": self.handled, "done": self.done, "interrupted": self.interrupted, "retries": self.retries,
                "elapsed_s": round(self.elapsed_s, 2), "errors": self.errors}


def engine_writer(loaded, max_tokens: int = 320, temperature: float = 0.8) -> Writer:
    """A Writer over a loaded model: the instruction's prompt as the user turn, a new seed per attempt."""
    from ..chat.conversation import fit
    from ..engines import GenerationParams, complete

    turns = threading.BoundedSemaphore(loaded.engine.parallel)  # generations the engine runs at once

    def write(instruction: dict, attempt: int, cancel: threading.Event) -> str:
        params = GenerationParams(max_tokens=max_tokens, temperature=temperature, seed=attempt)
        messages = [{"role": "user", "content": instruction["prompt"]}]
        with turns:
            fitted = fit(messages, loaded.engine.count_tokens, loaded.engine.n_ctx, params.max_tokens)
            return complete(loaded.engine, fitted.messages, params, cancel).text.strip()

    return write


PATIENCE_S = 120.0  # how long an agent keeps asking a server that went away (a restart) before it gives up
RETRIED = (502, 503, 504)  # a proxy in front of a restarting server, a busy state database


class _Client:
    """The agents' HTTP client. Every call is safe to repeat (the server gives an agent its live lease
    again and a submission already stored its stored result), so a server that restarts is asked again
    with backoff, up to ``patience_s``: no case is lost or counted twice. A submission may wait for the
    spec's judge model (up to 300 s), hence the long ``timeout_s``."""

    def __init__(self, server: str, token: str | None, timeout_s: float = 330.0, patience_s: float = PATIENCE_S,
                 stop: threading.Event | None = None) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout_s)
        self.patience_s, self.stop = patience_s, stop
        self.retries = 0  # calls asked again, for the report

    def post(self, route: str, body: dict) -> dict:
        import httpx

        deadline, delay = time.monotonic() + self.patience_s, 0.5
        while True:
            try:
                response = self.http.post(route, json=body)
                if response.status_code not in RETRIED:
                    break
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = str(exc) or type(exc).__name__
            if time.monotonic() + delay > deadline or (self.stop is not None and self.stop.is_set()):
                raise ServerUnreachable(f"the instruction server at {self.server} did not answer for "
                                        f"{self.patience_s:.0f} s: {problem}",
                                        hint="start it with `mistralkit datagen serve SPEC`; leases it gave "
                                             "come back to the pool when they expire")
            self.retries += 1
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise MistralkitError(f"{route}: HTTP {response.status_code}: {message}")
        return response.json()

    def close(self) -> None:
        self.http.close()


def check_server(server: str) -> dict:
    """The server's /health, or ServerUnreachable before anything (a model) is loaded for nothing."""
    import httpx

    try:
        response = httpx.get(server.rstrip("/") + "/health", timeout=10)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ServerUnreachable(f"no datagen server answers at {server}: {exc}",
                                hint="start it with `mistralkit datagen serve SPEC`, or pass --server URL") from exc


def work(server: str, write: Writer, *, agents: int = 1, count: int | None = None, token: str | None = None,
         tries: int = 3, stop: threading.Event | None = None, prefix: str | None = None,
         on_result: Callable[[str, dict], None] | None = None, patience_s: float = PATIENCE_S) -> WorkReport:
    """Run ``agents`` agents until the goal is met, ``count`` instructions are handled, or ``stop`` is set."""
    if agents < 1 or tries < 1 or (count is not None and count < 1):
        raise MistralkitError("--agents, --tries and --count must be at least 1")
    stop = stop or threading.Event()
    prefix = prefix or f"{socket.gethostname()}-{os.getpid()}"
    report, lock, started = WorkReport(), threading.Lock(), time.monotonic()
    client = _Client(server, token, patience_s=patience_s, stop=stop)

    def claim() -> bool:
        with lock:
            if stop.is_set() or report.done or (count is not None and report.handled >= count):
                return False
            report.handled += 1
            return True

    finished = [threading.Event() for _ in range(agents)]

    def agent(agent_id: str, done: threading.Event) -> None:
        try:
            while claim():
                _one(client, agent_id, write, tries, stop, report, lock, on_result)
        except Exception as exc:  # noqa: BLE001 - one agent's failure stops them all, reported once
            message = exc.message if isinstance(exc, MistralkitError) else f"{type(exc).__name__}: {exc}"
            with lock:
                report.errors.append(message)
            stop.set()
        finally:
            done.set()

    for i, done in enumerate(finished):
        threading.Thread(target=agent, args=(f"{prefix}-{i + 1}", done), daemon=True).start()
    # Events, not Thread.join: a join that Ctrl-C interrupts marks a running thread as stopped
    # (CPython 3.11's _wait_for_tstate_lock releases its lock), and the model would be closed under it.
    try:
        _wait(finished)
    except KeyboardInterrupt:  # the agents stop after their current piece of text and give their leases back
        report.interrupted = True
    finally:
        stop.set()
        while True:
            try:
                _wait(finished)
                break
            except KeyboardInterrupt:  # again: still wait, the agents are one token from stopping
                report.interrupted = True
        client.close()
        report.retries = client.retries
        report.elapsed_s = time.monotonic() - started
    return report


def _wait(events: list[threading.Event]) -> None:
    for event in events:
        while not event.wait(0.2):
            pass


def _one(client: _Client, agent_id: str, write: Writer, tries: int, stop: threading.Event,
         report: WorkReport, lock: threading.Lock, on_result) -> None:
    """Lease one instruction and see it to its end: accepted, or released after ``tries`` rejections."""
    instruction = client.post("/next-instruction", {"agent_id": agent_id})
    if instruction.get("done"):
        with lock:
            report.done = True
            report.handled -= 1
        return
    ident = instruction["instruction_id"]
    for attempt in range(tries):
        text = write(instruction, attempt, stop)
        if stop.is_set():
            break
        if text.strip():
            result = client.post("/submit-case", {"instruction_id": ident, "agent_id": agent_id, "case_text": text})
        else:  # the server would refuse it with a 400; count it as a rejection and write again
            result = {"status": "rejected", "reason": "empty"}
        if on_result is not None:
            on_result(agent_id, result)
        with lock:
            if result["status"] == "accepted":
                report.accepted += 1
                return
            report.rejected[result.get("reason") or "rejected"] += 1
    client.post("/release", {"instruction_id": ident, "agent_id": agent_id})
    with lock:
        report.released += 1
