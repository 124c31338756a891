"""The server's model pool with real llama.cpp engines: a held model is never unloaded to make room,
and a model that loads does not make requests for loaded models wait (issue 15's review findings).

Two residents of the embedded model (by name, and by file path) stand in for two models; a memory budget
that fits one of them forces the pool to choose."""

from __future__ import annotations

import asyncio

import pytest

from mistralkit.engines import GenerationParams
from mistralkit.server.config import ServerConfig
from mistralkit.server.app import _default_model
from mistralkit.server.openai_routes import _model_rows
from mistralkit.server.pool import Pool, _planned
from mistralkit.server.worker import Job
from mistralkit.settings import Settings

pytestmark = pytest.mark.slow

PARAMS = GenerationParams(max_tokens=4, greedy=True)


def pool_for(model, budget: int, *dirs) -> Pool:
    settings = Settings(ctx=512, threads=1)
    return Pool(ServerConfig(memory_budget=budget, model_dirs=(model.path.parent, *dirs), settings=settings))


def third_copy(model, folder):
    """The embedded GGUF under another name (a hard link where the file system allows): a third model."""
    import os
    import shutil

    target = folder / "third.gguf"
    try:
        os.link(model.path, target)
    except OSError:
        shutil.copyfile(model.path, target)
    return str(target)


async def generate(resident, loop) -> str:
    job = Job(resident.worker.engine.prompt_tokens([{"role": "user", "content": "Hi"}]), PARAMS, loop)
    resident.worker.submit(job)
    parts = []
    while True:
        items = await job.take(timeout=60)
        assert items, "no chunk in 60 s"
        for item in items:
            if item is None:
                return "".join(parts)
            assert not isinstance(item, Exception), item
            parts.append(item.text)


def test_a_held_model_is_not_unloaded_while_another_loads(model, tmp_path):
    """Between `use` and queuing its job a request holds its model: loading a second model past the
    budget must not stop it (before the fix the request's worker was stopped: a hang or a 500)."""
    one = _planned(model, 512, "f16")

    async def scenario():
        pool = pool_for(model, one + one // 2, tmp_path)  # room for one model
        loop = asyncio.get_running_loop()
        try:
            async with pool.use("gemma-3-270m") as first:
                async with pool.use(str(model.path)) as second:  # does not fit: the first is held, so it stays
                    assert set(pool.residents) == {"gemma-3-270m:q4_k_m", "gemma-3-270m-q4_k_m"}
                    assert first.worker.threads[0].is_alive()
                    assert (await generate(first, loop)) and (await generate(second, loop))
            async with pool.use(third_copy(model, tmp_path)):  # nothing held now: idle ones make room
                assert list(pool.residents) == ["third"], "both idle models were unloaded"
            assert not first.worker.threads[0].is_alive() and not second.worker.threads[0].is_alive()
        finally:
            pool.close()

    asyncio.run(scenario())


def test_requests_for_a_loaded_model_do_not_wait_for_another_load(model):
    async def scenario():
        pool = pool_for(model, budget=1 << 40)
        try:
            async with pool.use("gemma-3-270m"):
                pass
            loading = asyncio.create_task(pool.get(str(model.path)))
            for _ in range(200):  # until the load is under way in a worker thread
                if pool.loading:
                    break
                await asyncio.sleep(0.01)
            assert pool.loading, "the second model is loading"
            async with pool.use("gemma-3-270m") as loaded:
                assert not loading.done(), "the loaded model was handed out while the other one loads"
                assert loaded.worker.threads[0].is_alive()
            twice = asyncio.create_task(pool.get(str(model.path)))  # a second request shares the same load
            first, second = await loading, await twice
            assert first is second and first.holders == 2
        finally:
            pool.close()

    asyncio.run(scenario())


def test_the_operators_own_file_is_served_wherever_it_lies_and_no_other(model, tmp_path):
    """`serve -m PATH` serves the operator's file from any folder, by its path or its name; a request
    naming another file of that folder is still refused, as any file outside --allow-model-paths."""
    from mistralkit.errors import ModelNotFound

    mine, other = third_copy(model, tmp_path), str(tmp_path / "other.gguf")
    (tmp_path / "other.gguf").write_bytes(model.path.read_bytes()[:1 << 20])
    pool = Pool(ServerConfig(preload=mine, settings=Settings(ctx=512, threads=1)))
    try:
        assert pool.resolve(mine)[1].path.resolve() == (tmp_path / "third.gguf").resolve()
        assert pool.resolve("third")[1].path == pool.resolve(mine)[1].path
        for refused in (other, "other", str(model.path)):
            with pytest.raises(ModelNotFound):
                pool.resolve(refused)
        assert pool.resolve("gemma-3-270m")[1].path == model.path  # registered names as ever
        assert _model_rows(mine)[0]["id"] == "third" and _default_model(pool.config) == "third"  # no folder shown
    finally:
        pool.close()
