"""French sentence and paragraph boundaries, by a small scan (no model).

A span is ``(start, end)`` in code points, end exclusive; spans never hold leading or trailing
whitespace, and what lies between two spans is whitespace only, so the text is the spans joined
with the gaps.

>>> text = "M. Leblanc arrive à 14h30. Il paie 12,50 € !"
>>> [text[s:e] for s, e in sentence_spans(text)]
['M. Leblanc arrive à 14h30.', 'Il paie 12,50 € !']
"""

from __future__ import annotations

import re

# Never end a sentence: titles before a name, and shortenings that stand inside one.
TITLES = frozenset("M MM Mme Mmes Mlle Mlles Dr Drs Pr Me Mgr St Ste Sr Vve".split())
ABBREVIATIONS = frozenset(
    "cf ex env vol chap fig art av apr éd coll tél resp ibid op cit approx réf cie Cie hab suiv sq vs".split())
# "etc." ends a sentence only when a capital follows.
ETC = "etc"

# A run of final marks, with the closing quotes or brackets that belong to it ("Oui ! »", 'dit."').
_END = re.compile(r"[.!?…]+(?:[ \u00a0\u202f]*[»”]|[\"’')\]])*")
_WORD_BEFORE = re.compile(r"(\w+)$")
_WORD = re.compile(r"\w+")
# An opening quote: « and “ always; a straight " only after a space or the line start, before a word.
_OPENING = re.compile(r"[«“][ \u00a0\u202f]*|(?:(?<=\s)|^)\"(?=\w)", re.MULTILINE)


def _stripped(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _is_boundary(line: str, mark: re.Match) -> bool:
    after = line[mark.end():]
    if after and not after[0].isspace():
        return False  # 3.5, 14.30, www.site.fr, jean@x.fr: no space, no boundary
    following = after.lstrip()
    if not following:
        return True
    upcoming = following[0]
    punct = mark.group()
    if punct.startswith(("!", "?", "…", "..")):
        return not upcoming.islower()  # « Quoi ? » demanda-t-il ; il hésita… puis partit
    before = _WORD_BEFORE.search(line, 0, mark.start())
    if before is None:
        return True
    word = before.group(1)
    if word in TITLES or word in ABBREVIATIONS:
        return False  # M. Leblanc, p. ex.
    if len(word) == 1 and (word.isupper() or not line[:before.start()][-1:].strip()):
        return False  # J. K. Rowling, J.-C., p. 12 (but www.site.fr/a.b. ends one)
    if word == ETC:
        return upcoming.isupper()
    if word.isdigit() and not line[:before.start()].strip():
        return False  # "1. Acheter du pain": a list number, not a sentence
    return True


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """The sentences of ``text``: a new line always ends one; ., !, ?, … end one unless they
    belong to an abbreviation ("M.", "etc.", "p. ex."), a number ("12,50", "3.5") or an address."""
    spans: list[tuple[int, int]] = []
    offset = 0
    for line in text.split("\n"):
        start = 0
        for mark in _END.finditer(line):
            if _is_boundary(line, mark):
                if (span := _stripped(line, start, mark.end())) is not None:
                    spans.append((offset + span[0], offset + span[1]))
                start = mark.end()
        if (span := _stripped(line, start, len(line))) is not None:
            spans.append((offset + span[0], offset + span[1]))
        offset += len(line) + 1
    return spans


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """The paragraphs of ``text``: runs of lines separated by blank (whitespace-only) lines."""
    spans: list[tuple[int, int]] = []
    offset, start, end = 0, None, None
    for line in text.split("\n"):
        if line.strip():
            span = _stripped(line, 0, len(line))
            assert span is not None
            if start is None:
                start = offset + span[0]
            end = offset + span[1]
        elif start is not None:
            spans.append((start, end))
            start = None
        offset += len(line) + 1
    if start is not None:
        spans.append((start, end))
    return spans


def sentence_starts(text: str) -> set[int]:
    """Offsets of the words where French expects a capital anyway: the first word of each sentence
    and the first word inside an opening quote. A capital there says nothing about a name."""
    starts = set()
    for start, end in sentence_spans(text):
        if (word := _WORD.search(text, start, end)) is not None:
            starts.add(word.start())
    for quote in _OPENING.finditer(text):
        if quote.end() < len(text) and text[quote.end()].isalnum():
            starts.add(quote.end())
    return starts


def pieces(text: str, limit: int) -> list[tuple[int, int]]:
    """``text`` (one paragraph) as spans of at most ``limit`` characters: whole sentences where they
    fit, a longer sentence cut at spaces (or, with none, anywhere). Correcting a long paragraph piece
    by piece keeps the work linear in its length and lets it stop between pieces."""
    out: list[tuple[int, int]] = []
    for start, end in sentence_spans(text):
        while end - start > limit:
            cut = text.rfind(" ", start + 1, start + limit)
            cut = cut if cut > start else start + limit
            out.append((start, cut))
            start = cut
            while start < end and text[start].isspace():
                start += 1
        if start < end:
            if out and end - out[-1][0] <= limit and out[-1][1] - out[-1][0] < limit:
                out[-1] = (out[-1][0], end)  # joins the previous piece
            else:
                out.append((start, end))
    return out


def correction_spans(text: str, limit: int) -> list[tuple[int, int]]:
    """What is corrected at once, in order: each paragraph, or its ``pieces`` when it is longer."""
    return [(start + a, start + b) for start, end in paragraph_spans(text) for a, b in pieces(text[start:end], limit)]
