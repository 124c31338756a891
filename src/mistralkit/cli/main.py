"""The ``mistralkit`` command."""

from __future__ import annotations

import sys

import typer
import typer.main

from .. import __version__
from ..errors import MistralkitError
from . import (bench, chat, config, correct, data, datagen, docs, embed, evaluate, export, models, remotes, serve,
               sessions, tune, vllm)

app = typer.Typer(
    name="mistralkit",
    help="Local-first toolkit for Mistral-family models. "
    "Nothing leaves the machine unless you pick a remote API (`mistralkit remotes`).\n\n"
    "Examples:\n\n"
    "  mistralkit chat                      # chat with the embedded default model\n\n"
    "  mistralkit run 'Write a haiku'        # one answer, streamed\n\n"
    "  mistralkit sessions list             # saved chats\n\n"
    "  mistralkit correct 'il a manger'     # French correction that never touches names or numbers\n\n"
    "  mistralkit datagen init legal/       # an instruction server that builds balanced training data\n\n"
    "  mistralkit docs add notes ./records  # a document collection; then: mistralkit run --docs notes '...'\n\n"
    "  mistralkit serve                     # OpenAI-compatible API + web page on 127.0.0.1:8080",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command()(chat.chat)
app.command()(chat.run)
app.command()(embed.embed)
app.command()(correct.correct)
app.command()(serve.serve)
app.command()(export.export)
app.command()(tune.tune)
app.command()(bench.bench)
app.command("eval")(evaluate.eval_command)
app.add_typer(models.app, name="models")
app.add_typer(sessions.app, name="sessions")
app.add_typer(config.app, name="config")
app.add_typer(data.app, name="data")
app.add_typer(datagen.app, name="datagen")
app.add_typer(docs.app, name="docs")
app.add_typer(remotes.app, name="remotes")
app.add_typer(vllm.app, name="vllm")


def _version(value: bool) -> None:
    if value:
        print(f"mistralkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Local-first toolkit for Mistral-family models."""


def main() -> None:
    from ..text import check_argv
    from .hints import check_synonyms

    if hasattr(sys.stdin, "reconfigure"):  # undecodable bytes reach the checks as surrogates, not a traceback
        sys.stdin.reconfigure(errors="surrogateescape")
    try:
        check_argv(sys.argv[1:])
        check_synonyms(typer.main.get_command(app), sys.argv[1:])
        app()
    except MistralkitError as exc:
        sys.exit(exc.report())
    except OSError as exc:  # a file or folder problem nobody anticipated: still no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
