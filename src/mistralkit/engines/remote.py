"""Remote engines: a chat streamed from an OpenAI-compatible server or Anthropic's Messages API.

``open_remote`` picks the engine by the remote's ``api`` (a table, like ``engines.ENGINES``). The
shared loop lives in ``RemoteEngine``: it refuses what a remote cannot do (token prompts, grammars)
and remotes altogether under ``MISTRALKIT_OFFLINE=1``, says once per process where the text goes,
retries 429/5xx/connection failures until the first text arrives (exponential backoff, Retry-After
honoured), enforces stop strings on its side too, and ends with a usage chunk. Token counts are the
API's when it reports them; otherwise (and for ``count_tokens``) an estimate: ceil(characters / 3)
+ 4 per message, on the high side for English so that history trimming keeps a margin.

>>> from mistralkit.models.remotes import lookup
>>> model = lookup(None, environ={"MODEL_TYPE": "openai", "OPENAI_MODEL": "gpt-4o-mini"})
>>> open_remote(model).n_ctx
32768
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from ..errors import InvalidParameter, RemoteError, RemoteRefused
from ..formats.base import Message
from ..models.remotes import DEFAULT_CTX, Remote, RemoteModel
from .base import (Capabilities, Chunk, EngineBase, GenerationParams, Request, Usage, complete,
                   require)
from .remote_http import MAX_RETRY_AFTER_S, Event, Http, Retry
from .stops import StopMatcher

log = logging.getLogger("mistralkit.remote")

ENGINES = {"openai": ("remote_openai", "OpenAIEngine"), "anthropic": ("remote_anthropic", "AnthropicEngine")}
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
TRUE = ("1", "true", "yes", "on")

_noticed: set[tuple[str, str, str]] = set()
_notice_lock = threading.Lock()


@dataclass
class Delta:
    """What one event of a remote's stream says: text, the finish, token counts, or the end."""

    text: str = ""
    finish: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    done: bool = False  # the stream's proper end ([DONE], message_stop)
    call: tuple[int, str | None, str | None, str] | None = None  # a tool call's (index, id, name, arguments part)


def open_remote(model: RemoteModel, *, n_ctx: int | None = None) -> RemoteEngine:
    """The engine for ``model.remote.api`` (nothing is sent until the first generation)."""
    module, name = ENGINES[model.remote.api]
    cls = getattr(importlib.import_module(f".{module}", __package__), name)
    return cls(model, n_ctx=n_ctx)


def offline(environ: Mapping[str, str]) -> bool:
    """``MISTRALKIT_OFFLINE`` is set, in the process environment or ``environ``."""
    return any(env.get("MISTRALKIT_OFFLINE", "").strip().lower() in TRUE for env in (os.environ, environ))


def notice(remote: Remote) -> None:
    """Say once per process and remote where prompts go (a WARNING, and stderr when no console shows it)."""
    key = (remote.name, remote.api, remote.base_url)
    with _notice_lock:
        if key in _noticed:
            return
        _noticed.add(key)
    where = ("to a server on this machine" if remote.is_loopback else f"to {remote.api}")
    text = (f"note: prompts go {where} at {remote.base_url} (remote {remote.name!r}, model {remote.model}); "
            "set MISTRALKIT_OFFLINE=1 to refuse remotes")
    log.warning(text)
    if not _console_shows(log, logging.WARNING):
        print(text, file=sys.stderr, flush=True)


def _console_shows(logger: logging.Logger, level: int) -> bool:
    """A handler on ``logger``'s way up writes ``level`` records to stderr (logging's last resort counts)."""
    if not logger.isEnabledFor(level):
        return False
    found = False
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            found = True
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and stream is sys.stderr and handler.level <= level:
                return True
        current = current.parent if current.propagate else None
    return not found and logging.lastResort is not None and logging.lastResort.level <= level


def estimate_tokens(messages: Sequence[Message]) -> int:
    """ceil(characters / 3) + 4 per message: remotes do not say how they tokenize."""
    return sum(math.ceil(len(m.get("content") or "") / 3) + 4 for m in messages)


class RemoteEngine(EngineBase):
    """A remote API as an ``Engine``; subclasses build the request and read the events."""

    capabilities = Capabilities(local=False, tools=True)
    format = None

    def __init__(self, model: RemoteModel, n_ctx: int | None = None) -> None:
        self.model, self.remote = model, model.remote
        self.name = model.name
        self.n_ctx = n_ctx or self.remote.ctx or DEFAULT_CTX
        self.http = Http(self.remote)
        self._refuse_offline()

    # what each API does differently
    def request(self, messages: list[Message], params: GenerationParams,
                key: str | None) -> tuple[str, dict[str, str], dict]:
        """(URL, headers, JSON body) of one streamed generation."""
        raise NotImplementedError

    def parse(self, events: Iterator[Event], where: str) -> Iterator[Delta]:
        raise NotImplementedError

    def environ(self) -> Mapping[str, str]:
        from ..settings import environment

        return self.model.environ if self.model.environ is not None else environment()

    def _refuse_offline(self) -> None:
        if offline(self.environ()):
            raise RemoteRefused(f"remote {self.name!r} ({self.remote.api} at {self.remote.base_url}) is refused: "
                                "MISTRALKIT_OFFLINE is set", hint="unset MISTRALKIT_OFFLINE to allow remotes, "
                                "or pick a local model")

    def api_key(self) -> str | None:
        """The key from ``key_env`` now. Nothing is sent (a 401) when the remote names a key variable that
        is unset or empty, or when a hosted API has no key variable at all."""
        var = self.remote.key_env
        key = (self.environ().get(var) or "").strip() if var else ""
        if key or not (var or self.remote.needs_key):
            return key or None
        raise RemoteError(f"{self.remote.api} remote {self.name!r} ({self.remote.base_url}) needs an API key, and "
                          f"{var or 'no key variable'} is {'empty or unset' if var else 'named'}",
                          hint=f"set {var} in the environment or .env" if var else
                          "name the variable holding the key: mistralkit remotes add NAME ... --key-env VAR",
                          status=401)

    def messages(self, request: Request) -> list[Message]:
        if isinstance(request, str):
            return [{"role": "user", "content": request}]
        items = list(request)
        if items and all(isinstance(item, int) for item in items):
            require(self, "tokens", "a token prompt")
        if not items:
            raise InvalidParameter("no messages to send", hint="pass at least one user message")
        out: list[Message] = []
        for item in items:
            role = ROLES.get(item.get("role", "")) if isinstance(item, Mapping) else None
            if role is None or not isinstance(item.get("content"), str):
                raise InvalidParameter(f"bad message {item!r:.80}",
                                       hint="messages are {\"role\": system|user|assistant|tool, \"content\": text}")
            message = {"role": role, "content": item["content"]}
            for extra in ("tool_calls", "tool_call_id", "name"):  # tool turns, in formats.tools' shape
                if item.get(extra):
                    message[extra] = item[extra]
            out.append(message)
        return out

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return estimate_tokens(messages)

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        messages = self.messages(request)
        if params.grammar is not None:
            require(self, "grammar", "a grammar (JSON mode, JSON schema)")
        self._refuse_offline()
        key = self.api_key()
        notice(self.remote)
        url, headers, body = self.request(messages, params, key)
        return self._stream(url, headers, body, key, messages, params, cancel or threading.Event())

    def _stream(self, url: str, headers: dict[str, str], body: dict, key: str | None, messages: list[Message],
                params: GenerationParams, cancel: threading.Event) -> Iterator[Chunk]:
        started = time.perf_counter()
        ttft, pieces, finish = 0.0, 0, None
        counts: dict[str, int] = {}
        calls: dict[int, dict] = {}  # tool calls by index, as their parts arrive
        stops = StopMatcher(params.stop)
        for attempt in range(self.remote.retries + 1):
            try:
                with self.http.open(url, headers, body, key) as events:
                    done = False
                    for delta in self.parse(events, self.http.where(url)):
                        if cancel.is_set():
                            finish = "cancelled"
                            break
                        for field in ("prompt_tokens", "completion_tokens", "cached_tokens"):
                            if getattr(delta, field) is not None:
                                counts[field] = getattr(delta, field)
                        if delta.call is not None:
                            index, call_id, name, part = delta.call
                            call = calls.setdefault(index, {"id": call_id, "name": name or "", "arguments": ""})
                            call["id"], call["name"] = call_id or call["id"], name or call["name"]
                            call["arguments"] += part
                            pieces += 1
                            ttft = ttft or time.perf_counter() - started
                        if delta.text:
                            safe, hit = stops.feed(delta.text)
                            pieces += 1
                            if safe:
                                ttft = ttft or time.perf_counter() - started
                                yield Chunk(safe)
                            if hit:
                                finish = "stop"
                                break
                        finish = _finish(delta.finish) if delta.finish else finish
                        if delta.done:
                            done = True
                            break
                    if not done and finish is None:  # a finish_reason already says the answer is whole
                        raise Retry(RemoteError(f"{self.http.where(url)} ended its answer before the end",
                                                hint="retry; the connection may have been cut", status=502))
                break
            except Retry as exc:
                if pieces or attempt == self.remote.retries or cancel.is_set():
                    raise _after(exc.error, attempt + 1) from None
                delay = exc.delay_s if exc.delay_s is not None else self.remote.backoff_s * 2 ** attempt
                if delay > MAX_RETRY_AFTER_S:
                    raise _after(exc.error, attempt + 1) from None
                log.info("retrying %s in %.1f s: %s", url, delay, exc.error.message)
                if cancel.wait(delay):
                    finish = "cancelled"
                    break
        if finish != "cancelled":
            rest = stops.flush()
            if rest:
                ttft = ttft or time.perf_counter() - started
                yield Chunk(rest)
        total = time.perf_counter() - started
        usage = Usage(prompt_tokens=counts.get("prompt_tokens", estimate_tokens(messages)),
                      completion_tokens=counts.get("completion_tokens", pieces),
                      cached_tokens=counts.get("cached_tokens", 0), ttft_s=ttft or total, total_s=total)
        found = tuple(calls[i] for i in sorted(calls)) if finish != "cancelled" else ()
        yield Chunk("", finish_reason=finish or "stop", usage=usage, tool_calls=found)  # type: ignore[arg-type]

    def close(self) -> None:
        self.http.close()


def _after(error: RemoteError, tries: int) -> RemoteError:
    """``error``, saying how many tries it took when there were several."""
    if tries == 1:
        return error
    return RemoteError(f"{error.message}, after {tries} tries", hint=error.hint, status=error.status)


def _finish(reason: str) -> str:
    """The engine contract's finish for an API's: only a cut-off for length is not a stop."""
    return "length" if reason in ("length", "max_tokens", "model_length") else "stop"


@dataclass
class Checked:
    """The answer to ``check``'s tiny request."""

    name: str
    latency_s: float
    text: str
    usage: Usage


def check(model: RemoteModel) -> Checked:
    """Send one tiny request ("Say OK.", 8 tokens, greedy) and time it; errors are ``RemoteError``."""
    with open_remote(model) as engine:
        started = time.perf_counter()
        result = complete(engine, [{"role": "user", "content": "Say OK."}], GenerationParams(max_tokens=8, greedy=True))
        return Checked(model.name, time.perf_counter() - started, result.text, result.usage)
