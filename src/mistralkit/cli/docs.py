"""``mistralkit docs``: document collections to search and to answer from, with sources."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

app = typer.Typer(
    help="Document collections: index folders of .txt .md .html .pdf .docx, search them, answer from them "
    "with cited sources (mistralkit run --docs NAME). Everything stays on this machine.\n\n"
    "Examples:\n\n"
    "  mistralkit docs add notes ./records\n\n"
    "  mistralkit docs search notes 'insulin dose after surgery'\n\n"
    "  mistralkit run --docs notes 'When was Mr Hartley discharged?'",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="Collection name (letters, digits, '.', '_', '-').", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EmbedModel = Annotated[str | None, typer.Option(
    "--embed-model", help="Embedding model (default all-minilm-l6-v2); fixed per collection.", show_default=False)]
MaxFileMb = Annotated[float, typer.Option("--max-file-mb", help="Skip files larger than this (MiB).")]
PREVIEW = 220


def _reporter(as_json: bool, total: int):
    """Per-file lines on stderr above a progress bar (silent with --json); returns (callback, context)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, highlight=False)
    bar = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True, disable=as_json)
    task = bar.add_task("files", total=total or None)

    def tell(item) -> None:
        if item.status in ("added", "updated", "unchanged", "skipped"):
            bar.advance(task)
        if as_json or item.status == "unchanged":
            return
        detail = f"({item.chunks} chunks)" if item.status in ("added", "updated", "removed") else item.reason
        console.print(escape(f"{item.status:<9} {item.path}  {detail}"))

    return tell, bar


def _sync(collection, only, as_json: bool, max_file_mb: float) -> None:
    from ..errors import MistralkitError

    total = collection.count_files(only)
    tell, bar = _reporter(as_json, total)
    if not as_json:
        print(f"{collection.name}: {total} file(s) to check; loading {collection.embed_model}…", file=sys.stderr)
    try:
        with bar:
            report = collection.sync(only, progress=tell, max_file_bytes=int(max_file_mb * 2**20))
    except KeyboardInterrupt:
        print(f"interrupted: the files indexed so far are kept; finish with: mistralkit docs sync {collection.name}",
              file=sys.stderr)
        raise typer.Exit(130) from None
    counts = collection.store.counts()
    if report.not_english and collection.english_only:
        print(f"note: {report.not_english} file(s) do not read as English, and {collection.embed_model} is an English "
              "model (vector search in other languages is weak; keyword search is not affected). For French or "
              "Spanish, make the collection with --embed-model multilingual-e5-small or bge-m3 (mistralkit models "
              f"pull NAME), or re-embed this one: mistralkit docs reembed {collection.name} --embed-model NAME",
              file=sys.stderr)
    if as_json:
        print(json.dumps({"collection": collection.name, "summary": report.summary(), "ignored": report.ignored,
                          "not_english": report.not_english, "english_only_model": collection.english_only,
                          "files": [vars(item) for item in report.files], "totals": counts}, ensure_ascii=False))
    else:
        print(f"{collection.name}: {report.summary()}; {counts['files']} files, {counts['chunks']} chunks in all")
    skipped = report.count("skipped")
    if skipped:
        raise MistralkitError(f"{skipped} file(s) could not be read (listed above); the others are indexed",
                              hint="fix or remove them, then run mistralkit docs sync " + collection.name)


@app.command()
def add(name: Name, paths: Annotated[list[str], typer.Argument(help="Files and folders to index.", show_default=False)],
        embed_model: EmbedModel = None, max_file_mb: MaxFileMb = 64.0, as_json: Json = False) -> None:
    """Create a collection (or add to one) and index files and folders into it.

    Folders are walked (hidden files skipped, symlinked folders followed once); only new or changed
    files are read. A file that cannot be read is reported with its reason and skipped. Ctrl-C
    keeps what is indexed; run the command again (or docs sync) to finish.

    Examples:

      mistralkit docs add notes ./records

      mistralkit docs add contracts ~/legal/*.pdf --embed-model multilingual-e5-small

      mistralkit docs add notes ./records --json | jq .summary
    """
    from ..documents import Collection

    with Collection.open(name, create=True, embed_model=embed_model) as collection:
        found = collection.add_roots(paths)
        _sync(collection, found, as_json, max_file_mb)


@app.command()
def sync(name: Name, max_file_mb: MaxFileMb = 64.0, as_json: Json = False) -> None:
    """Bring a collection in step with its folders: index new and changed files, drop removed ones.

    Examples:

      mistralkit docs sync notes
    """
    from ..documents import Collection

    with Collection.open(name) as collection:
        _sync(collection, None, as_json, max_file_mb)


@app.command("list")
def list_(as_json: Json = False) -> None:
    """List collections with their files, chunks and embedding model.

    Examples:

      mistralkit docs list
    """
    from ..documents import list_collections

    found = list_collections()
    if as_json:
        print(json.dumps(found, ensure_ascii=False))
        return
    if not found:
        print("no collections yet: mistralkit docs add NAME FOLDER")
    for item in found:
        if "error" in item:
            print(f"{item['name']:<20} {item['error']}")
        else:
            print(f"{item['name']:<20} {item['files']:>6} files {item['chunks']:>8} chunks  {item['embed_model']}")


@app.command()
def status(name: Name, as_json: Json = False) -> None:
    """Files, chunks and model of a collection, and the files changed or gone since they were indexed.

    Examples:

      mistralkit docs status notes
    """
    from ..documents import Collection

    with Collection.open(name) as collection:
        found = collection.status()
    if as_json:
        print(json.dumps(found, ensure_ascii=False))
        return
    print(f"{found['name']}: {found['files']} files, {found['chunks']} chunks, {found['bytes'] / 2**20:.1f} MiB, "
          f"embedded with {found['embed_model']}")
    for root in found["roots"]:
        print(f"  from {root}")
    for path in found["stale"]:
        print(f"  changed since indexed: {path}")
    for path in found["missing"]:
        print(f"  gone from disk: {path}")
    if found["stale"] or found["missing"]:
        print(f"  run: mistralkit docs sync {name}")


@app.command()
def rm(name: Name) -> None:
    """Delete a collection (its index; your files are not touched).

    Examples:

      mistralkit docs rm notes
    """
    from ..documents import remove_collection

    remove_collection(name)
    print(f"removed collection {name}")


@app.command()
def search(name: Name, query: Annotated[str, typer.Argument(help="What to look for.", show_default=False)],
           k: Annotated[int, typer.Option("-k", help="Number of passages.")] = 5,
           mode: Annotated[str, typer.Option("--mode", help="hybrid, vector or keyword.")] = "hybrid",
           embed_model: EmbedModel = None, as_json: Json = False) -> None:
    """Find the passages that best match a query: keyword (BM25), vector, or both fused (hybrid).

    Examples:

      mistralkit docs search notes "insulin dose after surgery"

      mistralkit docs search notes "délai de résiliation" --mode keyword -k 3 --json
    """
    from ..documents import Collection

    with Collection.open(name, embed_model=embed_model) as collection:
        hits = collection.search(query, k=k, mode=mode)
    if as_json:
        print(json.dumps([{"rank": i, "score": h.score, "keyword_rank": h.keyword_rank, "vector_rank": h.vector_rank,
                           "path": h.chunk.path, "place": h.chunk.place, "page": h.chunk.page,
                           "lines": list(h.chunk.lines) if h.chunk.lines else None, "start": h.chunk.start,
                           "end": h.chunk.end, "heading": h.chunk.heading, "text": h.chunk.text}
                          for i, h in enumerate(hits, 1)], ensure_ascii=False))
        return
    if not hits:
        print("no match")
    for i, hit in enumerate(hits, 1):
        ranks = ", ".join(f"{what} #{rank}" for what, rank in (("keyword", hit.keyword_rank),
                                                                ("vector", hit.vector_rank)) if rank)
        head = f" ({hit.chunk.heading})" if hit.chunk.heading else ""
        print(f"{i}. {hit.chunk.path}, {hit.chunk.place}{head}  [{ranks}]")
        text = " ".join(hit.chunk.text.split())
        print(f"   {text if len(text) <= PREVIEW else text[:PREVIEW - 1] + '…'}")


@app.command()
def reembed(name: Name, embed_model: Annotated[str, typer.Option(
        "--embed-model", help="The new embedding model.", show_default=False)]) -> None:
    """Embed a collection again with another model (the old vectors stay until the new ones are in).

    Examples:

      mistralkit docs reembed notes --embed-model all-minilm-l6-v2
    """
    from ..documents import Collection

    with Collection.open(name) as collection:
        done = collection.reembed(embed_model, progress=lambda n, total: print(f"\r{n}/{total} chunks", end="",
                                                                               file=sys.stderr, flush=True))
    print(f"\n{name}: {done} chunks embedded with {embed_model}")
