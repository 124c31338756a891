"""Chunks that follow a document's structure: a heading starts a new chunk, paragraphs are packed up
to a size, a paragraph longer than that is cut between sentences, and a chunk that closes on size
hands its last sentences to the next one (the overlap), so an answer that straddles the cut is whole
in one of them. A PDF chunk stays on one page. Each chunk keeps the headings above it (indexed with
its text, shown with a source), its page or line range and its character offsets in the document.

``bench/docs_quality.py --chunk-chars`` measures the size: see docs/documents.md for the figures.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .extract import Block, Document

CHUNK_CHARS = 800
OVERLAP_CHARS = 160
SENTENCE_END = re.compile(r"(?<=[.!?;:…])\s+|\n+")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    text: str  # the document's own characters, text[start:end] of Document.text
    start: int
    end: int
    headings: tuple[str, ...]
    page: int | None
    lines: tuple[int, int] | None

    @property
    def heading(self) -> str:
        return " > ".join(self.headings)

    @property
    def indexed(self) -> str:
        """What is embedded and searched: the headings above the chunk, then its text."""
        return f"{self.heading}\n{self.text}" if self.headings else self.text


@dataclass(frozen=True)
class _Piece:
    """A paragraph, or a sentence run of a long one, with its place."""

    start: int
    end: int
    page: int | None
    lines: tuple[int, int] | None


def _pieces(block: Block, size: int) -> Iterator[_Piece]:
    """The block whole when it fits, else its sentences (cut between words when one is over ``size``)."""
    if block.end - block.start <= size:
        yield _Piece(block.start, block.end, block.page, block.lines)
        return
    cuts = [0] + [m.end() for m in SENTENCE_END.finditer(block.text)] + [len(block.text)]
    spans = [(a, b) for a, b in itertools.pairwise(cuts) if block.text[a:b].strip()]
    for a, b in _split_long(block.text, spans, size):
        a += len(block.text[a:b]) - len(block.text[a:b].lstrip())
        b -= len(block.text[a:b]) - len(block.text[a:b].rstrip())
        if b > a:
            yield _Piece(block.start + a, block.start + b, block.page, _lines_of(block, a, b))


def _lines_of(block: Block, a: int, b: int) -> tuple[int, int] | None:
    """The lines of ``block.text[a:b]``: a block keeps its own line breaks, so they are counted."""
    if block.lines is None:
        return None
    first = block.lines[0] + block.text.count("\n", 0, a)
    return first, first + block.text.count("\n", a, b)


def _split_long(text: str, spans: list[tuple[int, int]], size: int) -> Iterator[tuple[int, int]]:
    for a, b in spans:
        while b - a > size:
            cut = text.rfind(" ", a + size // 2, a + size)
            cut = cut if cut > a else a + size
            yield a, cut
            a = cut
        yield a, b


def chunk(document: Document, size: int = CHUNK_CHARS, overlap: int = OVERLAP_CHARS) -> list[Chunk]:
    """Cut ``document`` into chunks of about ``size`` characters that overlap by up to ``overlap``."""
    if size < 50:
        raise ValueError("chunks need at least 50 characters")
    chunks: list[Chunk] = []
    headings: list[tuple[int, str]] = []  # (level, text) of the headings above
    current: list[_Piece] = []

    def close(carry: bool) -> None:
        if not current:
            return
        start, end = current[0].start, current[-1].end
        lines = [p.lines for p in current if p.lines]
        span = (min(a for a, _ in lines), max(b for _, b in lines)) if lines else None
        chunks.append(Chunk(len(chunks), document.text[start:end], start, end,
                            tuple(text for _, text in headings), current[0].page, span))
        kept: list[_Piece] = []
        if carry and overlap:
            for piece in reversed(current[1:] if len(current) > 1 else []):
                if current[-1].end - piece.start > overlap:
                    break
                kept.insert(0, piece)
        current[:] = kept

    for block in document.blocks:
        if block.kind == "heading":
            close(carry=False)
            headings[:] = [h for h in headings if h[0] < block.level] + [(block.level, block.text)]
            continue
        for piece in _pieces(block, size):
            if current and (piece.page != current[-1].page or piece.end - current[0].start > size):
                close(carry=piece.page == current[-1].page)
                if current and piece.end - current[0].start > size:
                    current.clear()
            current.append(piece)
    close(carry=False)
    if not chunks and headings:  # a document of headings only
        text = document.text
        chunks.append(Chunk(0, text, 0, len(text), (), document.blocks[0].page, document.blocks[0].lines))
    return chunks
