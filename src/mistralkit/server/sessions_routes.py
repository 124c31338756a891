"""``/v1/sessions``: the saved chats (the same history as ``mistralkit sessions``), for the web page."""

from __future__ import annotations

from contextlib import closing
from dataclasses import asdict

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from ..chat.history import Store

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


def _summary(session) -> dict:
    data = asdict(session)
    data.pop("params", None)
    return data


def _list(limit: int) -> list[dict]:
    with closing(Store()) as store:
        return [_summary(s) for s in store.list_sessions(limit)]


def _get(session_id: str) -> dict:
    with closing(Store()) as store:
        session = store.get_session(session_id, exact=True)  # prefixes are a CLI convenience only
        messages = [{"role": m.role, "content": m.content, "partial": m.partial} for m in store.messages(session.id)]
    return {**_summary(session), "messages": messages}


def _delete(session_id: str) -> dict:
    with closing(Store()) as store:
        return {"id": store.delete_session(session_id, exact=True).id, "deleted": True}


@router.get("")
async def list_sessions(limit: int = Query(50, ge=1, le=1000)) -> dict:
    """Saved sessions, most recently used first."""
    return {"object": "list", "data": await run_in_threadpool(_list, limit)}


@router.get("/{session_id}")
async def get_session(session_id: str) -> dict:
    """One session with its messages."""
    return await run_in_threadpool(_get, session_id)


@router.delete("/{session_id}")
async def delete_session(session_id: str) -> dict:
    """Delete one session (its exact id); 503 with Retry-After while the history database is busy."""
    return await run_in_threadpool(_delete, session_id)
