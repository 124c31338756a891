"""The ``file_search`` tool of ``/v1/responses``: the stores' best passages in the prompt, citations checked.

The last user message is the query. Its best chunks from the named vector stores (collections) go
into the system message as numbered sources (``documents.answer.ground``: as many as the context
holds beside the answer); the model answers citing them as ``[1]``, ``[2]``. The response gets a
``file_search_call`` item first (its ``results`` when ``include`` asks for
``file_search_call.results``, in the sources' order: result ``n - 1`` is source ``n``), and the
message's text carries one ``file_citation`` annotation per valid citation (``index``: where its
``[n]`` starts). A citation that does not hold (a source not given, a quote not in its source) gets
no annotation; it is listed in the text part's ``invalid_citations`` (a mistralkit extension).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request
from pydantic import Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..documents.answer import Source, check_citations, ground
from ..errors import BadParameter
from ..http.body import BaseBody
from .schemas import ChatMessage, ChatRequest
from .vector_stores import file_id_of, open_store, result_shape, search

RESULTS = "file_search_call.results"


class FileSearchTool(BaseBody):
    type: str
    vector_store_ids: list[str] = Field(min_length=1, max_length=8)
    max_num_results: int = Field(default=5, ge=1, le=50)


@dataclass
class Grounding:
    """What the response shows of the search: its item first, and the annotations of the answer."""

    item: dict[str, Any]
    sources: list[Source] = field(default_factory=list)

    def annotate(self, text: str) -> tuple[list[dict], list[dict]]:
        """(file_citation annotations, the citations that do not hold) of the answer ``text``."""
        valid, invalid = [], []
        by_number = {s.number: s for s in self.sources}
        for citation in check_citations(text, self.sources):
            if citation.problem is not None:
                invalid.append(citation.to_dict())
                continue
            path = by_number[citation.number].chunk.path
            valid.append({"type": "file_citation", "file_id": file_id_of(path), "filename": Path(path).name,
                          "index": citation.start})
        return valid, invalid


def split_tools(tools: list[dict[str, Any]] | None) -> tuple[FileSearchTool | None, list[dict[str, Any]] | None]:
    """The file_search tool (one at most) and the other tools, checked (a 400 naming ``tools.N``)."""
    searches, others = [], []
    for index, tool in enumerate(tools or ()):
        if isinstance(tool, dict) and tool.get("type") == "file_search":
            try:
                searches.append(FileSearchTool.model_validate(tool))
            except ValidationError as exc:
                first = exc.errors()[0]
                where = f"tools.{index}.{'.'.join(map(str, first['loc']))}"
                raise BadParameter(f"{where}: {first['msg']}", f"tools.{index}") from None
        else:
            others.append(tool)
    if len(searches) > 1:
        raise BadParameter("tools: one file_search tool at most (list its vector_store_ids together)", "tools")
    return (searches[0] if searches else None), (others or None)


async def prepare(chat: ChatRequest, tool: FileSearchTool, include: list[str] | None,
                  request: Request) -> Grounding:
    """Search, and put the sources in ``chat``'s system message (changed in place)."""
    for store_id in tool.vector_store_ids:
        await run_in_threadpool(lambda s=store_id: open_store(s).close())  # 404 / 400 before any work
    last = chat.messages[-1]
    if last.role != "user" or not last.text().strip():
        raise BadParameter("input: file_search searches with the last user message, and there is none", "input")
    question = last.text()
    found = await run_in_threadpool(search, tool.vector_store_ids, question, tool.max_num_results)
    system = chat.messages[0].text() if chat.messages[0].role in ("system", "developer") else None
    history = chat.messages[1 if system is not None else 0:-1]
    max_tokens = chat.max_tokens or request.app.state.config.settings.max_tokens
    async with request.app.state.pool.use(chat.model) as resident:
        engine = resident.worker.engine
        count: Callable = engine.count_tokens
        grounded = await run_in_threadpool(ground, question, [hit for _, hit, _ in found], count, engine.n_ctx,
                                           max_tokens, system, [m.as_dict() for m in history])
    asked = ChatMessage(role="user", content=grounded.messages[-1]["content"]) if grounded.sources else last
    chat.messages = [ChatMessage(role="system", content=grounded.messages[0]["content"]), *history, asked]
    scores = {id(hit.chunk): score for _, hit, score in found}
    results = [{**_result(source, scores.get(id(source.chunk), 0.0))} for source in grounded.sources]
    item = {"type": "file_search_call", "id": f"fs_{uuid.uuid4().hex[:24]}", "status": "completed",
            "queries": [question], "results": results if include and RESULTS in include else None}
    return Grounding(item, grounded.sources)


def _result(source: Source, score: float) -> dict[str, Any]:
    from ..documents.collection import Hit

    shaped = result_shape(Hit(source.chunk, score, None, None), score)
    return {"file_id": shaped["file_id"], "filename": shaped["filename"], "score": score,
            "text": source.chunk.text, "attributes": {**shaped["attributes"], "source": source.number}}
