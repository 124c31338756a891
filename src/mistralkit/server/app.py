"""The FastAPI app: security (API keys, body limit, CORS), errors in OpenAI's shape, metrics, static page.

>>> from mistralkit.server import ServerConfig, create_app
>>> app = create_app(ServerConfig())  # serve with uvicorn, or `mistralkit serve`
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import HistoryBusy, MistralkitError
from .auth import KeyGuard, LockedOut, Unauthorized, require_key
from .config import ServerConfig
from ..paths import data_dir
from .errors import (Overloaded, error_response, from_exception, hide_folders, history_busy,
                     validation_message)
from .metrics import Metrics
from .ollama_shapes import OllamaWire
from .pool import Pool

log = logging.getLogger(__name__)
STATIC = resources.files(__package__).joinpath("static")
UNPARSABLE_BODY = "There was an error parsing the body"


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413), by Content-Length or as they stream in, and
    bodies that stall: each part must come within ``timeout_s`` (408).

    Such a body is cut: the app sees a client that left (an exception raised from ``receive`` would
    reach FastAPI's body parsing wrapped in an ExceptionGroup and turn into a 400), and whatever it
    answers is replaced by the 413 or 408.
    """

    def __init__(self, app, limit: int, timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        seen, refusal, started, complete = 0, None, False, False

        async def counted():
            nonlocal seen, refusal, complete
            if refusal is not None:
                return {"type": "http.disconnect"}
            if complete:  # after the body: waiting for a disconnect has no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout_s)
            except TimeoutError:
                refusal = _stalled(self.timeout_s)
                return {"type": "http.disconnect"}
            seen += len(message.get("body", b""))
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            if seen > self.limit:
                refusal = _too_large(self.limit)
                return {"type": "http.disconnect"}
            return message

        async def unless_refused(message):
            nonlocal started
            if refusal is not None and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, unless_refused)
        except Exception:
            if refusal is None or started:
                raise
        if refusal is not None and not started:
            await refusal(scope, receive, send)


def _too_large(limit: int) -> Response:
    return error_response(413, f"request body over the limit of {limit} bytes", "request_too_large")


def _stalled(timeout_s: float) -> Response:
    return error_response(408, f"the request body did not arrive within {timeout_s:g} s", "request_timeout",
                          headers={"Connection": "close"})


def create_app(config: ServerConfig) -> FastAPI:
    pool = Pool(config)
    hide_folders({**{Path.home(): "~/", data_dir(): ""}, **{folder: "" for folder in config.model_dirs}})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.preload:
            async with pool.use(config.preload):
                pass
        yield
        pool.close()
        for checker in app.state.checkers.values():
            checker.close()

    app = FastAPI(title="mistralkit", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API over local models. Nothing leaves the machine.")
    app.state.config, app.state.pool, app.state.metrics = config, pool, Metrics()
    app.state.key_guard = KeyGuard()
    app.state.checkers, app.state.checkers_lock = {}, threading.Lock()  # /v1/correct's, opened on first use
    app.state.stopping = threading.Event()  # set on SIGTERM/SIGINT: work in threads stops (server/watch.py)
    app.state.default_model = _default_model(config)
    error_handlers(app)
    _middleware(app, config)
    _routes(app)
    return app


def _default_model(config: ServerConfig) -> str:
    """The model the web page offers first: ``-m``, else the embedded chat model (its full name, as
    ``/v1/models`` lists it)."""
    from ..models import catalog
    from ..models.store import default_ref

    if config.preload:
        from .boundary import looks_like_path

        return Path(config.preload).stem if looks_like_path(config.preload) else config.preload  # never a folder
    found = catalog.lookup(default_ref())
    return found[0].ref(found[1]) if found else default_ref()


def error_handlers(app: FastAPI) -> None:
    """Every error as OpenAI-shaped JSON (shared by the datagen server)."""

    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return error_response(429, exc.message, "queue_full", headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(HistoryBusy)
    async def history_is_busy(_: Request, exc: HistoryBusy) -> JSONResponse:
        return history_busy(exc)

    @app.exception_handler(LockedOut)
    async def locked_out(_: Request, exc: LockedOut) -> JSONResponse:
        return error_response(429, f"{exc.message} ({exc.hint})", "too_many_wrong_keys",
                              headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, f"{exc.message} ({exc.hint})", "invalid_api_key",
                              headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(MistralkitError)
    async def ours(_: Request, exc: MistralkitError) -> JSONResponse:
        return from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, code, param = validation_message(exc.errors())
        return error_response(status, message, code, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == UNPARSABLE_BODY:  # FastAPI's words for a body not in UTF-8
            return error_response(400, "the request body is not valid JSON text in UTF-8", "invalid_json")
        return error_response(exc.status_code, str(exc.detail), None, headers=getattr(exc, "headers", None))


class Measure:
    """Requests, latency (to the response's last byte) and errors per route.

    Plain ASGI on purpose: behind a ``BaseHTTPMiddleware`` (``@app.middleware("http")``),
    ``request.is_disconnected()`` never turns true, so a gone client's generation would run on.
    """

    def __init__(self, app, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()


def _middleware(app: FastAPI, config: ServerConfig) -> None:
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=config.max_body_bytes, timeout_s=config.body_timeout_s)
    app.add_middleware(OllamaWire)  # /api/* errors (the body limit's too) in Ollama's shape
    # Outermost: counts the status the client got (the body limit's 413, Ollama's 400 for a 422).
    app.add_middleware(Measure, metrics=app.state.metrics)


def _routes(app: FastAPI) -> None:
    from . import correct_routes, ollama_routes, openai_routes, responses, sessions_routes

    guarded = [Depends(require_key)]
    app.include_router(openai_routes.router, dependencies=guarded)
    app.include_router(responses.router, dependencies=guarded)
    app.include_router(correct_routes.router, dependencies=guarded)
    app.include_router(sessions_routes.router, dependencies=guarded)
    app.include_router(ollama_routes.router, dependencies=guarded)

    @app.get("/health", tags=["operations"])
    async def health(request: Request) -> dict:
        """Liveness: answers while the server runs (no key needed); the web page picks ``default_model``."""
        return {"status": "ok", "models_loaded": list(request.app.state.pool.loaded()),
                "default_model": request.app.state.default_model}

    @app.get("/metrics", dependencies=guarded, tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text: requests, tokens, queue depth, TTFT and latency histograms, errors, and per
        model its slots (busy, waiting), prefill and decode tokens/s and time."""
        pool = request.app.state.pool
        body = request.app.state.metrics.render(pool.queue_depths(), pool.engine_stats())
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC.joinpath("index.html")))

    @app.get("/correct", include_in_schema=False)
    async def correct_page() -> FileResponse:
        return FileResponse(str(STATIC.joinpath("correct.html")))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return FileResponse(str(files[name]))
