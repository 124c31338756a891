"""The instruction server: agents lease instructions and submit cases over HTTP, on 127.0.0.1 by default.

Routes: ``GET /health``, ``GET /stats``, ``GET /dashboard``, ``GET|POST /next-instruction``,
``POST /submit-case``, ``POST /release``. Every route but ``/health`` needs the bearer token when one
is set (required off loopback, as ``mistralkit serve`` does); the dashboard also takes it as
``?token=`` so a browser can open it. The Host header must name this server (DNS rebinding), bodies
are bounded, and nothing a request sends is ever used as a path: instruction ids are looked up in
the database only.
"""

from __future__ import annotations

import hmac
import threading
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import Field

from ..errors import InvalidParameter
from ..http.auth import KeyGuard, require_key
from ..http.errors import error_handlers, error_response
from ..http.limits import BodyLimit
from ..http.body import RequestBody
from ..http.runner import is_loopback
from ..server.watch import cancel_event
from .state import ANONYMOUS, State

AGENT_ID = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$",
                 description="Who asks: letters, digits and . _ : @ -")


@dataclass
class DatagenConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    api_keys: tuple[str, ...] = ()
    insecure_no_auth: bool = False
    allowed_hosts: tuple[str, ...] = ()  # extra Host header names (e.g. a DNS name of this machine)
    max_body_bytes: int = 1 << 20
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not (0 < self.port < 65536):
            raise InvalidParameter(f"port {self.port}: must be between 1 and 65535")
        if not is_loopback(self.host) and not self.api_keys and not self.insecure_no_auth:
            raise InvalidParameter(
                f"refusing to serve on {self.host} without a token: anyone on the network could submit cases",
                hint="pass --token / --token-file / MISTRALKIT_DATAGEN_TOKEN, or --insecure-no-auth if you mean it")

    def host_names(self) -> set[str]:
        names = {"127.0.0.1", "localhost", "[::1]", self.host, *self.allowed_hosts}
        if ":" in self.host and not self.host.startswith("["):
            names.add(f"[{self.host}]")
        return {n.lower() for n in names} | {f"{n.lower()}:{self.port}" for n in names}


class NextRequest(RequestBody):
    agent_id: str = Field(ANONYMOUS, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$",
                          description="Who asks (default: anonymous, whose instruction any agent may answer)")


class SubmitRequest(RequestBody):
    instruction_id: str = Field(min_length=1, max_length=64)
    agent_id: str = AGENT_ID
    case_text: str = Field(description="The written case; its length bounds come from the spec")


class ReleaseRequest(RequestBody):
    instruction_id: str = Field(min_length=1, max_length=64)
    agent_id: str = AGENT_ID


class HostCheck:
    """Refuses a request whose Host header is not this server's (a rebinding page names its own)."""

    def __init__(self, app, names: set[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if host not in self.names:
                response = error_response(403, f"Host header {host!r} is not this server's", "host_not_allowed")
                return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def create_app(state: State, config: DatagenConfig) -> FastAPI:
    app = FastAPI(title="mistralkit datagen", version="1", docs_url=None, redoc_url=None)
    app.state.datagen, app.state.config, app.state.key_guard = state, config, KeyGuard()
    app.state.stopping = threading.Event()  # read by server.watch's cancel_event; nothing sets it here yet
    error_handlers(app)
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout_s=config.body_timeout_s)
    app.add_middleware(HostCheck, names=config.host_names())
    _routes(app, state)
    return app


def _routes(app: FastAPI, state: State) -> None:
    guarded = [Depends(require_key)]

    @app.get("/health")
    def health() -> dict:
        stats = state.stats()
        return {"status": "ok", "goal": stats["goal"], "accepted": stats["accepted"], "done": stats["done"]}

    @app.get("/stats", dependencies=guarded)
    def stats() -> dict:
        return state.stats()

    @app.get("/dashboard", response_class=HTMLResponse)
    async def dashboard(request: Request, token: str | None = Query(None)) -> HTMLResponse:
        if token is None or not _token_ok(app, token):
            await require_key(request)
        from .dashboard import render

        return HTMLResponse(render(state.stats(), refresh_s=5))

    @app.get("/next-instruction", dependencies=guarded)
    def next_get(agent_id: str = Query(ANONYMOUS, min_length=1, max_length=128,
                                       pattern=r"^[A-Za-z0-9._:@-]+$")) -> dict:
        return state.next_instruction(agent_id)

    @app.post("/next-instruction", dependencies=guarded)
    def next_post(body: NextRequest) -> dict:
        return state.next_instruction(body.agent_id)

    @app.post("/submit-case", dependencies=guarded)
    async def submit(body: SubmitRequest, request: Request) -> JSONResponse:
        # The judge's verdict stops when the client leaves (the cheap gates are done by then anyway).
        async with cancel_event(request) as gone:
            result = await run_in_threadpool(state.submit, body.instruction_id, body.agent_id, body.case_text, gone)
        return JSONResponse(result, status_code=200)

    @app.post("/release", dependencies=guarded)
    def release(body: ReleaseRequest) -> dict:
        return state.release(body.instruction_id, body.agent_id)


def _token_ok(app: FastAPI, token: str) -> bool:
    keys = app.state.config.api_keys
    return not keys or any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)
