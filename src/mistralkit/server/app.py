"""The FastAPI app: security (API keys, body limit, CORS), errors in OpenAI's shape, metrics, static page.

>>> from mistralkit.server import ServerConfig, create_app
>>> app = create_app(ServerConfig())  # serve with uvicorn, or `mistralkit serve`
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..http.auth import KeyGuard, require_key
from ..http.errors import hide_folders
from ..http.limits import BodyLimit
from .config import ServerConfig
from ..paths import data_dir
from .errors import server_error_handlers
from .metrics import Metrics
from .ollama_shapes import OllamaWire
from .pool import Pool

log = logging.getLogger(__name__)
STATIC = resources.files(__package__).joinpath("static")


def create_app(config: ServerConfig) -> FastAPI:
    pool = Pool(config)
    allowed = (*config.model_dirs, *config.docs_dirs)
    hide_folders({**{Path.home(): "~/", data_dir(): ""}, **{folder: "" for folder in allowed}})

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
    server_error_handlers(app)
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
    from . import (
        completions,
        correct_routes,
        files_routes,
        ollama_routes,
        openai_routes,
        responses,
        sessions_routes,
        tokenizer_routes,
        vector_stores,
    )

    guarded = [Depends(require_key)]
    app.include_router(openai_routes.router, dependencies=guarded)
    app.include_router(completions.router, dependencies=guarded)
    app.include_router(tokenizer_routes.router, dependencies=guarded)
    app.include_router(responses.router, dependencies=guarded)
    app.include_router(correct_routes.router, dependencies=guarded)
    app.include_router(sessions_routes.router, dependencies=guarded)
    app.include_router(files_routes.router, dependencies=guarded)
    app.include_router(vector_stores.router, dependencies=guarded)
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
