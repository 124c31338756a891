"""``mistralkit remotes ...``: list, add, remove and check remote APIs (OpenAI-compatible, Anthropic)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(help="Remote APIs that --model NAME can use (OpenAI-compatible servers, Anthropic). "
                       "Prompts sent to a remote leave this machine.",
                  no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})

Name = Annotated[str, typer.Argument(help="The remote's name (what --model takes).")]


@app.command("list")
def list_remotes(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Remotes from the environment (MODEL_TYPE, OPENAI_*, ANTHROPIC_*), config.toml and remotes.json.

    Examples:

      mistralkit remotes list

      mistralkit remotes list --json | jq '.[].name'
    """
    from ..models.remotes import listing
    from .models import print_table

    rows = listing()
    if as_json:
        print(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    if not rows:
        print("No remotes. Add one: mistralkit remotes add NAME --url URL --model MODEL [--key-env VAR]")
        return
    print_table("Remote APIs (prompts sent to them leave this machine)",
           ["NAME", "API", "MODEL", "URL", "KEY", "SOURCE"],
           [[r.remote.name, r.remote.api if r.remote.flavor == r.remote.api else f"{r.remote.api} ({r.remote.flavor})",
             r.remote.model, r.remote.base_url,
             f"{r.remote.key_env} ({'set' if r.key_set else 'unset'})" if r.remote.key_env else "-", r.source]
            for r in rows])


@app.command()
def add(
    name: Name,
    url: Annotated[
        str,
        typer.Option(
            "--url", help="API root: …/v1 for OpenAI-compatible servers; https://api.anthropic.com for Anthropic."
        ),
    ],
    model: Annotated[str, typer.Option("--model", "-m", help="The model name that server knows.")],
    api: Annotated[str, typer.Option("--api", help="openai (any OpenAI-compatible server) or anthropic.")] = "openai",
    key_env: Annotated[
        str | None,
        typer.Option("--key-env", help="NAME of the environment variable holding the key (never the key itself)."),
    ] = None,
    flavor: Annotated[
        str | None, typer.Option("--flavor", help="openai, mistral or vllm (default: from the host).")
    ] = None,
    ctx: Annotated[int | None, typer.Option("--ctx", help="Context window in tokens (default 32768).")] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the next bytes of an answer.")
    ] = 60.0,
    force: Annotated[bool, typer.Option("--force", help="Replace a remote of that name.")] = False,
) -> None:
    """Save a remote in remotes.json; then use it with --model NAME.

    Examples:

      mistralkit remotes add gpt --url https://api.openai.com/v1 --model gpt-4o-mini --key-env OPENAI_API_KEY

      mistralkit remotes add claude --api anthropic --url https://api.anthropic.com --model claude-sonnet-4-5 --key-env ANTHROPIC_API_KEY

      mistralkit remotes add vllm --url http://127.0.0.1:8000/v1 --model mistral-7b --flavor vllm

      mistralkit run -m gpt "Hello"
    """  # noqa: E501 - an example command is one line, as a shell takes it
    from ..models.remotes import Remote
    from ..models.remotes import add as save

    saved = save(Remote(name, api, url, model, key_env=key_env, flavor=flavor, ctx=ctx, timeout_s=timeout),
                 replace=force)
    key = f", key from ${saved.key_env}" if saved.key_env else ""
    print(f"Saved remote {saved.name!r}: {saved.api} at {saved.base_url}, model {saved.model}{key}.")


@app.command()
def remove(name: Name) -> None:
    """Delete a remote from remotes.json (those of config.toml are edited there).

    Example:

      mistralkit remotes remove gpt
    """
    from ..models.remotes import remove as delete

    gone = delete(name)
    print(f"Removed remote {gone.name!r} ({gone.base_url}).")


@app.command()
def check(name: Name) -> None:
    """Send one tiny request ("Say OK.", 8 tokens) to a remote and print the latency, or the error.

    Examples:

      mistralkit remotes check gpt

      MODEL_TYPE=openai OPENAI_MODEL=gpt-4o-mini mistralkit remotes check openai
    """
    from ..engines.remote import check as probe
    from ..errors import ModelNotFound
    from ..models.remotes import lookup

    model = lookup(name)
    if model is None:
        raise ModelNotFound(f"no remote named {name!r}", hint="`mistralkit remotes list` shows the names")
    checked = probe(model)
    print(f"OK {checked.name}: {model.remote.api} at {model.remote.base_url} answered in {checked.latency_s:.2f} s: "
          f"{checked.text.strip()!r}")
