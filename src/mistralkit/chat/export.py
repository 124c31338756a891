"""Sessions as JSON or Markdown."""

from __future__ import annotations

import json
from dataclasses import asdict

from .history import Store


def session_dict(store: Store, ref: str) -> dict:
    session = store.get_session(ref)
    return {**asdict(session), "messages": [asdict(m) for m in store.messages(session.id)]}


def to_json(store: Store, ref: str) -> str:
    return json.dumps(session_dict(store, ref), indent=2, ensure_ascii=False)


def to_markdown(store: Store, ref: str) -> str:
    data = session_dict(store, ref)
    lines = [f"# {data['title'] or 'Chat ' + data['id']}", "",
             f"- session: `{data['id']}`", f"- model: `{data['model']}`", f"- created: {data['created_at']}", ""]
    if data["system_prompt"]:
        lines += ["## System", "", data["system_prompt"], ""]
    for m in data["messages"]:
        heading = {"user": "User", "assistant": "Assistant", "system": "System"}[m["role"]]
        lines += [f"## {heading}" + (" (stopped)" if m["partial"] else ""), "", m["content"].strip(), ""]
    return "\n".join(lines)


FORMATS = {"json": to_json, "md": to_markdown}
