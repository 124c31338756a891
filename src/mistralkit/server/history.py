"""Chat requests that carry ``session_id`` are saved in the same history store as the CLI's chats."""

from __future__ import annotations

from contextlib import closing

from ..chat.history import StoredMessage, Store
from ..engines import Usage

NEW = "new"


def open_session(session_id: str | None, model: str, messages: list[dict]) -> str | None:
    """The id to save this turn under: ``"new"`` creates a session; an unknown id is a 404."""
    if not session_id:
        return None
    with closing(Store()) as store:
        if session_id != NEW:
            return store.get_session(session_id).id
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
        store.add_messages(session_id, turn)
