"""``mistralkit embed``: local text embeddings, printed for people or as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import options as o

MAX_SIMILARITY_TEXTS = 12  # beyond this the cosine table no longer fits a terminal
SHOWN_VALUES = 4


def read_texts(texts: list[str], file: str | None) -> list[str]:
    """The texts from the arguments, then one per non-blank line of ``file`` (``-`` = stdin)."""
    from ..errors import InvalidParameter

    from ..text import decode, read_stdin

    lines: list[str] = []
    if file == "-":
        lines = read_stdin().splitlines()
    elif file is not None:
        try:
            data = Path(file).expanduser().read_bytes()
        except OSError as exc:
            raise InvalidParameter(f"cannot read {file}: {exc.strerror}",
                                   hint="pass a UTF-8 text file, one text per line") from exc
        lines = [decode(line, f"{file}:{number}") for number, line in enumerate(data.splitlines(), 1)]
    found = [*texts, *(line for line in lines if line.strip())]
    if not found:
        raise InvalidParameter("no text to embed",
                               hint="pass texts as arguments, or --file FILE (one per line; - = stdin)")
    return found


def as_json(result, texts: list[str]) -> str:
    data = [{"index": i, "text": text, "tokens": n, "truncated": i in result.truncated, "embedding": vector}
            for i, (text, n, vector) in enumerate(zip(texts, result.token_counts, result.vectors))]
    return json.dumps({"model": result.model, "dimensions": result.dimensions, "normalized": result.normalized,
                       "prompt_tokens": result.prompt_tokens, "data": data}, ensure_ascii=False)


def human(result, texts: list[str]) -> str:
    from ..embeddings import cosine

    lines = [f"{result.model}: {len(texts)} text(s), {result.dimensions} dimensions, {result.prompt_tokens} tokens"
             + (", normalized" if result.normalized else "")]
    for i, (text, n, vector) in enumerate(zip(texts, result.token_counts, result.vectors), 1):
        head = " ".join(f"{v:+.4f}" for v in vector[:SHOWN_VALUES])
        cut = " (truncated)" if i - 1 in result.truncated else ""
        preview = text if len(text) <= 48 else text[:47] + "…"
        lines.append(f"{i:>3}  {n:>5} tok{cut}  [{head} …]  {preview}")
    if 1 < len(texts) <= MAX_SIMILARITY_TEXTS:
        lines.append("cosine similarity:")
        lines.append("     " + "".join(f"{j:>7}" for j in range(1, len(texts) + 1)))
        for i, a in enumerate(result.vectors, 1):
            lines.append(f"{i:>3}  " + "".join(f"{cosine(a, b):7.3f}" for b in result.vectors))
    return "\n".join(lines)


Texts = Annotated[list[str] | None, typer.Argument(help="Texts to embed.", show_default=False)]
File = Annotated[str | None, typer.Option("--file", "-f", help="Read texts from FILE, one per line (- = stdin).")]
EmbedModel = Annotated[str | None, typer.Option(
    "--model", "-m", help="Embedding model: name, model folder or .gguf (default all-minilm-l6-v2, English only).",
    rich_help_panel=o.MODEL)]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", help="Texts per batch.")]
Json = Annotated[bool, typer.Option("--json", help="Print vectors and metadata as JSON.")]
Truncate = Annotated[bool, typer.Option("--truncate", help="Cut texts over the model's limit instead of failing.")]
Normalize = Annotated[bool, typer.Option("--normalize/--no-normalize", help="Scale vectors to unit length.")]
Pooling = Annotated[str | None, typer.Option(
    "--pooling", help="GGUF only: mean, cls or last (needed to embed with a chat model).", rich_help_panel=o.MODEL)]


def embed(texts: Texts = None, file: File = None, model: EmbedModel = None, batch_size: BatchSize = 32,
          json_: Json = False, truncate: Truncate = False, normalize: Normalize = True, pooling: Pooling = None,
          log_level: o.LogLevel = None) -> None:
    """Embed texts with a local model (all-MiniLM-L6-v2 by default, or a GGUF through llama.cpp).

    Prints each text's token count, its first values and the cosine similarities between texts.
    --json prints every vector. Nothing leaves the machine.
    The default model is English only: for French or Spanish, multilingual-e5-small or bge-m3 (models pull).

    Examples:

      mistralkit embed "The cat sat on the mat." "A kitten rests on a rug."

      mistralkit embed --file sentences.txt --json > vectors.json

      cat notes.txt | mistralkit embed -f - --batch-size 64 --json

      mistralkit embed -m ~/models/nomic-embed-text-v1.5.Q8_0.gguf "search_query: local LLMs"

      mistralkit embed -m multilingual-e5-small "query: dolor torácico" "passage: dolor en el pecho"
    """
    from ..embeddings import load_embedder
    from ..logs import setup

    setup(log_level or "warning")
    found = read_texts(texts or [], file)  # bad input fails before a model loads
    with load_embedder(model, pooling=pooling) as embedder:
        result = embedder.embed(found, batch_size=batch_size, normalize=normalize, truncate=truncate)
    print(as_json(result, found) if json_ else human(result, found))
