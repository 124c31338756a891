"""A model of the server's pool as an ``Engine``: every ``generate`` is a job on the model's worker
queue, taken in turn with the HTTP requests, so that library code that takes an ``Engine`` (the
corrector's rewrites) runs inside the server unchanged. Used from a thread, never on the event loop.

    engine = QueuedEngine(resident, asyncio.get_running_loop())   # on the loop
    Corrector(settings, engine=engine).correct(text)          # in a worker thread
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence

from ..engines import Chunk, GenerationParams
from ..engines.base import EngineBase, Request, TokenLogprob
from ..formats.base import Message
from .pool import Resident
from .worker import Job, stream


class QueuedEngine(EngineBase):
    def __init__(self, resident: Resident, loop: asyncio.AbstractEventLoop) -> None:
        engine = resident.worker.engine
        self._slot, self._loop, self._engine = resident, loop, engine
        self.name, self.kind, self.n_ctx, self.parallel = engine.name, engine.kind, engine.n_ctx, engine.parallel
        self.capabilities, self.format = engine.capabilities, engine.format
        self.bos_id, self.eos_id, self.add_bos = engine.bos_id, engine.eos_id, engine.add_bos
        self.n_vocab = engine.n_vocab

    def generate(self, request: Request, params: GenerationParams,
                 cancel: threading.Event | None = None) -> Iterator[Chunk]:
        """The job's chunks as they come; leaving early (or ``cancel``) stops it on the worker."""
        engine = self._engine
        prompt = engine.prompt_tokens(request) if engine.capabilities.tokens else request
        job = Job(prompt, params, self._loop)
        self._slot.worker.submit(job)  # thread-safe; a full queue raises Overloaded here
        chunks = stream(job, None)
        try:
            while cancel is None or not cancel.is_set():
                try:
                    chunk = asyncio.run_coroutine_threadsafe(_next(chunks), self._loop).result()
                except StopAsyncIteration:
                    return
                yield chunk
        finally:  # stream's own exit: cancel the job, give a waiting job's place back
            asyncio.run_coroutine_threadsafe(chunks.aclose(), self._loop).result()

    def logprobs(self, tokens: Sequence[int], start: int) -> list[float]:
        """Scoring (the corrector's rank mode) goes straight into the model's batch: a short prefill,
        decoded beside the running generations, not a job of the queue."""
        return self._engine.logprobs(tokens, start)

    def score(self, tokens: Sequence[int], start: int, *, top: int = 0,
              cancel: threading.Event | None = None) -> list[TokenLogprob]:
        """``logprobs`` with token texts and alternatives: the same way into the batch."""
        return self._engine.score(tokens, start, top=top, cancel=cancel)

    def count_tokens(self, messages: Sequence[Message]) -> int:
        return self._engine.count_tokens(messages)

    def prompt_tokens(self, request: Request) -> list[int]:
        return self._engine.prompt_tokens(request)

    def encode_text(self, text: str) -> list[int]:
        return self._engine.encode_text(text)

    def tokenize(self, text: str, *, special: bool) -> list[int]:
        return self._engine.tokenize(text, special=special)

    def token_text(self, token_id: int) -> str:
        return self._engine.token_text(token_id)

    def detokenize(self, tokens: Sequence[int], *, special: bool = False) -> str:
        return self._engine.detokenize(tokens, special=special)

    def close(self) -> None:
        """The model belongs to the pool: nothing to close here."""


async def _next(chunks):
    return await anext(chunks)
