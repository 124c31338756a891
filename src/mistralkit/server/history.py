"""Chat requests that carry ``session_id`` are saved in the same history store as the CLI's chats.

A busy history database is a 503 with Retry-After before any generation (``open_session``); once an
answer exists it is never dropped: ``save_turn`` keeps it in the journal if the database is still busy.
"""

from __future__ import annotations

import logging
from contextlib import closing

from ..chat.history import Saved, Store, StoredMessage
from ..engines import Usage

log = logging.getLogger(__name__)
NEW = "new"


def open_session(session_id: str | None, model: str, messages: list[dict]) -> str | None:
    """The id to save this turn under: ``"new"`` creates a session; an id that is not exact is a 404.

    Raises HistoryBusy (503) when the database takes no writes within its wait budget.
    """
    if not session_id:
        return None
    with closing(Store()) as store:
        if session_id != NEW:
            found = store.get_session(session_id, exact=True).id
            store.require_writable()
            return found
        store.require_writable()
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        title = " ".join(last_user.split())[:60] or None
        return store.create_session(model, system_prompt=system, title=title).id


def save_turn(session_id: str | None, messages: list[dict], reply: str, usage: Usage | None, partial: bool) -> None:
    """Append the request's last user message and the reply (marked partial when it was cut short)."""
    if not session_id:
        return
    user = next((m for m in reversed(messages) if m["role"] == "user"), None)
    turn = [StoredMessage("user", user["content"], usage.prompt_tokens if usage else None)] if user else []
    turn.append(StoredMessage("assistant", reply, usage.completion_tokens if usage else None,
                              usage.to_dict() if usage else None, partial))
    with closing(Store()) as store:
        if store.add_messages(session_id, turn) is Saved.PENDING:
            log.warning("history database busy: the turn of session %s is kept in %s", session_id,
                        store.journal.path)
