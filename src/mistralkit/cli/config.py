"""``mistralkit config``: the effective settings."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer

app = typer.Typer(help="Settings: CLI flag > MISTRALKIT_* environment > config.toml > default.", no_args_is_help=True)


@app.command()
def show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show every setting, its value and where the value came from.

    Example: MISTRALKIT_TEMPERATURE=0.2 mistralkit config show
    """
    from .. import paths
    from ..settings import SECTIONS, describe, load, load_section

    loaded = load()
    sections = {name: load_section(name) for name in SECTIONS}
    rows = [(name, value, loaded.sources[name], doc)
            for (name, doc), value in zip(describe(), asdict(loaded.settings).values())]
    for section, got in sections.items():
        rows += [(f"{section}.{name}", value, got.sources[name], doc)
                 for (name, doc), value in zip(describe(SECTIONS[section]), asdict(got.settings).values())]
    if as_json:
        print(json.dumps({"config_file": str(loaded.config_file), "data_dir": str(paths.data_dir()),
                          "settings": {name: {"value": value, "source": source} for name, value, source, _ in rows}},
                         indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "value", "source", "meaning", box=None)
    for name, value, source, doc in rows:
        table.add_row(name, repr(value), source, doc)
    console = Console()
    console.print(table)
    console.print(f"config file: {loaded.config_file}\ndata dir: {paths.data_dir()}")


@app.command()
def path() -> None:
    """Print the config file's path.

    Example: $EDITOR "$(mistralkit config path)"
    """
    from .. import paths

    print(paths.config_file())
