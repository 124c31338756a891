"""``POST /v1/correct``: ``mistralkit correct`` over HTTP, with the server's keys, limits and errors.

The checker process and the NER model are shared by every request (one check at a time). Rank mode
(``serve``'s default) scores its candidates in the batch of a pool model (the embedded Gemma 3 270M
unless ``model`` names another); hybrid mode sends its rewrites through the model's worker queue like
any chat request, so a busy model answers 429 here too.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool
from starlette.concurrency import run_in_threadpool

from ..errors import Cancelled, InvalidParameter, TooLarge
from ..models.catalog import BASE_MODEL
from .queued import QueuedEngine
from .schemas import RequestBody
from .watch import cancelled

router = APIRouter(prefix="/v1", tags=["correct"])


MAX_TEXT = 100_000  # characters of one request (about 15 pages); the CLI corrects files of any size


class CorrectRequest(RequestBody):
    text: str = Field(min_length=1, description=f"French text, one or more paragraphs (at most {MAX_TEXT:,} "
                                                "characters).")
    mode: Literal["rules", "rank", "hybrid"] | None = Field(
        default=None, description="Default: the server's [correct] mode (rank unless configured).")
    model: str | None = Field(default=None, description="Rank or hybrid mode's model (a name the server serves).")
    apply_unsure: StrictBool = Field(default=False, description="Rank mode: apply the unsure changes too.")
    checker: Literal["grammalecte", "languagetool"] | None = None
    protect: list[str] = Field(default_factory=list, max_length=1000, description="Words never to change.")


class SharedChecker:
    """One checker for all requests, used by one thread at a time."""

    def __init__(self, checker) -> None:
        self._checker, self._lock = checker, threading.Lock()
        self.name = checker.name

    def check(self, text: str):
        with self._lock:
            return self._checker.check(text)

    def proper_nouns(self, words: list[str]) -> set[str]:
        with self._lock:
            return self._checker.proper_nouns(words)

    @property
    def morph(self):
        """The checker's dictionary lookup under the lock, or None when it has none (LanguageTool)."""
        lookup = getattr(self._checker, "morph", None)
        if lookup is None:
            return None

        def locked(words: list[str]) -> dict[str, list[str]]:
            with self._lock:
                return lookup(words)

        return locked

    def close(self) -> None:
        self._checker.close()


def _checker(request: Request, name: str, settings) -> SharedChecker:
    from ..corrector.checkers import open_checker

    checkers = request.app.state.checkers
    with request.app.state.checkers_lock:
        if name not in checkers:
            checkers[name] = SharedChecker(open_checker(name, url=settings.languagetool_url))
        return checkers[name]


@router.post("/correct")
async def correct(body: CorrectRequest, request: Request) -> dict:
    """Correct French text: checker suggestions outside protected spans (names, numbers, dates, amounts,
    e-mails, URLs), then in hybrid mode a guarded LLM rewrite per sentence. Returns every edit."""
    from dataclasses import replace

    if len(body.text) > MAX_TEXT:
        raise TooLarge(f"text: {len(body.text):,} characters, more than the {MAX_TEXT:,} one request may hold",
                       hint="send it in parts, or use `mistralkit correct -f FILE` on the server", param="text")
    base = request.app.state.config.correct
    settings = replace(base, mode=body.mode or base.mode, checker=body.checker or base.checker,
                       apply_unsure=body.apply_unsure or base.apply_unsure)
    if settings.checker == "languagetool" and not settings.languagetool_url:
        raise InvalidParameter("this server has no LanguageTool URL",
                               hint="start it with MISTRALKIT_CORRECT_LANGUAGETOOL_URL or [correct] in config.toml")
    checker = await run_in_threadpool(_checker, request, settings.checker, settings)
    if settings.mode == "rules":
        result = await _correct(body, settings, checker, {}, request)
    else:  # the model is held for the whole correction: its jobs come one sentence at a time
        config = request.app.state.config
        server_model = config.preload or config.settings.model  # serve -m, or the configured model
        default = BASE_MODEL if settings.mode == "rank" else server_model  # ranking needs French, not chat
        async with request.app.state.pool.use(body.model or settings.model or default or "") as resident:
            options = {"engine": QueuedEngine(resident, asyncio.get_running_loop()), "model_name": resident.model.name}
            result = await _correct(body, settings, checker, options, request)
    return {"object": "correction", **result.to_dict()}


async def _correct(body: CorrectRequest, settings, checker, options: dict, request: Request):
    """The correction in a thread that stops between pieces (and sentences, in hybrid mode) once the
    client has left or the server is stopping."""
    from ..corrector import Corrector

    async with cancelled(request) as gone:
        def run():
            with Corrector(settings, checker=checker, **options) as corrector:  # type: ignore[arg-type]
                result = corrector.correct(body.text, protect=body.protect, cancelled=gone)
            if gone():
                raise Cancelled("the correction stopped: its client left or the server is stopping")
            return result

        return await run_in_threadpool(run)
