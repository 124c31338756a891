"""``/v1/models``, ``/v1/chat/completions``, ``/v1/embeddings`` in OpenAI's wire format, and what
``/v1/completions`` (completions.py) and ``/v1/responses`` share with them: ``Run``, the SSE stream, logprobs."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..engines import Chunk, Usage, require
from ..engines.base import TokenLogprob
from ..http.sse import EventStream
from ..turn import NativeTools, Turn
from .tool_deltas import tool_deltas
from ..errors import InvalidParameter, MistralkitError
from ..http.errors import redact
from . import history
from .pool import Resident
from .worker import Job, stream
from .prompt_schemas import EmbeddingRequest
from .schemas import ChatRequest, Sampling
from .watch import cancelled

router = APIRouter(prefix="/v1", tags=["openai"])
log = logging.getLogger(__name__)


def _model_rows(operator: str | None) -> list[dict]:
    """What this server can run: the file of ``serve -m PATH`` (by its name), models on this machine
    (downloaded, imported, embedded), then remotes."""
    from ..models.remotes import listing as remote_listing
    from ..models.store import listing
    from .boundary import looks_like_path

    here, _ = listing()
    rows = [_model_row(row.name, "mistralkit", row.kind) for row in here]
    if operator and looks_like_path(operator) and Path(operator).stem not in {row["id"] for row in rows}:
        rows.insert(0, _model_row(Path(operator).stem, "mistralkit", "llm"))
    names = {row["id"] for row in rows}
    for listed in remote_listing():
        name = listed.remote.name
        if name not in names:
            rows.append(_model_row(name, "remote", "llm"))
    return rows


def _model_row(name: str, owner: str, kind: str) -> dict:
    """OpenAI's model object, with what Mistral's SDK requires of one (``type``, ``capabilities``)."""
    chat = kind in ("llm", "adapter")
    return {"id": name, "object": "model", "created": 0, "owned_by": owner, "kind": kind, "type": "base",
            "capabilities": {"completion_chat": chat, "function_calling": chat, "fine_tuning": kind == "llm",
                             "completion_fim": False, "vision": False}}


@router.get("/models")
async def models(request: Request) -> dict:
    """Models this server can load: what is on this machine (downloaded, imported, embedded), and remotes."""
    return {"object": "list", "data": await run_in_threadpool(_model_rows, request.app.state.config.preload)}


@router.get("/models/{model_id:path}")
async def model(model_id: str, request: Request) -> dict:
    """One model of ``/v1/models``, by its id or the name chat takes (``gemma-3-270m`` for
    ``gemma-3-270m:q4_k_m``); 404 ``model_not_found`` for another name."""
    from ..errors import ModelNotFound

    rows = await run_in_threadpool(_model_rows, request.app.state.config.preload)
    short = model_id.removesuffix(":latest")
    for row in [r for r in rows if r["id"] == model_id] or [r for r in rows if r["id"].split(":", 1)[0] == short]:
        return row
    raise ModelNotFound(f"the model {model_id!r} does not exist here", hint="GET /v1/models lists them")


def usage_shape(usage: Usage | None) -> dict:
    usage = usage or Usage()
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            # OpenAI's names for predicted outputs; here the speculative drafts (--speculative ngram)
            "completion_tokens_details": {"accepted_prediction_tokens": usage.accepted_tokens,
                                          "rejected_prediction_tokens": usage.drafted_tokens - usage.accepted_tokens}}


async def queue_job(request: Request, body: Sampling, resident: Resident, prompt: list, grammar: str | None,
                 native: NativeTools | None = None) -> Job:
    """Queue the generation of ``prompt`` (token ids, or messages for an engine without tokens);
    ``native``: the tools an engine that calls them itself is given. The prompt was checked to fit
    (``turn.prepare``, or the caller's ``check_fits``)."""
    params = body.params(request.app.state.config.settings.max_tokens, grammar)
    if native is not None:
        params = replace(params, tools=native.tools, tool_choice=native.choice)
    job = Job(prompt, params, asyncio.get_running_loop())
    resident.worker.submit(job)
    return job


class Run:
    """Collects one generation's text, usage and timings while it streams."""

    def __init__(self, request: Request, job: Job, model: str) -> None:
        self.request, self.job, self.model = request, job, model
        self.text, self.finish, self.usage = "", "stop", None
        self.prompt: list | None = None  # what the engine was given: token ids, or messages for a remote
        self.token_ids: list[int] = []
        self.logprobs: list[TokenLogprob] = []  # when asked
        self.tool_calls: list[dict] = []  # calls an engine with native tools made
        self.offset = 0  # characters of token text streamed with log-probabilities (text_offset)
        self.streamed = False  # sent as an EventStream, whose own disconnect listener cancels it
        self.id = f"{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The chunks that carry text (or log-probabilities), as they come."""
        metrics = self.request.app.state.metrics
        # A streamed answer is cancelled by its response when the client leaves; polling for that
        # here too would cost an await per stream four times a second, for nothing.
        async for chunk in stream(self.job, None if self.streamed else self.request.is_disconnected):
            if chunk.text and not self.text:
                metrics.ttft.labels(self.model).observe(time.perf_counter() - self.job.queued_at)
            self.text += chunk.text
            self.token_ids.extend(chunk.token_ids)
            self.logprobs.extend(chunk.logprobs)
            self.tool_calls.extend(chunk.tool_calls)
            if chunk.finish_reason:
                self.finish = "stop" if chunk.finish_reason == "cancelled" else chunk.finish_reason
                self.usage = chunk.usage
            if chunk.text or chunk.logprobs:
                yield chunk
        if self.usage:
            metrics.tokens.labels(self.model, "in").inc(self.usage.prompt_tokens)
            metrics.tokens.labels(self.model, "out").inc(self.usage.completion_tokens)


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def _text_deltas(run: Run) -> AsyncIterator[dict]:
    yield {"role": "assistant", "content": ""}
    async for chunk in run.chunks():
        yield {"content": chunk.text, LOGPROBS: chunk.logprobs} if chunk.logprobs else {"content": chunk.text}


LOGPROBS = "_logprobs"  # a delta's log-probabilities, which the chunk shapes move into the choice


def _token_entry(token: bytes, logprob: float) -> dict:
    return {"token": token.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(token)}


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict:
    """OpenAI's chat ``logprobs``: each token, its log-probability, its bytes and the top alternatives."""
    return {"content": [{**_token_entry(e.token, e.logprob), "top_logprobs": [_token_entry(t, v) for t, v in e.top]}
                        for e in entries], "refusal": None}


def text_logprobs(entries: Sequence[TokenLogprob], offset: int = 0, first: str | None = None) -> dict:
    """The legacy completions ``logprobs``: parallel lists, alternatives as {text: log-probability};
    ``first``: the text of a first token that has no log-probability (an echoed prompt's), listed with nulls."""
    tokens = [e.token.decode("utf-8", errors="replace") for e in entries]
    logprobs: list[float | None] = [e.logprob for e in entries]
    top: list[dict | None] = [{t.decode("utf-8", errors="replace"): v for t, v in e.top} for e in entries]
    if first is not None:
        tokens, logprobs, top = [first, *tokens], [None, *logprobs], [None, *top]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": top, "text_offset": offsets}


async def event_stream(run: Run, shape, include_usage: bool, extra: dict, on_end,
                        deltas=_text_deltas, finish_usage: bool = False) -> AsyncIterator[str]:
    """SSE (sent as an ``EventStream``): one event per delta (text by default), then the finish event
    (with the usage in Mistral's dialect: ``finish_usage``), usage (if asked) and ``[DONE]``."""
    complete = False
    run.streamed = True
    try:
        async for delta in deltas(run):
            yield _sse(shape(run, delta, None, extra))
        finish = shape(run, {}, run.finish, extra)
        yield _sse({**finish, "usage": usage_shape(run.usage)} if finish_usage else finish)
        if include_usage:
            yield _sse({**shape(run, None, None, extra), "choices": [], "usage": usage_shape(run.usage)})
        complete = True
        yield _sse("[DONE]")
    except MistralkitError as exc:
        yield _sse({"error": {"message": redact(exc.message), "type": "server_error", "code": None}})
    finally:
        with anyio.CancelScope(shield=True):  # a client that left cancels this scope: still save
            try:
                await run_in_threadpool(on_end, run.text, not complete or run.usage is None)
            except MistralkitError as exc:  # the answer is out already; a busy history journals it instead
                log.error("the streamed turn was not saved: %s", exc)


def _chat_chunk(run: Run, delta: dict | None, finish: str | None, extra: dict) -> dict:
    entries = (delta or {}).get(LOGPROBS)
    delta = {k: v for k, v in delta.items() if k != LOGPROBS} if delta else delta
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish,
              "logprobs": chat_logprobs(entries) if entries else None}
    return {"id": f"chatcmpl-{run.id}", "object": "chat.completion.chunk", "created": run.created,
            "model": run.model, "choices": [choice] if delta is not None else [], **extra}


def text_chunk(run: Run, delta: dict | None, finish: str | None, extra: dict) -> dict:
    entries = (delta or {}).get(LOGPROBS)
    logprobs = None
    if entries:
        logprobs = text_logprobs(entries, run.offset)
        run.offset += sum(len(token) for token in logprobs["tokens"])
    choice = {"index": 0, "text": (delta or {}).get("content", ""), "finish_reason": finish, "logprobs": logprobs}
    return {"id": f"cmpl-{run.id}", "object": "text_completion", "created": run.created, "model": run.model,
            "choices": [choice] if delta is not None else [], **extra}


async def collect(run: Run) -> None:
    async for _ in run.chunks():
        pass


@dataclass
class ChatRun:
    """A chat generation under way: its ``Run``, its turn (read for tool calls when tools are involved),
    what the response carries besides (``session_id``) and what saves it when it ends."""

    run: Run
    turn: Turn
    extra: dict
    on_end: Callable[[str, bool], None]

    def calls(self) -> list[dict] | None:
        """The tool calls of the finished answer (None: a text answer); finish becomes "tool_calls"."""
        calls = self.turn.calls(self.run.text, self.run.token_ids, self.run.tool_calls) if self.turn.tools else None
        if calls:
            self.run.finish = "tool_calls" if self.run.finish == "stop" else self.run.finish
        return calls

    def deltas(self):
        """The chat deltas of this answer: text, or tool calls in OpenAI's streamed shapes."""
        return tool_deltas(self.turn) if self.turn.tools else _text_deltas


async def start_chat(body: ChatRequest, request: Request) -> ChatRun:
    """Prompt, grammar and session of a chat request, checked (errors are 4xx before anything
    streams), and its generation queued. ``/v1/chat/completions`` and ``/v1/responses`` share it."""
    pool = request.app.state.pool
    async with pool.use(body.model) as resident:  # held until its job is queued: not unloaded meanwhile
        engine = resident.worker.engine
        turn = await run_in_threadpool(body.prepare, engine)
        if body.logprobs:
            require(engine, "logprobs", "logprobs")
        session = await run_in_threadpool(history.open_session, body.session_id, resident.model.name, turn.messages)
        if body.max_completion_tokens and not body.max_tokens:
            body.max_tokens = body.max_completion_tokens
        job = await queue_job(request, body, resident, turn.prompt, turn.grammar, turn.native)
    run = Run(request, job, body.model if "+" in body.model else resident.model.name)

    def on_end(text: str, partial: bool) -> None:
        history.save_turn(session, turn.messages, text, run.usage, partial)

    return ChatRun(run, turn, {"session_id": session} if session else {}, on_end)


@router.post("/chat/completions")
async def chat_completions(body: ChatRequest, request: Request):
    """Chat completion, streamed (SSE) or not; ``response_format`` and forced tool calls are enforced
    with a llama.cpp grammar (see ``turn.py``)."""
    chat = await start_chat(body, request)
    run, extra = chat.run, chat.extra
    if body.stream:
        usage_extra = {**extra, "usage": None} if body.include_usage else extra
        deltas, mistral = chat.deltas(), _mistral_dialect(request)
        return EventStream(event_stream(run, _chat_chunk, body.include_usage, usage_extra, chat.on_end,
                                        _named_fragments(deltas) if mistral else deltas, finish_usage=mistral),
                           request.app.state.config.keepalive_s)
    try:
        await collect(run)
    finally:
        await run_in_threadpool(chat.on_end, run.text, run.usage is None)
    calls = chat.calls()
    message = ({"role": "assistant", "content": None, "tool_calls": calls} if calls
               else {"role": "assistant", "content": run.text})
    return {"id": f"chatcmpl-{run.id}", "object": "chat.completion", "created": run.created, "model": run.model,
            "choices": [{"index": 0, "message": message, "finish_reason": run.finish,
                         "logprobs": chat_logprobs(run.logprobs) if body.logprobs else None}],
            "usage": usage_shape(run.usage), **extra}


def _mistral_dialect(request: Request) -> bool:
    """A client of Mistral's API (its SDKs say so in User-Agent), whose streams differ from OpenAI's:
    the last chunk carries the usage, and every tool-call fragment names its call (the SDK requires
    ``function.name``; OpenAI's SDK would join repeated names into one)."""
    return "mistral-client" in request.headers.get("user-agent", "").lower()


def _named_fragments(deltas):
    """``deltas`` with each tool-call fragment carrying its call's id and function name (Mistral's dialect)."""
    async def named(run) -> AsyncIterator[dict]:
        heads: dict[int, tuple[str, str]] = {}
        async for delta in deltas(run):
            for call in delta.get("tool_calls") or ():
                function = call.setdefault("function", {})
                if function.get("name"):
                    heads[call["index"]] = call.get("id", ""), function["name"]
                else:
                    call_id, function["name"] = heads.get(call["index"], ("", ""))
                    call.setdefault("id", call_id)
            yield delta
    return named


EMBED_LOCK = asyncio.Lock()


@router.post("/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request) -> dict:
    """Embedding vectors (normalized) from a sentence-transformers or GGUF embedding model."""
    pool = request.app.state.pool
    async with EMBED_LOCK:  # one embedding model call at a time: the engines are not thread-safe
        embedder = await run_in_threadpool(pool.embedder, body.model)
        texts = await run_in_threadpool(body.texts)
        if body.dimensions is not None and body.dimensions != embedder.dimensions:
            raise InvalidParameter(
                f"dimensions={body.dimensions}: {body.model} gives {embedder.dimensions}-dimensional vectors and "
                "was not trained for shorter ones", hint=f"leave dimensions out, or pass {embedder.dimensions}")
        async with cancelled(request) as gone:  # the lock is free again within a batch of the client leaving
            result = await run_in_threadpool(lambda: embedder.embed(texts, cancelled=gone))
    request.app.state.metrics.tokens.labels(result.model, "in").inc(result.prompt_tokens)
    encode = _base64_floats if body.encoding_format == "base64" else list
    return {"id": f"embd-{uuid.uuid4().hex[:24]}", "object": "list", "model": result.model,  # id: Mistral's SDK
            "data": [{"object": "embedding", "index": i, "embedding": encode(vector)}
                     for i, vector in enumerate(result.vectors)],
            "usage": {"prompt_tokens": result.prompt_tokens, "total_tokens": result.prompt_tokens}}


def _base64_floats(vector: list[float]) -> str:
    """OpenAI's ``encoding_format="base64"``: little-endian float32 bytes, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
