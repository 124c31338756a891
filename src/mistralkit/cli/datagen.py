"""``mistralkit datagen ...``: an instruction server that builds balanced training data."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import options as o

app = typer.Typer(
    help="Build balanced fine-tuning data: a local server hands out instructions (persona, voice, form, "
         "noise, topic… and a target record), agents write cases, the exports feed `mistralkit tune`.\n\n"
         "Examples:\n\n"
         "  mistralkit datagen init legal/                  # a working example spec (legal cases)\n\n"
         "  mistralkit datagen init --example succession-fr successions/   # French succession cases\n\n"
         "  mistralkit datagen check legal/spec.yaml\n\n"
         "  mistralkit datagen serve legal/spec.yaml --state legal/state   # http://127.0.0.1:8765/dashboard\n\n"
         "  mistralkit datagen work --server http://127.0.0.1:8765 --model gemma-3-270m --agents 4\n\n"
         "  mistralkit tune --config cpu-smoke --data legal/state/exports/full_training_cases_mistral.jsonl "
         "--out runs/legal",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

SECURITY = "Security"
Spec = Annotated[Path, typer.Argument(help="The spec file (YAML).", show_default=False)]


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to write the example into.", show_default=False)],
    example: Annotated[str, typer.Option("--example", help="Which example: legal-en (messages to a legal help "
                                         "service, English) or succession-fr (French succession cases).")]
    = "legal-en",
) -> None:
    """Write an example (spec.yaml, schema.json, seeds.jsonl) into DIRECTORY; nothing is overwritten.

    Examples:

      mistralkit datagen init legal/ && mistralkit datagen check legal/spec.yaml

      mistralkit datagen init --example succession-fr successions/
    """
    from ..datagen.spec import init_example

    spec = init_example(directory, example)
    print(f"wrote {spec} (and its schema and seeds); next: mistralkit datagen serve {spec}", file=sys.stderr)


@app.command()
def check(spec: Spec, as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Check a spec, its schema and its seed file; every problem as FILE:LINE: what. Exits 1 if any.

    Example:

      mistralkit datagen check legal/spec.yaml
    """
    from ..datagen.spec import check_spec, load_spec

    problems = check_spec(spec)
    if as_json:
        print(json.dumps({"spec": str(spec), "ok": not problems, "errors": [p.message for p in problems]},
                         indent=2, ensure_ascii=False))
    else:
        for problem in problems:
            print(problem.message, file=sys.stderr)
    if problems:
        raise typer.Exit(1)
    if not as_json:
        loaded = load_spec(spec)
        sizes = ", ".join(f"{d.name} {len(d.values)}" for d in loaded.dimensions)
        print(f"{spec}: ok · target {loaded.target_total} cases · dimensions: {sizes}")


@app.command()
def serve(
    spec: Spec,
    state: Annotated[
        Path | None,
        typer.Option("--state", help="Folder for the database and exports (default: state/ beside the spec)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs a token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    token: Annotated[
        list[str] | None,
        typer.Option(
            "--token",
            help="Require this bearer token (repeatable; also MISTRALKIT_DATAGEN_TOKEN).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="Read tokens from a file, one per line.", rich_help_panel=SECURITY),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth", help="Allow a non-loopback address without a token.", rich_help_panel=SECURITY
        ),
    ] = False,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another Host header name this server answers to (repeatable).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body.", rich_help_panel=SECURITY)] = "1M",
    log_level: o.LogLevel = None,
) -> None:
    """Serve instructions to agents: /next-instruction, /submit-case, /stats, /dashboard.

    State (SQLite) and exports live in --state and survive restarts; exports are rewritten after every change.

    Examples:

      mistralkit datagen serve legal/spec.yaml --state legal/state

      mistralkit datagen serve spec.yaml --host 0.0.0.0 --token "$TOKEN" --allow-host datagen.lan
    """
    from ..datagen.server import DatagenConfig, create_app
    from ..datagen.spec import load_spec
    from ..datagen.state import State
    from ..http.runner import bind, run
    from ..logs import setup
    from ..models.memory import parse_size

    level = log_level or "warning"
    setup(level)
    loaded = load_spec(spec)
    config = DatagenConfig(host=host, port=port, api_keys=_tokens(token, token_file), insecure_no_auth=insecure_no_auth,
                           allowed_hosts=tuple(allow_host or ()), max_body_bytes=parse_size(max_body))
    listening = bind(host, port)
    folder = state or spec.parent / "state"
    store = State(loaded, folder)
    try:
        app = create_app(store, config)
        stats = store.stats()
        judge = f" · judge {store.judge.loaded.model.name} (min {store.judge.spec.min_score})" if store.judge else ""
        print(f"datagen {loaded.name}: {stats['accepted']}/{stats['goal']} accepted{judge} · dashboard "
              f"http://{host}:{port}/dashboard · exports {folder / 'exports'} · Ctrl-C to stop", file=sys.stderr)
        run(app, listening, host, port, level, config.body_timeout_s)
    finally:
        store.close()


def _tokens(given: list[str] | None, token_file: Path | None) -> tuple[str, ...]:
    from ..http.keys import read_keys

    return read_keys(given, token_file, env="MISTRALKIT_DATAGEN_TOKEN", flag="--token")


@app.command()
def work(
    server: Annotated[str, typer.Option("--server", help="The instruction server's URL.")] = "http://127.0.0.1:8765",
    model: o.Model = None,
    adapter: o.Adapter = None,
    agents: Annotated[
        int, typer.Option("--agents", min=1, max=256, help="Agents working at once (they share the model).")
    ] = 1,
    count: Annotated[
        int | None, typer.Option("--count", min=1, help="Stop after this many instructions (accepted or given back).")
    ] = None,
    tries: Annotated[
        int, typer.Option("--tries", min=1, help="Writes per instruction before its lease is given back.")
    ] = 3,
    token: Annotated[str | None, typer.Option("--token", help="Bearer token (also MISTRALKIT_DATAGEN_TOKEN).")] = None,
    max_tokens: o.MaxTokens = None,
    temperature: o.Temperature = None,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Write cases for the server's instructions with a local model until the goal, --count or Ctrl-C.

    Ctrl-C or SIGTERM stops every agent after its current piece of text and gives its lease back (exit 130).

    Examples:

      mistralkit datagen work --model gemma-3-270m --agents 4

      mistralkit datagen work --server http://10.0.0.5:8765 --token "$TOKEN" -m ministral-3b --count 100
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..api import load
    from ..datagen.worker import check_server, engine_writer
    from ..datagen.worker import work as run_work
    from ..logs import setup
    from ..settings import load as load_settings
    from ..signals import interrupt_on_sigterm

    settings = load_settings(cli={"model": model, "adapter": adapter, "ctx": ctx, "threads": threads}).settings
    setup(settings.log_level)
    if check_server(server).get("done"):
        print("the server's goal is already met: nothing to write", file=sys.stderr)
        return
    loaded = load(settings, parallel=agents)  # the agents' cases are decoded together
    writer = engine_writer(
        loaded, max_tokens=max_tokens or 320, temperature=0.8 if temperature is None else temperature
    )
    token = token or os.environ.get("MISTRALKIT_DATAGEN_TOKEN")
    try:
        with Progress(TextColumn("cases"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                      TimeElapsedColumn(), disable=as_json or not sys.stderr.isatty(), transient=False) as bar:
            task = bar.add_task("cases", total=count, note="")

            def seen(agent_id: str, result: dict) -> None:
                if result["status"] == "accepted":
                    bar.advance(task)
                bar.update(task, note=f"last: {result['status']} {result.get('reason') or ''}".strip())

            with interrupt_on_sigterm():  # a SIGTERM (systemd, docker stop, kill) gives the leases back as Ctrl-C does
                report = run_work(server, writer, agents=agents, count=count, token=token, tries=tries,
                                  on_result=seen)
    finally:
        loaded.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(report.rejected.items())) or "none"
        end = "goal met" if report.done else "interrupted" if report.interrupted else "stopped"
        print(f"{report.accepted} accepted, rejected: {rejected}, {report.released} given back; {end} "
              f"after {report.elapsed_s:.0f} s", file=sys.stderr)
    if report.errors:
        print(f"error: {report.errors[0]}", file=sys.stderr)
        raise typer.Exit(1)
    if report.interrupted:
        raise typer.Exit(130)
