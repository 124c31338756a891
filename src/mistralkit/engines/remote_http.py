"""HTTP for the remote engines: one streamed POST, server-sent events, and errors people can read.

Every error is a one-line ``RemoteError`` that names the remote and the URL and carries the HTTP
code to pass on (401 key refused, 404 no such model, 429 rate limit, 502 down or nonsense, 504
timeout). API keys never appear in a message: they are scrubbed from whatever a server says, and
only the URL is ever logged (never headers or bodies).
"""

from __future__ import annotations

import email.utils
import json
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RemoteError

if TYPE_CHECKING:
    import httpx

    from ..models.remotes import Remote

log = logging.getLogger("mistralkit.remote")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 529})  # 529: Anthropic's "overloaded"
MAX_RETRY_AFTER_S = 30.0  # a longer Retry-After is reported, not waited for
MESSAGE_CHARS = 200  # of a server's own error text
KEYISH = re.compile(r"\b(sk|key|pk)-[A-Za-z0-9_*.\-]{6,}")  # what API keys look like, even partly masked


class Retry(Exception):
    """A failure worth another try when no text has been passed on yet; ``error`` when not retried."""

    def __init__(self, error: RemoteError, delay_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error, self.delay_s = error, delay_s


@dataclass
class Event:
    """One server-sent event: ``name`` is its ``event:`` field (None when absent)."""

    name: str | None
    data: str

    def json(self, where: str) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            raise RemoteError(f"{where} sent an event that is not JSON: {one_line(self.data, None)!r}",
                              hint="check that base_url points at the API itself", status=502) from None


def sse(lines: Iterator[str]) -> Iterator[Event]:
    """Events of a ``text/event-stream`` body (``data:`` lines joined; comments skipped)."""
    name: str | None = None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield Event(name, "\n".join(data))
            name, data = None, []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
    if data:
        yield Event(name, "\n".join(data))


def scrub(text: str, secret: str | None) -> str:
    """``text`` without the key, nor anything that looks like one."""
    if secret:
        text = text.replace(secret, "[key]")
    return KEYISH.sub(lambda m: f"{m.group(1)}-[redacted]", text)


def one_line(text: str, secret: str | None, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join(scrub(text, secret).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def server_message(response: httpx.Response, secret: str | None) -> str:
    """What the server said about its error: OpenAI/Anthropic ``error.message``, FastAPI ``detail``, or text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    said: Any = response.text
    if isinstance(body, dict):
        error = body.get("error")
        said = (
            (error.get("message") if isinstance(error, dict) else error)
            or body.get("detail")
            or body.get("message")
            or said
        )
    if not isinstance(said, str):
        said = json.dumps(said)
    return one_line(said, secret)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Http:
    """One remote's connection pool; ``open`` posts a request and yields its events."""

    def __init__(self, remote: Remote) -> None:
        self.remote = remote
        self._client: httpx.Client | None = None

    def where(self, url: str) -> str:
        return f"{self.remote.api} remote {self.remote.name!r} ({url})"

    def client(self) -> httpx.Client:
        if self._client is None:
            import httpx

            timeout = self.remote.timeout_s
            # proxy variables apply to servers elsewhere, never to one on this machine
            self._client = httpx.Client(timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
                                        follow_redirects=False, trust_env=not self.remote.is_loopback)
        return self._client

    @contextmanager
    def open(self, url: str, headers: dict[str, str], body: dict, secret: str | None) -> Iterator[Iterator[Event]]:
        """The events of ``POST url``; ``Retry`` for what another try may fix, ``RemoteError`` otherwise."""
        import httpx

        where = self.where(url)
        log.debug("POST %s", url)
        try:
            with self.client().stream("POST", url, headers=headers, json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise self.refusal(response, where, secret)
                kind = response.headers.get("content-type", "")
                if "text/event-stream" not in kind:
                    raise RemoteError(f"{where} answered HTTP 200 with {kind or 'no content type'}, not an "
                                      "event stream", hint="check that base_url points at the API itself "
                                      "(…/v1 for an OpenAI-compatible server)", status=502)
                yield sse(response.iter_lines())
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise Retry(self.unreachable(where, "the connection timed out")) from None
            raise RemoteError(f"{where} did not answer within {self.remote.timeout_s:g} s",
                              hint="retry later, or raise this remote's timeout_s", status=504) from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise Retry(self.unreachable(where, one_line(str(exc), secret) or exc.__class__.__name__)) from None
        except httpx.HTTPError as exc:
            raise RemoteError(f"{where} failed: {one_line(str(exc), secret) or exc.__class__.__name__}",
                              status=502) from None

    def unreachable(self, where: str, why: str) -> RemoteError:
        return RemoteError(f"cannot reach {where}: {why}",
                           hint=f"check that the server runs and the URL is right (`mistralkit remotes check "
                                f"{self.remote.name}`)", status=502)

    def refusal(self, response: httpx.Response, where: str, secret: str | None) -> Exception:
        """The error for a non-200 answer (a ``Retry`` for 429 and 5xx)."""
        code, said = response.status_code, server_message(response, secret)
        detail = f"HTTP {code}: {said}" if said else f"HTTP {code}"
        var = self.remote.key_env
        if code in (401, 403):
            hint = f"check the key in {var}" if var else "name the variable holding its key (key_env)"
            return RemoteError(f"{where} refused the API key ({detail})", hint=hint, status=401)
        if code == 404:
            root = "…/v1 for an OpenAI-compatible server" if self.remote.api == "openai" else "without /v1"
            return RemoteError(f"{where} has no model {self.remote.model!r} ({detail})",
                               hint=f"check the model name on that server, and that base_url ends where the API "
                                    f"starts ({root})", status=404)
        if code == 429:
            wait = retry_after(response)
            error = RemoteError(f"{where} is rate-limiting requests ({detail})",
                                hint=f"retry in {wait:.0f} s" if wait else "retry later", status=429)
            return Retry(error, wait)
        if code in RETRY_STATUSES:
            error = RemoteError(f"{where} failed ({detail})", hint="retry later", status=502)
            return Retry(error, retry_after(response))
        if 400 <= code < 500:
            return RemoteError(f"{where} refused the request ({detail})",
                               hint="the server's message says what to change", status=400)
        return RemoteError(f"{where} answered {detail}", hint="check that base_url points at the API itself",
                           status=502)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
