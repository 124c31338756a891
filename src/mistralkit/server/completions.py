"""``/v1/completions``: OpenAI's legacy completions, as lm-evaluation-harness's ``local-completions`` uses them.

A prompt is a text (encoded with the model's BOS) or token ids (taken as they are, each checked against
the vocabulary); a request may hold several, each answered by one choice (``index`` = prompt x n +
choice, n being 1 here). With ``echo`` the prompt comes back before the answer, and with ``logprobs`` its
tokens' log-probabilities, the first one null as OpenAI's: scored in the model's batch by ``Engine.score``,
the sequence ``mistralkit eval``'s multiple choice scores with. The token that ended an answer is listed
too (lm-eval reads the prompt's entries as all but the last one). The prompts of one request take at most
``engine.parallel`` slots at a time and stop when the client leaves.

    {"prompt": [[2, 818, 5279], [2, 818, 7001]], "echo": true, "logprobs": 1, "max_tokens": 1}
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ..engines import Usage, require
from ..engines.base import TokenLogprob, check_fits, check_ids
from ..errors import BadParameter, ContextOverflow, TooLarge
from ..http.sse import EventStream
from ..turn import FIT_HINT
from .openai_routes import Run, event_stream, text_chunk, usage_shape, collect, queue_job, text_logprobs
from .pool import Resident
from .prompt_schemas import CompletionRequest
from .watch import cancel_event

router = APIRouter(prefix="/v1", tags=["openai"])

MAX_PROMPT_TOKENS = 1 << 18  # tokens of all the prompts of one request (lm-eval: batch size x max length)


def encode(engine, prompts: list[tuple[str, str | list[int]]], room: int) -> list[list[int]]:
    """The tokens of each prompt, refused (naming its place) when empty, outside the vocabulary, longer
    than the context window less ``room``, or when all of them pass ``MAX_PROMPT_TOKENS``."""
    out, total = [], 0
    for place, prompt in prompts:
        tokens = engine.encode_text(prompt) if isinstance(prompt, str) else check_ids(prompt, engine.n_vocab, place)
        if not tokens:
            raise BadParameter(f"{place}: empty, and this model adds no BOS to start from", place,
                               hint="send some text")
        try:
            check_fits(tokens, engine.n_ctx + 1 - room, hint=FIT_HINT)
        except ContextOverflow as exc:
            raise ContextOverflow(f"{place}: {exc.message}", exc.hint) from None
        total += len(tokens)
        if total > MAX_PROMPT_TOKENS:
            raise TooLarge(f"prompt: more than the {MAX_PROMPT_TOKENS:,} tokens one request may send",
                           hint="send the prompts in several requests", param="prompt")
        out.append(tokens)
    return out


@router.post("/completions")
async def completions(body: CompletionRequest, request: Request):
    """Raw-text completion (no chat format), streamed or not; several prompts, token-id prompts, and
    ``echo`` with ``logprobs`` for the prompt's own log-probabilities (lm-eval's multiple choice)."""
    async with request.app.state.pool.use(body.model) as resident:
        engine = resident.worker.engine
        require(engine, "tokens", "/v1/completions (a raw-text prompt)")
        if body.logprobs is not None:
            require(engine, "logprobs", "logprobs")
        room = 0 if body.max_tokens == 0 else 1  # scoring needs no room for a generated token
        prompts = await run_in_threadpool(encode, engine, body.prompts(), room)
        if body.stream:
            job = await queue_job(request, body, resident, prompts[0], None)
        else:
            return await _answer(body, request, resident, prompts)
    run = Run(request, job, resident.model.name)
    extra = {"usage": None} if body.include_usage else {}
    return EventStream(event_stream(run, text_chunk, body.include_usage, extra, lambda text, partial: None),
                       request.app.state.config.keepalive_s)


async def _answer(body: CompletionRequest, request: Request, resident: Resident, prompts: list[list[int]]) -> dict:
    """Every prompt's choice, ``engine.parallel`` prompts at a time; the rest stops when one fails."""
    slots = asyncio.Semaphore(max(1, resident.worker.engine.parallel))
    texts = [prompt if isinstance(prompt, str) else None for _, prompt in body.prompts()]
    created = int(time.time())
    async with cancel_event(request) as gone:

        async def choice(tokens: list[int], text: str | None) -> tuple[dict, Usage]:
            try:
                return await _choice(body, request, resident, tokens, text, slots, gone)
            except BaseException:
                gone.set()  # the other prompts stop too, a scoring in its thread at its next step
                raise

        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(choice(tokens, text)) for tokens, text in zip(prompts, texts, strict=True)]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
    results = [task.result() for task in tasks]
    usage = Usage(**{name: sum(getattr(u, name) for _, u in results) for name in (
        "prompt_tokens", "completion_tokens", "cached_tokens", "drafted_tokens", "accepted_tokens")})
    return {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": created,
            "model": resident.model.name,
            "choices": [{"index": i * body.n, **choice} for i, (choice, _) in enumerate(results)],  # choice 0 of n
            "usage": usage_shape(usage)}


async def _choice(body: CompletionRequest, request: Request, resident: Resident, tokens: list[int],
                  text: str | None, slots: asyncio.Semaphore, gone: threading.Event) -> tuple[dict, Usage]:
    """One prompt's choice (without its index) and its usage."""
    engine = resident.worker.engine
    # A model trained with a BOS reads token ids sent without one (lm-eval's remote tokenizer never adds it)
    # after its BOS, as it reads every text prompt: without it Gemma's scores are noise (0.55 against 0.85 on
    # bench/lm_eval_mc.py's items). The BOS is not listed: the entries are the sent tokens', the first scored.
    implied = engine.add_bos and engine.bos_id is not None and tokens[0] != engine.bos_id
    prompt = [engine.bos_id, *tokens] if implied else tokens
    async with slots:
        scored: list[TokenLogprob] | None = None
        if body.echo and body.logprobs is not None and len(prompt) > 1:
            scored = await run_in_threadpool(lambda: engine.score(prompt, 1, top=body.logprobs, cancel=gone))
        run = None
        if body.max_tokens != 0:
            run = Run(request, await queue_job(request, body, resident, prompt, None), resident.model.name)
            await collect(run)
        else:
            request.app.state.metrics.tokens.labels(resident.model.name, "in").inc(len(tokens))
    usage = run.usage if run is not None and run.usage is not None else Usage(prompt_tokens=len(tokens))
    answer = run.text if run is not None else ""
    logprobs = None
    if body.logprobs is not None:
        generated = run.logprobs if run is not None else []
        if body.echo:
            first = None if implied else await run_in_threadpool(engine.detokenize, tokens[:1])
            logprobs = text_logprobs([*(scored or ()), *generated], first=first)
        else:
            logprobs = text_logprobs(generated)
    if body.echo:
        answer = (text if text is not None else await run_in_threadpool(engine.detokenize, tokens)) + answer
    finish = run.finish if run is not None else "length"
    return {"text": answer, "finish_reason": finish, "logprobs": logprobs}, usage
