"""Loaded models and their queues.

Each loaded model has a worker with one thread per engine slot (``--parallel``: a llama.cpp engine
decodes that many sequences together, see engines/batch.py), fed by a bounded queue: a request that
finds ``queue_size`` requests already running or waiting gets 429. Chunks go
back to the request's asyncio queue; setting a job's ``cancel`` event (client gone, shutdown) stops
its generation at the next token. Models load on first use and the least recently used idle ones
are unloaded when the memory budget would be exceeded.

A request holds its model with ``async with pool.use(ref) as resident`` until its job is queued (the
correction route: until it is done); a held or busy model is never unloaded. The pool's lock
guards only its bookkeeping: a model loads outside it, so requests for models already loaded never
wait for another model's load, and two requests for the same new model share one load.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from ..engines import load_engine
from ..errors import InsufficientMemory, InvalidParameter, MistralkitError
from ..models import LocalModel, registry, store
from . import boundary
from .worker import Worker
from .config import ServerConfig

log = logging.getLogger(__name__)


@dataclass
class Resident:
    """A model loaded in the pool, with its worker (not a KV slot: those are engines/batch.py's)."""

    model: LocalModel
    worker: Worker
    planned: int  # bytes the RAM planner expects it to take
    holders: int = 0  # requests between Pool.use and queuing their job: not to be unloaded

    @property
    def idle(self) -> bool:
        return not self.holders and not self.worker.busy


def split_ref(ref: str) -> tuple[str, str | None]:
    """``"base+adapter"`` -> ``("base", "adapter")``."""
    base, plus, adapter = ref.partition("+")
    if plus and not (base.strip() and adapter.strip()):
        raise InvalidParameter(f"bad model name {ref!r}", hint="write BASE+ADAPTER")
    return base.strip(), (adapter.strip() or None)


class Pool:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.residents: OrderedDict[str, Resident] = OrderedDict()
        self.lock = asyncio.Lock()
        self.embedders: dict[str, object] = {}
        self.loading: dict[str, asyncio.Future] = {}  # key -> done when its load ends
        self._resolved: dict[str, tuple] = {}  # ref -> (key, model, adapter, file stamps): see resolve
        self.pending = 0  # bytes planned for the loads under way
        self.closed = False
        self._budget = config.memory_budget  # default: what is free when the first model loads
        self.operator_name: str | None = None  # the name of ``serve -m PATH``'s model, once resolved

    def resolve(self, ref: str) -> tuple[str, LocalModel, Path | None]:
        """(pool key, model, adapter file) of ``BASE[+ADAPTER]``, as far as this server allows names.

        A name resolved before is answered from memory while its files are unchanged (same size and
        modification time): resolving reads the GGUF header, ~0.1 s a request otherwise.
        """
        cached = self._resolved.get(ref)
        if cached is not None and cached[3] == _stamp(cached[1], cached[2]):
            return cached[0], cached[1], cached[2]
        from ..models.remotes import lookup

        base, adapter = split_ref(ref)
        remote = lookup(base)  # remotes are named by whoever configured this server, so allowed
        model = (
            remote if remote is not None else self._operator_file(base) or boundary.model(base, self.config.model_dirs)
        )
        path = boundary.adapter(adapter, self.config.model_dirs) if adapter else None
        key = f"{model.name}+{path}" if path else model.name
        if remote is None:
            if len(self._resolved) >= RESOLVED_MAX:
                self._resolved.pop(next(iter(self._resolved)))
            self._resolved[ref] = (key, model, path, _stamp(model, path))
        return key, model, path

    def _operator_file(self, base: str) -> LocalModel | None:
        """``serve -m PATH``: the file the operator named at start is served wherever it lies, named by
        that path or by its model name (requests may name other files only under --allow-model-paths)."""
        preload = self.config.preload
        if not preload or not boundary.looks_like_path(preload) or registry.get(base) is not None:
            return None
        if base != preload and base != self.operator_name:
            return None
        model = store.resolve(preload)
        self.operator_name = model.name
        return model

    @asynccontextmanager
    async def use(self, ref: str) -> AsyncIterator[Resident]:
        """The loaded model for ``ref``, held (never unloaded) until the block ends."""
        resident = await self.get(ref)
        try:
            yield resident
        finally:
            resident.holders -= 1

    async def get(self, ref: str) -> Resident:
        """The loaded model for ``ref``, held for the caller (``use`` lets go of it): loading it, and
        unloading idle ones to make room, if needed."""
        from starlette.concurrency import run_in_threadpool

        key, model, adapter = await run_in_threadpool(self.resolve, ref)
        while True:
            async with self.lock:
                if key in self.residents:
                    resident = self.residents[key]
                    self.residents.move_to_end(key)
                    resident.holders += 1
                    return resident
                loading = self.loading.get(key)
                if loading is None:
                    parallel = self._parallel(model)
                    planned = _planned(model, self.config.settings.ctx, self.config.settings.kv_type, parallel)
                    victims = self._make_room(planned)
                    loading = self.loading[key] = asyncio.get_running_loop().create_future()
                    self.pending += planned
                    break
            await asyncio.shield(loading)  # another request loads it: wait, then take it (or its error)
        try:
            for victim in victims:
                await run_in_threadpool(victim.worker.stop)
            resident = await run_in_threadpool(self._load, key, model, adapter, planned, parallel)
        except BaseException as exc:
            async with self.lock:
                self.pending -= planned
                del self.loading[key]
            loading.set_exception(
                exc if isinstance(exc, Exception) else MistralkitError("the model load was interrupted")
            )
            loading.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        async with self.lock:
            self.pending -= planned
            del self.loading[key]
            self.residents[key] = resident
            resident.holders += 1
        loading.set_result(None)
        return resident

    def _parallel(self, model: LocalModel) -> int:
        """Sequences at once for ``model``: ``--parallel``, else 4 (fewer when the budget cannot hold
        their KV caches beside the models already loaded). Runs under the lock."""
        if self.config.parallel is not None:
            return self.config.parallel
        if model.format != "gguf":
            return 1
        from ..models.memory import available_memory

        budget = self._budget if self._budget is not None else available_memory()
        free = budget - self.pending - sum(resident.planned for resident in self.residents.values())
        s = self.config.settings
        for parallel in range(AUTO_PARALLEL, 1, -1):
            if _planned(model, s.ctx, s.kv_type, parallel) <= free:
                return parallel
        return 1

    def _load(self, key: str, model: LocalModel, adapter: Path | None, planned: int, parallel: int = 1) -> Resident:
        from ..engines import ENGINES

        if model.format not in ENGINES:
            raise InvalidParameter(f"{model.name} is a {model.format} model, which no chat engine runs",
                                   hint="use it with /v1/embeddings, or pick a .gguf model")
        engine = load_engine(model, **self.config.settings.engine_options(),
                             adapter=str(adapter) if adapter else None, parallel=parallel)
        log.info("serving %s, %d at once (planned %.0f MiB)", key, parallel, planned / 2**20)
        return Resident(model, Worker(key, engine, self.config.queue_size), planned)

    def _make_room(self, needed: int) -> list[Resident]:
        """Take idle models out of the pool, least recently used first, until ``needed`` bytes fit in
        the budget (with the loads under way); the caller stops them. Runs under the lock."""
        from ..models.memory import available_memory

        if self._budget is None:
            self._budget = available_memory()  # once: later readings would count our own models twice
        budget = self._budget
        used = self.pending + sum(resident.planned for resident in self.residents.values())
        victims = []
        for key in list(self.residents):
            if used + needed <= budget:
                break
            resident = self.residents[key]
            if resident.idle:
                log.info("unloading %s to make room", key)
                victims.append(self.residents.pop(key))
                used -= resident.planned
        if used + needed > budget and self.config.settings.strict_memory:
            self.residents.update((v.worker.name, v) for v in victims)  # nothing is unloaded for a refusal
            raise InsufficientMemory(
                f"loading this model needs ~{needed / 2**30:.1f} GiB but {used / 2**30:.1f} GiB of the "
                f"{budget / 2**30:.1f} GiB budget is held by busy models", hint="retry later or raise --memory-budget")
        if used + needed > budget:
            log.warning("loading past the memory budget: %.0f MiB needed, %.0f MiB used of %.0f MiB",
                        needed / 2**20, used / 2**20, budget / 2**20)
        return victims

    def embedder(self, ref: str):
        from ..embeddings import load_embedder

        if ref not in self.embedders:
            self.embedders[ref] = load_embedder(boundary.model(ref, self.config.model_dirs))
        return self.embedders[ref]

    def loaded(self) -> dict[str, Resident]:
        """The loaded models by the name clients see (an adapter by its file name, never its path)."""
        return {shown(key, resident): resident for key, resident in list(self.residents.items())}

    def queue_depths(self) -> dict[str, int]:
        return {name: resident.worker.in_flight for name, resident in self.loaded().items()}

    def engine_stats(self) -> dict[str, dict]:
        return {
            name: stats for name, resident in self.loaded().items() if (stats := resident.worker.stats()) is not None
        }

    def close(self) -> None:
        self.closed = True
        for resident in self.residents.values():
            resident.worker.stop()
        self.residents.clear()
        for embedder in self.embedders.values():
            embedder.close()  # type: ignore[attr-defined]


def shown(key: str, resident: Resident) -> str:
    """A resident's name for clients: the model's name, with its adapter's file name (not its path)."""
    _, plus, adapter = key.partition("+")
    return f"{resident.model.name}+{Path(adapter).name}" if plus else resident.model.name


RESOLVED_MAX = 64  # names remembered by Pool.resolve
AUTO_PARALLEL = 4  # sequences at once per GGUF model when --parallel is not given


def _stamp(model: LocalModel, adapter: Path | None) -> tuple | None:
    """(size, mtime) of the model's and adapter's files; None when one is gone (resolve again: it explains)."""
    try:
        return tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in (model.path, adapter) if p is not None)
    except OSError:
        return None


def _planned(model: LocalModel, ctx: int | None, kv_type: str, parallel: int = 1) -> int:
    """Bytes a model will hold here: the RAM plan of a GGUF, the weights of an HF folder, 0 for a remote."""
    from ..models.memory import context_size
    from ..models.memory import ModelShape, plan
    from ..models.store import size_of

    if model.format == "gguf":
        return plan(
            ModelShape.from_model(model),
            context_size(model.name, model.info.context_length, ctx),
            kv_type,
            parallel=parallel,
        ).total
    return size_of(model.path) if model.path is not None else 0
