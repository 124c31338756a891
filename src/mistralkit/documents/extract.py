"""Text out of a document, in blocks that keep their place: heading or text, page, lines, characters.

One reader per file type, picked from the extension through ``READERS``. A file that cannot be read
raises ``Unreadable`` with the reason in a few words (binary content, an encrypted PDF, no text layer),
so that a collection reports it and skips it rather than indexing half of it.

>>> doc = extract(Path("notes.md"))  # doctest: +SKIP
>>> doc.blocks[0].kind, doc.blocks[0].lines  # doctest: +SKIP
('heading', (1, 1))
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import ClassVar

from ..errors import MissingDependency, MistralkitError

DOCS_EXTRA = "pip install 'mistralkit[docs]'"
MARKDOWN_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
BLANK_LINES = re.compile(r"\n\s*\n")


class Unreadable(MistralkitError):
    """A file whose text cannot be taken out; ``reason`` is a few words for a report line."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}", hint=None)
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Block:
    """A heading or a paragraph, with where it is: characters in ``Document.text``, page, lines."""

    kind: str  # "heading" or "text"
    text: str
    start: int
    end: int
    page: int | None = None
    lines: tuple[int, int] | None = None
    level: int = 0  # heading depth, 1 for a title


@dataclass(frozen=True)
class Document:
    path: Path
    format: str
    text: str  # the blocks joined by blank lines: what the offsets point into
    blocks: list[Block]
    pages: int | None = None


class _Builder:
    """Joins blocks into one text and records their offsets."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.blocks: list[Block] = []
        self.length = 0

    def add(self, kind: str, text: str, *, page: int | None = None, lines: tuple[int, int] | None = None,
            level: int = 0) -> None:
        text = text.strip()
        if not text:
            return
        if self.parts:
            self.parts.append("\n\n")
            self.length += 2
        self.blocks.append(Block(kind, text, self.length, self.length + len(text), page, lines, level))
        self.parts.append(text)
        self.length += len(text)

    def document(self, path: Path, fmt: str, pages: int | None = None) -> Document:
        if not self.blocks:
            raise Unreadable(path, "no text in it" if fmt != "pdf" else "no text layer (a scanned PDF?)")
        return Document(path, fmt, "".join(self.parts), self.blocks, pages)


def _decode(path: Path, data: bytes) -> str:
    if b"\x00" in data[:65536]:
        raise Unreadable(path, "binary content, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unreadable(path, f"not UTF-8 text (byte {exc.start})") from exc


def read_plain(path: Path, data: bytes) -> Document:
    """Text and Markdown: paragraphs between blank lines, ``#`` lines as headings, line numbers kept."""
    text = _decode(path, data).replace("\r\n", "\n").replace("\r", "\n")
    builder = _Builder()
    markdown = path.suffix.lower() in (".md", ".markdown")
    paragraph: list[str] = []
    first = 0

    def flush(last: int) -> None:
        if paragraph:
            builder.add("text", "\n".join(paragraph), lines=(first, last))
            paragraph.clear()

    for number, line in enumerate(text.split("\n"), 1):
        heading = MARKDOWN_HEADING.match(line) if markdown else None
        if heading:
            flush(number - 1)
            builder.add("heading", heading.group(2), lines=(number, number), level=len(heading.group(1)))
        elif not line.strip():
            flush(number - 1)
        else:
            if not paragraph:
                first = number
            paragraph.append(line.rstrip())
    flush(text.count("\n") + 1)
    return builder.document(path, "markdown" if markdown else "text")


class _HtmlText(HTMLParser):
    """Visible text of a page in blocks; scripts, styles and page furniture (nav, footer) left out."""

    SKIPPED = frozenset({"script", "style", "noscript", "template", "nav", "footer", "head", "svg", "button", "form"})
    BLOCKS = frozenset({"p", "li", "div", "section", "article", "main", "td", "th", "tr", "pre", "blockquote", "dd",
                        "dt", "table", "ul", "ol", "br", "figcaption", "caption", "header", "aside", "body", "html"})
    HEADINGS: ClassVar[dict[str, int]] = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = _Builder()
        self.skipping: list[str] = []
        self.buffer: list[str] = []
        self.heading = 0

    def flush(self) -> None:
        text = " ".join("".join(self.buffer).split())
        self.buffer.clear()
        if text:
            self.builder.add("heading" if self.heading else "text", text, level=self.heading)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if self.skipping:
            if tag in self.SKIPPED:
                self.skipping.append(tag)
            return
        if tag in self.SKIPPED:
            self.flush()
            self.skipping.append(tag)
        elif tag in self.HEADINGS:
            self.flush()
            self.heading = self.HEADINGS[tag]
        elif tag in self.BLOCKS:
            self.flush()

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if tag in self.HEADINGS:
            self.flush()
            self.heading = 0
        elif tag in self.BLOCKS:
            self.flush()

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.buffer.append(data)


def read_html(path: Path, data: bytes) -> Document:
    text = _decode(path, data)
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    parser.flush()
    return parser.builder.document(path, "html")


def _paragraphs(text: str) -> Iterable[str]:
    """A PDF page's text in paragraphs: blank lines where the PDF has them, else the whole page."""
    for part in BLANK_LINES.split(text):
        part = "\n".join(line.strip() for line in part.splitlines() if line.strip())
        if part:
            yield part


def read_pdf(path: Path, data: bytes) -> Document:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as exc:
        raise MissingDependency("reading PDFs needs pypdf, which is not installed", hint=DOCS_EXTRA) from exc
    import io
    import logging

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # malformed-but-readable files warn on every page
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable(path, "encrypted PDF (a password is needed)")
        builder = _Builder()
        for number, page in enumerate(reader.pages, 1):
            for paragraph in _paragraphs(page.extract_text() or ""):
                builder.add("text", paragraph, page=number)
        pages = len(reader.pages)
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, NotImplementedError) as exc:
        encrypted = "decrypt" in str(exc).lower() or "crypt" in type(exc).__name__.lower()
        reason = "encrypted PDF (a password is needed)" if encrypted else f"not a readable PDF ({exc})"
        raise Unreadable(path, reason) from exc
    return builder.document(path, "pdf", pages)


def read_docx(path: Path, data: bytes) -> Document:
    try:
        import docx
    except ImportError as exc:
        raise MissingDependency("reading DOCX files needs python-docx, which is not installed",
                                hint=DOCS_EXTRA) from exc
    import io

    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise Unreadable(path, "not a readable DOCX (Word) file") from exc
    builder = _Builder()
    for paragraph in document.paragraphs:
        style = (paragraph.style.name if paragraph.style is not None else "") or ""
        level = _docx_heading_level(style)
        builder.add("heading" if level else "text", paragraph.text, level=level)
    for table in document.tables:
        for row in table.rows:
            builder.add("text", " | ".join(cell.text.strip() for cell in row.cells if cell.text.strip()))
    return builder.document(path, "docx")


def _docx_heading_level(style: str) -> int:
    if style == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", style)
    return int(match.group(1)) if match else 0


READERS: dict[str, Callable[[Path, bytes], Document]] = {
    ".txt": read_plain, ".text": read_plain, ".md": read_plain, ".markdown": read_plain,
    ".html": read_html, ".htm": read_html, ".pdf": read_pdf, ".docx": read_docx,
}


def supported(path: Path) -> bool:
    return path.suffix.lower() in READERS


def extract(path: Path, data: bytes | None = None) -> Document:
    """The text of ``path`` (its bytes may be passed when already read) in located blocks."""
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise Unreadable(path, f"{path.suffix or 'no extension'} files are not read "
                               f"(supported: {', '.join(sorted(set(READERS)))})")
    if data is None:
        data = path.read_bytes()
    if not data.strip():
        raise Unreadable(path, "empty file")
    return reader(path, data)
