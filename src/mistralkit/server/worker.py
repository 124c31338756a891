"""One loaded model's generation threads and the jobs they run.

A ``Worker`` has one thread per engine slot (``engine.parallel``: a llama.cpp engine decodes that
many sequences together, see engines/batch.py), fed by a bounded queue: a request that finds
``queue_size`` requests already running or waiting gets 429 (``Overloaded``). Chunks go back to
the request through its ``Job``; setting a job's ``cancel`` event (client gone, shutdown) stops its
generation at the next token. ``stream`` is how a request reads its job, and cancels it when the
client leaves.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from ..engines import Chunk, GenerationParams
from ..engines.base import Request
from ..errors import MistralkitError
from .errors import Overloaded

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One generation: the worker thread ``send``s its chunks, the request ``take``s them.

    Sent items wait in a list; the event loop is woken only when the request is waiting for one
    (one wake per wait, not one per token), and a request that fell behind takes all that came.
    """

    request: Request
    params: GenerationParams
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event = field(default_factory=threading.Event)
    queued_at: float = field(default_factory=time.perf_counter)
    started: bool = False  # the worker picked it up
    released: bool = False  # its place in the queue is given back
    worker: Worker | None = None
    _sent: list = field(default_factory=list)  # Chunk, MistralkitError, or None (the end), not yet taken
    _waiter: asyncio.Future | None = None  # the request's wait, while it waits
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, item) -> None:
        """From the worker thread: a chunk, an error, or None (the end)."""
        with self._lock:
            self._sent.append(item)
            waiter, self._waiter = self._waiter, None
        if waiter is not None:
            self.loop.call_soon_threadsafe(_wake, waiter)

    async def take(self, timeout: float | None = None) -> list:
        """What was sent since the last take, waiting up to ``timeout`` seconds for something ([] if nothing came)."""
        with self._lock:
            if self._sent:
                items, self._sent = self._sent, []
                return items
            waiter = self._waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _wake, waiter) if timeout is not None else None
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._waiter = None
                items, self._sent = self._sent, []
        return items


def _wake(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Worker:
    """The threads of one loaded model: as many as the engine runs generations at once, taking jobs in order."""

    def __init__(self, name: str, engine, queue_size: int) -> None:
        self.name, self.engine = name, engine
        self.parallel = max(1, engine.parallel)
        self.queue_size = max(queue_size, self.parallel)  # every slot can be busy
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.in_flight = 0
        self.lock = threading.Lock()
        self.recent_s = 2.0  # moving average of a job's run time, for Retry-After
        self.threads = [threading.Thread(target=self._run, name=f"worker-{name}-{i}", daemon=True)
                        for i in range(self.parallel)]
        for thread in self.threads:
            thread.start()

    def submit(self, job: Job) -> None:
        with self.lock:
            if self.in_flight >= self.queue_size:
                raise Overloaded(self.name, max(1, round(self.recent_s * self.in_flight / (2 * self.parallel))))
            self.in_flight += 1
        job.worker = self
        self.jobs.put(job)

    def release(self, job: Job) -> None:
        """Give the job's place back (once): when it ends, or when its client leaves while it waits."""
        with self.lock:
            if not job.released:
                job.released = True
                self.in_flight -= 1

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            started = time.perf_counter()
            job.started = True
            try:
                if not job.cancel.is_set():  # a client that left while waiting costs nothing
                    for chunk in self.engine.generate(job.request, job.params, job.cancel):
                        job.send(chunk)
            except MistralkitError as exc:
                job.send(exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not kill the worker
                log.exception("generation failed")
                job.send(MistralkitError(f"generation failed: {exc.__class__.__name__}: {exc}"))
            finally:
                job.send(None)
                self.release(job)
                self.recent_s = 0.8 * self.recent_s + 0.2 * (time.perf_counter() - started)

    @property
    def busy(self) -> bool:
        return self.in_flight > 0

    def stats(self) -> dict | None:
        """Slot occupancy and the engine's own counters, for /metrics (None for an engine without a batcher)."""
        stats = self.engine.slot_stats()
        return None if stats is None else {**stats, "waiting": max(0, self.in_flight - stats["busy"])}

    def stop(self) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join(timeout=30)
        self.engine.close()


async def stream(job: Job, is_disconnected, every_s: float = 0.25) -> AsyncIterator[Chunk]:
    """Yield the job's chunks (those that came while the caller was busy, as one); cancel the job
    when the client goes away (``is_disconnected``, checked every ``every_s``; None: the caller
    learns it otherwise and cancels this generator) or this generator is closed early.

    The check runs on a clock, not only when the chunks pause: a non-streaming request whose
    client left mid-generation would otherwise hold its model until ``max_tokens``.
    """
    finished = False
    loop = asyncio.get_running_loop()
    watching = is_disconnected is not None
    check_at = loop.time() + every_s if watching else float("inf")
    try:
        while True:
            if loop.time() >= check_at:
                if await is_disconnected():
                    return  # finally: cancel, and give a waiting job's place back now
                check_at = loop.time() + every_s
            ready: Chunk | None = None  # the chunks that came since the last look, as one
            for item in await job.take(max(0.0, check_at - loop.time()) if watching else None):
                if isinstance(item, Chunk):
                    ready = item if ready is None else ready.then(item)
                    continue
                if ready is not None:
                    yield ready
                if item is None:
                    finished = True
                    return
                raise item
            if ready is not None:
                yield ready
    finally:
        if not finished:
            job.cancel.set()
            if not job.started and job.worker is not None:
                job.worker.release(job)
