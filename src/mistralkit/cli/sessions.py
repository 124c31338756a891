"""``mistralkit sessions``: list, show, export and delete saved chats."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Saved chat sessions.\n\nExamples:\n\n  mistralkit sessions list\n\n"
                       "  mistralkit sessions export 3f2a --format md > chat.md",
                  no_args_is_help=True)

Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _store():
    from ..chat.history import Store

    return Store()


@app.command("list")
def list_(limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50, as_json: Json = False) -> None:
    """List saved sessions, newest first.

    Example: mistralkit sessions list --limit 10
    """
    sessions = _store().list_sessions(limit)
    if as_json:
        print(json.dumps([asdict(s) for s in sessions], indent=2, ensure_ascii=False))
        return
    if not sessions:
        print("No saved sessions yet. Start one with `mistralkit chat`.")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "updated", "messages", "model", "title", box=None)
    for s in sessions:
        table.add_row(s.id, s.updated_at[:16].replace("T", " "), str(s.message_count), s.model, s.title or "")
    Console().print(table)


@app.command()
def show(
    session_id: Annotated[str, typer.Argument(help="Session id or unique prefix.")], as_json: Json = False
) -> None:
    """Print a session's messages.

    Example: mistralkit sessions show 3f2a
    """
    from ..chat.export import to_json, to_markdown

    store = _store()
    print(to_json(store, session_id) if as_json else to_markdown(store, session_id))


@app.command()
def export(
    session_id: Annotated[str, typer.Argument(help="Session id or unique prefix.")],
    format: Annotated[str, typer.Option("--format", "-f", help="json or md.")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Export a session as JSON or Markdown.

    Example: mistralkit sessions export 3f2a --format md -o chat.md
    """
    from ..chat.export import FORMATS
    from ..errors import InvalidParameter

    if format not in FORMATS:
        raise InvalidParameter(f"unknown format {format!r}", hint="use --format json or --format md")
    text = FORMATS[format](_store(), session_id)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {output}")
    else:
        print(text)


@app.command()
def rm(session_id: Annotated[str, typer.Argument(help="Session id or unique prefix.")]) -> None:
    """Delete a session and its messages.

    Example: mistralkit sessions rm 3f2a
    """
    session = _store().delete_session(session_id)
    print(f"deleted session {session.id} ({session.message_count} messages)")
