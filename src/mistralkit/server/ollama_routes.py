"""Ollama's API (``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/tags``, ...) over the same pool,
queue, key guard and metrics as ``/v1``, so that the ``ollama`` client and tools built for Ollama work.

>>> import ollama  # doctest: +SKIP
>>> ollama.Client(host="http://127.0.0.1:8080").chat(model="gemma-3-270m", messages=[...])  # doctest: +SKIP

Streams are newline-delimited JSON (``application/x-ndjson``), one object per text delta, then one with
``done: true`` and the counts and durations (nanoseconds). What is accepted and ignored, and what is
refused, is listed in ``ollama_shapes``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .. import __version__
from ..engines import Usage
from ..errors import InvalidParameter, MistralkitError
from ..http.errors import redact
from ..turn import Turn
from . import ollama_models
from . import ollama_shapes as shapes
from .openai_routes import EMBED_LOCK, Run, queue_job
from .schemas import ChatRequest
from .tool_deltas import tool_deltas
from .watch import cancelled

# Not in /openapi.json: Ollama documents these, and the schema fuzzer bounds only OpenAI's max_tokens.
router = APIRouter(prefix="/api", tags=["ollama"], include_in_schema=False)

Piece = Callable[[str], dict]


class NotOffered(MistralkitError):
    """An Ollama endpoint that manages models, which mistralkit does through its CLI."""

    status = 501


@router.get("/version")
async def version() -> dict:
    """mistralkit's own version (not an Ollama version number)."""
    return {"version": __version__}


@router.get("/tags")
async def tags(request: Request) -> dict:
    """The models ``GET /v1/models`` lists, in Ollama's shape."""
    families = {
        resident.model.name: resident.model.info.architecture
        for resident in list(request.app.state.pool.residents.values())
        if getattr(resident.model, "info", None) is not None
    }
    return {"models": await run_in_threadpool(ollama_models.tag_rows, families)}


@router.get("/ps")
async def ps(request: Request) -> dict:
    """Loaded models; they stay until the memory budget needs room (no ``expires_at``)."""
    loaded = request.app.state.pool.loaded()
    return {"models": [{"name": name, "model": name, "size": resident.planned, "size_vram": 0, "digest": "",
                        "expires_at": None, "details": ollama_models.details(resident.model),
                        "context_length": resident.worker.engine.n_ctx} for name, resident in loaded.items()]}


@router.post("/show")
async def show(body: shapes.ShowRequest, request: Request) -> dict:
    """What the GGUF header says (``model_info``, chat template) and the server's sampling defaults."""
    pool = request.app.state.pool
    key, model, _ = await run_in_threadpool(pool.resolve, body.ref)
    defaults: dict = ollama_models.sampling_defaults()
    resident = pool.residents.get(key)
    if resident is not None:
        defaults["num_ctx"] = resident.worker.engine.n_ctx
    elif model.format == "gguf":
        from ..models.memory import context_size

        defaults["num_ctx"] = context_size(model.name, model.info.context_length, request.app.state.config.settings.ctx)
    defaults["num_predict"] = request.app.state.config.settings.max_tokens
    return await run_in_threadpool(ollama_models.show, model, defaults)


async def _queue(request: Request, body: ChatRequest, num_predict: int | None,
                 raw: str | None = None) -> tuple[Run, float, Turn]:
    """Prepare the turn (``raw``: a text prompted as it is) and queue it on the model's worker, as
    ``/v1/chat/completions`` does; (run, load seconds, turn)."""
    before = time.perf_counter()
    async with request.app.state.pool.use(body.model) as resident:  # held until the job is queued
        load_s = time.perf_counter() - before
        engine = resident.worker.engine
        if num_predict in shapes.FOREVER:
            body.max_tokens = engine.n_ctx  # the engine stops where the context ends
        turn = await run_in_threadpool(shapes.prepare, body, engine, raw)
        job = await queue_job(request, body, resident, turn.prompt, turn.grammar)
    run = Run(request, job, resident.model.name)
    run.prompt = turn.prompt
    return run, load_s, turn


def _final(run: Run, started: float, load_s: float) -> dict:
    usage = run.usage or Usage()
    return {"done": True, "done_reason": run.finish, "total_duration": shapes.ns(time.perf_counter() - started),
            "load_duration": shapes.ns(load_s), "prompt_eval_count": usage.prompt_tokens,
            "prompt_eval_duration": shapes.ns(usage.ttft_s), "eval_count": usage.completion_tokens,
            "eval_duration": shapes.ns(usage.total_s - usage.ttft_s)}


def _line(data: dict) -> str:
    return json.dumps(data) + "\n"


def _context(run: Run) -> dict:
    """Ollama's ``context`` of a generate: the prompt's tokens and the answer's (none for a remote)."""
    prompt = run.prompt
    if not prompt or not all(isinstance(token, int) for token in prompt):
        return {}
    return {"context": [*prompt, *run.token_ids]}


async def _ndjson(run: Run, name: str, piece: Piece, started: float, load_s: float,
                  last: Callable[[Run], dict]) -> AsyncIterator[str]:
    run.streamed = True  # the StreamingResponse cancels this when the client leaves
    try:
        async for chunk in run.chunks():
            if chunk.text:
                yield _line({"model": name, "created_at": shapes.now(), **piece(chunk.text), "done": False})
        yield _line({"model": name, "created_at": shapes.now(), **piece(""), **_final(run, started, load_s),
                     **last(run)})
    except MistralkitError as exc:  # the 200 is out: Ollama's clients read an error line
        yield _line({"error": redact(str(exc))})


async def _reply(run: Run, name: str, piece: Piece, stream: bool, started: float, load_s: float,
                 last: Callable[[Run], dict] = lambda run: {}):
    """The answer, streamed or whole; ``last(run)`` adds fields to the final line (generate's context)."""
    if stream:
        return StreamingResponse(_ndjson(run, name, piece, started, load_s, last), media_type="application/x-ndjson",
                                 headers={"Cache-Control": "no-cache"})
    async for _ in run.chunks():
        pass
    return {"model": name, "created_at": shapes.now(), **piece(run.text), **_final(run, started, load_s), **last(run)}


async def _load_only(request: Request, name: str, piece: Piece, stream: bool):
    """Ollama's way to load a model: a chat without messages, a generate without a prompt."""
    async with request.app.state.pool.use(shapes.model_ref(name)):
        pass
    data = {"model": name, "created_at": shapes.now(), **piece(""), "done": True, "done_reason": "load"}
    if stream:
        return StreamingResponse(iter([_line(data)]), media_type="application/x-ndjson")
    return JSONResponse(data)


def _message(text: str) -> dict:
    return {"message": {"role": "assistant", "content": text}}


def _response(text: str) -> dict:
    return {"response": text}


@router.post("/chat")
async def chat(body: shapes.OllamaChatRequest, request: Request):
    """A chat turn through the model's chat format; streamed (NDJSON) unless ``stream`` is false."""
    started = time.perf_counter()
    body.check()
    if not body.messages:
        return await _load_only(request, body.model, _message, body.stream)
    ours = shapes.to_chat_request(shapes.model_ref(body.model), body.openai_messages(), body.options, body.format,
                                  body.tools)
    run, load_s, turn = await _queue(request, ours, body.options.num_predict)
    if not turn.tools:
        return await _reply(run, body.model, _message, body.stream, started, load_s)
    if body.stream:
        return StreamingResponse(_tool_ndjson(run, turn, body.model, started, load_s),
                                 media_type="application/x-ndjson", headers={"Cache-Control": "no-cache"})
    async for _ in run.chunks():
        pass
    return {"model": body.model, "created_at": shapes.now(), **_answer(run, turn),
            **_final(run, started, load_s)}


def _answer(run: Run, turn: Turn) -> dict:
    """The finished answer of a turn with tools: its calls in Ollama's shape, or its text."""
    calls = turn.calls(run.text, run.token_ids, run.tool_calls)
    ollama_calls = shapes.ollama_calls(calls) if calls else None
    if ollama_calls:
        return {"message": {"role": "assistant", "content": "", "tool_calls": ollama_calls}}
    return _message(run.text)


async def _tool_ndjson(run: Run, turn: Turn, name: str, started: float, load_s: float) -> AsyncIterator[str]:
    """A streamed turn with tools: text as it comes once it cannot be a call (``tool_deltas``), a
    call whole in one message line (Ollama does not stream arguments), then the done line."""
    run.streamed = True  # the StreamingResponse cancels this when the client leaves
    texted = False
    try:
        async for delta in tool_deltas(turn)(run):
            if delta.get("content"):
                texted = True
                yield _line({"model": name, "created_at": shapes.now(), **_message(delta["content"]), "done": False})
        if not texted and run.text:
            yield _line({"model": name, "created_at": shapes.now(), **_answer(run, turn), "done": False})
        yield _line({"model": name, "created_at": shapes.now(), **_message(""), **_final(run, started, load_s)})
    except MistralkitError as exc:
        yield _line({"error": redact(str(exc))})


@router.post("/generate")
async def generate(body: shapes.OllamaGenerateRequest, request: Request):
    """A completion: ``prompt`` as one user turn (after ``system``), or as raw text with ``raw: true``."""
    started = time.perf_counter()
    body.check()
    if not body.prompt:
        return await _load_only(request, body.model, _response, body.stream)
    messages = body.messages()
    ours = shapes.to_chat_request(shapes.model_ref(body.model), messages, body.options, body.format)
    run, load_s, _ = await _queue(request, ours, body.options.num_predict, body.prompt if body.raw else None)
    return await _reply(run, body.model, _response, body.stream, started, load_s, _context)


async def _embed(request: Request, ref: str, texts: list[str], truncate: bool):
    """The embedder ``/v1/embeddings`` uses, under the same lock; (result, load seconds)."""
    pool = request.app.state.pool
    async with EMBED_LOCK:  # one embedding model call at a time: the engines are not thread-safe
        before = time.perf_counter()
        embedder = await run_in_threadpool(pool.embedder, shapes.model_ref(ref))
        load_s = time.perf_counter() - before
        async with cancelled(request) as gone:
            result = await run_in_threadpool(lambda: embedder.embed(texts, truncate=truncate, cancelled=gone))
    request.app.state.metrics.tokens.labels(result.model, "in").inc(result.prompt_tokens)
    return result, load_s


@router.post("/embed")
async def embed(body: shapes.OllamaEmbedRequest, request: Request) -> dict:
    """Normalized vectors, one per input; ``truncate`` (default true) cuts a text to the model's limit."""
    started = time.perf_counter()
    result, load_s = await _embed(request, body.model, body.texts(), body.truncate)
    if body.dimensions is not None and body.dimensions != result.dimensions:
        raise InvalidParameter(f"dimensions={body.dimensions}: {result.model} makes vectors of {result.dimensions}",
                               hint="drop dimensions (mistralkit does not shorten vectors)")
    return {
        "model": body.model,
        "embeddings": result.vectors,
        "total_duration": shapes.ns(time.perf_counter() - started),
        "load_duration": shapes.ns(load_s),
        "prompt_eval_count": result.prompt_tokens,
    }


@router.post("/embeddings")
async def embeddings(body: shapes.OllamaEmbeddingsRequest, request: Request) -> dict:
    """Ollama's older embedding endpoint: one ``prompt``, one ``embedding``."""
    if not body.prompt:
        await run_in_threadpool(request.app.state.pool.embedder, shapes.model_ref(body.model))
        return {"embedding": []}
    result, _ = await _embed(request, body.model, [body.prompt], True)
    return {"embedding": result.vectors[0]}


_CLI = {"pull": "run `mistralkit models pull NAME` on the server", "push": "mistralkit has no registry to push to",
        "create": "run `mistralkit models import FILE` (or tune + export) on the server",
        "copy": "run `mistralkit models import FILE --name NEW` on the server",
        "delete": "run `mistralkit models rm NAME` on the server"}


def _by_cli(action: str, how: str):
    async def refuse() -> None:
        raise NotOffered(f"/api/{action} is not offered over HTTP by mistralkit", hint=how)

    return refuse


for _action, _how in _CLI.items():  # Ollama's model management: mistralkit's CLI does it on the server
    router.add_api_route(f"/{_action}", _by_cli(_action, _how), methods=["POST", "DELETE"])
