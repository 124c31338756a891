"""Answers from a collection: the question's best chunks go in the prompt as numbered sources (as
many as the context holds; those left out are named, never cut silently), the model cites them as
``[1]``, ``[2]``, and every citation is checked after generation: a number that was not given, or a
quoted span that is not in the source it cites, is flagged.

>>> from mistralkit.api import load, load_settings  # doctest: +SKIP
>>> with Collection.open("notes") as notes:  # doctest: +SKIP
...     answer = ask(notes, "When was Mr Hartley discharged?", load(load_settings()))
...     [c.problem for c in answer.citations]
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..errors import ContextOverflow
from ..formats.base import Message
from .collection import Collection, Hit
from .store import StoredChunk

INSTRUCTIONS = ("Answer the question using only the numbered sources below. After each statement, cite the "
                "source it comes from by its number in brackets, like [1] or [2]. When you quote a source, put "
                "its exact words in double quotes. If the sources do not contain the answer, say that you do not "
                "know.")
# After the question, where a small model still reads it: SmolLM2-135M cited in 22 answers of 40 with it,
# 1 of 40 with the instructions in the system message alone (bench/docs_quality.py, docs/documents.md).
REMINDER = "Cite the sources you use as [1], [2]."
CITATION = re.compile(r"\[(?:(?:source|doc(?:ument)?)\s*)?(\d{1,3}(?:\s*[,;]\s*\d{1,3})*)\]", re.IGNORECASE)
QUOTE = re.compile(r"\"([^\"\n]{4,}?)\"|“([^”\n]{4,}?)”|«\s*([^»\n]{4,}?)\s*»")
SENTENCE_END = re.compile(r"[.!?](?:\s|$)|\n")


@dataclass(frozen=True)
class Source:
    number: int
    chunk: StoredChunk

    def label(self) -> str:
        head = f" ({self.chunk.heading})" if self.chunk.heading else ""
        return f"{self.chunk.path}, {self.chunk.place}{head}"

    def to_dict(self) -> dict:
        c = self.chunk
        return {"number": self.number, "path": c.path, "place": c.place, "page": c.page,
                "lines": list(c.lines) if c.lines else None, "start": c.start, "end": c.end,
                "heading": c.heading, "text": c.text}


@dataclass(frozen=True)
class Citation:
    """One ``[n]`` in the answer, where it is, and what is wrong with it (``problem`` None when fine)."""

    number: int
    start: int
    end: int
    problem: str | None = None
    quote: str | None = None

    def to_dict(self) -> dict:
        return {"number": self.number, "start": self.start, "end": self.end, "valid": self.problem is None,
                "problem": self.problem, "quote": self.quote}


@dataclass
class Grounded:
    """The prompt for one question: messages, the sources given, and the hits left out for room."""

    messages: list[Message]
    sources: list[Source]
    left_out: list[Hit] = field(default_factory=list)
    dropped_turns: int = 0


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    citations: list[Citation]
    left_out: list[Hit]
    finish_reason: str
    usage: dict

    def to_dict(self) -> dict:
        return {"question": self.question, "text": self.text, "finish_reason": self.finish_reason,
                "sources": [s.to_dict() for s in self.sources],
                "citations": [c.to_dict() for c in self.citations],
                "left_out": [{"path": h.chunk.path, "place": h.chunk.place} for h in self.left_out],
                "usage": self.usage}


def sources_block(sources: Sequence[Source]) -> str:
    return "\n\n".join(f"[{s.number}] {s.label()}\n{s.chunk.text}" for s in sources)


def ground(question: str, hits: Sequence[Hit], count: Callable[[list[Message]], int], n_ctx: int, max_tokens: int,
           system: str | None = None, history: Sequence[Message] = ()) -> Grounded:
    """The messages for ``question`` with as many of ``hits`` (best first) as fit beside ``max_tokens``."""
    head = f"{system}\n\n{INSTRUCTIONS}" if system else INSTRUCTIONS

    def build(sources: list[Source]) -> list[Message]:
        content = f"{head}\n\nSources:\n\n{sources_block(sources)}" if sources else f"{head}\n\nSources: none found."
        asked = f"{question}\n\n{REMINDER}" if sources else question
        return [{"role": "system", "content": content}, *history, {"role": "user", "content": asked}]

    given: list[Source] = []
    left_out: list[Hit] = []
    dropped = 0
    while history and count(build([])) + max_tokens > n_ctx:  # oldest exchanges go first, as in a chat
        history, dropped = history[2:], dropped + 1
    if count(build([])) + max_tokens > n_ctx:
        raise ContextOverflow(f"the question alone does not fit the {n_ctx}-token context beside {max_tokens} "
                              "tokens of answer", hint="raise --ctx or lower --max-tokens")
    for hit in hits:
        trial = [*given, Source(len(given) + 1, hit.chunk)]
        if count(build(trial)) + max_tokens <= n_ctx:
            given = trial
        else:
            left_out.append(hit)
    return Grounded(build(given), given, left_out, dropped)


def _normal(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("’", "'").replace("‘", "'")
    return " ".join(text.lower().split())


def check_citations(text: str, sources: Sequence[Source]) -> list[Citation]:
    """Every ``[n]`` of ``text``: flagged when ``n`` was not given, or when the quote just before it (in
    the same sentence) is not in source ``n``."""
    by_number = {s.number: s for s in sources}
    quotes = [(m.start(), m.end(), next(g for g in m.groups() if g is not None)) for m in QUOTE.finditer(text)]
    found: list[Citation] = []
    for match in CITATION.finditer(text):
        quote = _quote_before(text, match.start(), quotes)
        for part in re.split(r"\s*[,;]\s*", match.group(1)):
            number = int(part)
            source = by_number.get(number)
            problem = None
            if source is None:
                problem = f"cites source {number}, which was not given (sources 1-{len(sources)})" if sources \
                    else f"cites source {number}, but no source was given"
            elif quote is not None and _normal(quote) not in _normal(f"{source.chunk.heading}\n{source.chunk.text}"):
                problem = f"the quote is not in source {number}"
            found.append(Citation(number, match.start(), match.end(), problem, quote))
    return found


def _quote_before(text: str, at: int, quotes: list[tuple[int, int, str]]) -> str | None:
    """The last quote that ends before ``at`` with no sentence end between them."""
    for start, end, quote in reversed(quotes):
        if end <= at:
            return quote if not SENTENCE_END.search(text, end, at) else None
    return None


def ask(collection: Collection, question: str, loaded, *, k: int = 5, mode: str = "hybrid",
        on_text: Callable[[str], None] | None = None, cancel: threading.Event | None = None) -> Answer:
    """Answer ``question`` from ``collection`` with the loaded model; citations checked."""
    from ..api import params_from
    from ..engines import complete

    engine = loaded.engine
    params = params_from(loaded.settings)
    hits = collection.search(question, k=k, mode=mode)
    grounded = ground(question, hits, engine.count_tokens, engine.n_ctx, params.max_tokens, loaded.settings.system)
    result = complete(engine, grounded.messages, params, cancel, on_text)
    return Answer(question, result.text, grounded.sources, check_citations(result.text, grounded.sources),
                  grounded.left_out, result.finish_reason, result.usage.to_dict())


def report_lines(answer_text: str, sources: Sequence[Source], citations: Sequence[Citation],
                 left_out: Sequence[Hit]) -> list[str]:
    """What a person reads under an answer: the sources, then any citation that does not hold."""
    lines = ["Sources:"] + [f"  [{s.number}] {s.label()}" for s in sources] if sources else ["Sources: none found."]
    if left_out:
        lines.append(f"  ({len(left_out)} more passage(s) left out: the context window is full; raise --ctx)")
    cited = {c.number for c in citations if c.problem is None}
    if sources and not citations:
        lines.append("  (the answer cites no source)")
    elif sources and cited:
        lines.append(f"  cited: {', '.join(f'[{n}]' for n in sorted(cited))}")
    for citation in citations:
        if citation.problem:
            quote = f' ("{citation.quote}")' if citation.quote and "quote" in citation.problem else ""
            lines.append(f"  ! [{citation.number}] at character {citation.start}: {citation.problem}{quote}")
    return lines


class DocsChat:
    """Grounds each turn of a chat in a collection: the sources change with every question, the
    history keeps the questions and answers only."""

    def __init__(self, collection: Collection, k: int = 5, mode: str = "hybrid") -> None:
        self.collection = collection
        self.k = k
        self.mode = mode

    def ground(self, question: str, system: str | None, history: Sequence[Message], engine,
               max_tokens: int) -> Grounded:
        hits = self.collection.search(question, k=self.k, mode=self.mode)
        return ground(question, hits, engine.count_tokens, engine.n_ctx, max_tokens, system, history)

    def report(self, text: str, grounded: Grounded) -> list[str]:
        return report_lines(text, grounded.sources, check_citations(text, grounded.sources), grounded.left_out)
