"""The FastAPI app: security (API keys, body limit, CORS), errors in OpenAI's shape, metrics, static page.

>>> from mistralkit.server import ServerConfig, create_app
>>> app = create_app(ServerConfig())  # serve with uvicorn, or `mistralkit serve`
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import MistralkitError
from .config import ServerConfig
from .errors import Overloaded, error_response, from_exception
from .metrics import Metrics
from .pool import Pool

log = logging.getLogger(__name__)
STATIC = resources.files(__package__).joinpath("static")


class Unauthorized(MistralkitError):
    status = 401


def require_key(request: Request) -> None:
    """Bearer key check in constant time; no key configured = open (loopback only, see ServerConfig)."""
    keys = request.app.state.config.api_keys
    if not keys:
        return
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    ok = scheme.lower() == "bearer" and any(hmac.compare_digest(token.encode(), key.encode()) for key in keys)
    if not ok:
        raise Unauthorized("missing or wrong API key", hint="send the header Authorization: Bearer YOUR_KEY")


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes (413), by Content-Length or as they stream in.

    A body that goes over while streaming in is cut: the app sees a client that left (an exception
    raised from ``receive`` would reach FastAPI's body parsing wrapped in an ExceptionGroup and turn
    into a 400), and whatever it answers is replaced by the 413.
    """

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(self.limit)(scope, receive, send)
        seen, over, started = 0, False, False

        async def counted():
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                over = True
                return {"type": "http.disconnect"}
            return message

        async def unless_over(message):
            nonlocal started
            if over and not started:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except Exception:
            if not over or started:
                raise
        if over and not started:
            await _too_large(self.limit)(scope, receive, send)


def _too_large(limit: int) -> Response:
    return error_response(413, f"request body over the limit of {limit} bytes", "request_too_large")


def create_app(config: ServerConfig) -> FastAPI:
    pool = Pool(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.preload:
            await pool.get(config.preload)
        yield
        pool.close()

    app = FastAPI(title="mistralkit", version=__version__, lifespan=lifespan,
                  description="OpenAI-compatible API over local models. Nothing leaves the machine.")
    app.state.config, app.state.pool, app.state.metrics = config, pool, Metrics()
    _errors(app)
    _middleware(app, config)
    _routes(app)
    return app


def _errors(app: FastAPI) -> None:
    @app.exception_handler(Overloaded)
    async def overloaded(_: Request, exc: Overloaded) -> JSONResponse:
        return error_response(429, exc.message, "queue_full", headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, f"{exc.message} ({exc.hint})", "invalid_api_key",
                              headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(MistralkitError)
    async def ours(_: Request, exc: MistralkitError) -> JSONResponse:
        return from_exception(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return error_response(422, f"{where or 'body'}: {first.get('msg', 'invalid request')}", "invalid_request",
                              param=where or None)

    @app.exception_handler(StarletteHTTPException)
    async def http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
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
    app.add_middleware(Measure, metrics=app.state.metrics)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_credentials=False,
                           allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)


def _routes(app: FastAPI) -> None:
    from . import openai_routes, sessions_routes

    guarded = [Depends(require_key)]
    app.include_router(openai_routes.router, dependencies=guarded)
    app.include_router(sessions_routes.router, dependencies=guarded)

    @app.get("/health", tags=["operations"])
    async def health(request: Request) -> dict:
        """Liveness: answers while the server runs (no key needed)."""
        return {"status": "ok", "models_loaded": list(request.app.state.pool.slots)}

    @app.get("/metrics", dependencies=guarded, tags=["operations"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text: requests, tokens, queue depth, TTFT and latency histograms, errors."""
        body = request.app.state.metrics.render(request.app.state.pool.queue_depths())
        return Response(body, media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC.joinpath("index.html")))

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
        if name not in files:
            raise StarletteHTTPException(404, f"no static file {name!r}")
        return FileResponse(str(files[name]))
