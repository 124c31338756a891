"""A JSON Schema ``pattern`` (an ECMAScript regular expression) as GBNF for a JSON string's content.

Supported: literals and escapes (``\\d \\w \\s``, their negations, ``\\n \\t \\xHH \\uHHHH``), classes
``[...]`` and ``[^...]``, ``.``, groups ``(...)``, ``(?:...)``, ``(?<name>...)``, alternation, and the
quantifiers ``* + ? {n} {n,} {n,m}`` (a lazy ``?`` after one changes nothing here). ``^`` and ``$``
anchor the ends; without them the pattern may sit anywhere in the string (JSON Schema's rule).
Refused with a message: lookarounds, backreferences, word boundaries, anchors inside the pattern,
and a repeated part that can match nothing (``(a?)*``: llama.cpp refuses it as left recursion, and
a long bounded run of it makes the checker explore every split).

What the grammar writes is the JSON text of the string, so a character JSON must escape (``"``,
``\\``, control characters) is written as its escape; control characters other than ``\\n \\r \\t``
are never written.
"""

from __future__ import annotations

import json

from .gbnf import Grammar, GrammarError, char_class, literal, repeat

MAX_PATTERN = 1000  # characters of one pattern
MAX_GROUP_DEPTH = 32
LAST = 0x10FFFF
DIGIT = [(0x30, 0x39)]
WORD = [(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
SPACE = [(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0)]
NEWLINES = [(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]
WRITTEN_CONTROLS = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "f": 0x0C, "v": 0x0B, "0": 0x00}
SETS = {"d": (DIGIT, False), "D": (DIGIT, True), "w": (WORD, False), "W": (WORD, True),
        "s": (SPACE, False), "S": (SPACE, True)}


def pattern_rule(grammar: Grammar, pattern: str, hint: str, where: str) -> str:
    """A rule matching the JSON text (without quotes) of the strings ``pattern`` matches."""
    if len(pattern) > MAX_PATTERN:
        raise GrammarError(f"the pattern is {len(pattern):,} characters long (at most {MAX_PATTERN:,})", where)
    body = pattern
    anchored_start, anchored_end = body.startswith("^"), body.endswith("$") and not body.endswith("\\$")
    body = body[1 if anchored_start else 0:len(body) - 1 if anchored_end else len(body)]
    parser = _Parser(grammar, body, hint, where)
    symbol, _ = parser.alternation(0)
    if parser.pos != len(body):
        parser.fail("an unmatched ')'")
    if anchored_start and anchored_end:
        return symbol or '""'
    any_char = grammar.add("char", _CHAR, where)
    parts = ([] if anchored_start else [f"{any_char}*"]) + [symbol] + ([] if anchored_end else [f"{any_char}*"])
    return grammar.add(hint, " ".join(part for part in parts if part), where)


_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


class _Parser:
    def __init__(self, grammar: Grammar, text: str, hint: str, where: str) -> None:
        self.grammar, self.text, self.hint, self.where = grammar, text, hint, where
        self.pos = 0

    def fail(self, what: str) -> None:
        raise GrammarError(f"pattern: {what} at character {self.pos + 1} is not supported", self.where)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self) -> str:
        c = self.peek()
        if not c:
            self.fail("an unfinished pattern")
        self.pos += 1
        return c

    # Each method returns (GBNF symbol, whether it can match the empty string).
    def alternation(self, depth: int) -> tuple[str, bool]:
        if depth > MAX_GROUP_DEPTH:
            self.fail(f"groups nested deeper than {MAX_GROUP_DEPTH}")
        branches = [self.sequence(depth)]
        while self.peek() == "|":
            self.pos += 1
            branches.append(self.sequence(depth))
        if len(branches) == 1:
            return branches[0]
        body = " | ".join(symbol or '""' for symbol, _ in branches)
        return self.grammar.add(f"{self.hint}-alt", body, self.where), any(empty for _, empty in branches)

    def sequence(self, depth: int) -> tuple[str, bool]:
        items: list[str] = []
        empty = True
        while self.peek() and self.peek() not in "|)":
            symbol, nullable = self.quantified(depth)
            if symbol:
                items.append(symbol)
            empty = empty and nullable
        if len(items) > 1:
            return self.grammar.add(f"{self.hint}-seq", " ".join(items), self.where), empty
        return (items[0] if items else ""), empty

    def quantified(self, depth: int) -> tuple[str, bool]:
        symbol, nullable = self.atom(depth)
        c = self.peek()
        if c not in ("*", "+", "?", "{") or (c == "{" and not self._counted()):
            return symbol, nullable
        low, high = self.quantifier()
        if self.peek() == "?":  # lazy: the same strings
            self.pos += 1
        if not symbol:
            return "", True
        if nullable and (high is None or high > 1):
            self.fail("a repeated part that can match nothing")
        return repeat(self.grammar, symbol, low, high, f"{self.hint}-rep", self.where), low == 0 or nullable

    def _counted(self) -> bool:
        """Whether a ``{`` here starts a quantifier (ECMAScript reads ``{`` literally otherwise)."""
        end = self.text.find("}", self.pos)
        inner = self.text[self.pos + 1:end] if end > 0 else ""
        low, _, high = inner.partition(",")
        return bool(low.isdigit() and (high == "" or high.isdigit()))

    def quantifier(self) -> tuple[int, int | None]:
        c = self.take()
        if c in "*+?":
            return {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
        end = self.text.index("}", self.pos)
        low, comma, high = self.text[self.pos:end].partition(",")
        self.pos = end + 1
        if len(low) > 7 or len(high) > 7:
            self.fail("a count above 9,999,999")
        return int(low), (int(high) if high else None) if comma else int(low)

    def atom(self, depth: int) -> tuple[str, bool]:
        c = self.take()
        if c == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.text.startswith("?<", self.pos) and not self.text.startswith(("?<=", "?<!"), self.pos):
                close = self.text.find(">", self.pos)
                if close < 0:
                    self.fail("an unfinished group name")
                self.pos = close + 1
            elif self.peek() == "?":
                self.fail("a lookaround")
            inner = self.alternation(depth + 1)
            if self.take() != ")":
                self.fail("an unclosed group")
            return inner
        if c in ")|*+?":
            self.pos -= 1
            self.fail(f"{c!r} with nothing before it")
        if c in "^$":
            self.pos -= 1
            self.fail("an anchor inside the pattern")
        if c == ".":
            return self.chars(_complement(NEWLINES)), False
        if c == "[":
            return self.chars(self.bracket()), False
        if c == "\\":
            ranges, negated = self.escape(in_class=False)
            return self.chars(_complement(ranges) if negated else ranges), False
        return self.chars([(ord(c), ord(c))]), False

    def escape(self, in_class: bool) -> tuple[list[tuple[int, int]], bool]:
        c = self.take()
        if c in SETS:
            return SETS[c]
        if c in ESCAPES and not (c == "0" and self.peek().isdigit()):
            return [(ESCAPES[c], ESCAPES[c])], False
        if c == "b" and in_class:
            return [(0x08, 0x08)], False
        if c in "xu":
            return [(self.hex(c),) * 2], False  # type: ignore[list-item]
        if c.isdigit() or c in "bBkcpP":
            self.pos -= 1
            self.fail(f"the escape \\{c}")
        return [(ord(c), ord(c))], False

    def hex(self, kind: str) -> int:
        if kind == "u" and self.peek() == "{":
            end = self.text.find("}", self.pos)
            digits = self.text[self.pos + 1:end] if end > 0 else ""
            self.pos = end + 1 if end > 0 else self.pos
        else:
            size = 2 if kind == "x" else 4
            digits = self.text[self.pos:self.pos + size]
            self.pos += size
        try:
            code = int(digits, 16)
        except ValueError:
            code = -1
        if not 0 <= code <= LAST or 0xD800 <= code <= 0xDFFF or not digits:
            self.fail(f"the escape \\{kind}{digits}")
        return code

    def bracket(self) -> list[tuple[int, int]]:
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True
        while first or self.peek() != "]":
            first = False
            low = self.class_item()
            if self.peek() == "-" and self.text[self.pos + 1:self.pos + 2] not in ("]", ""):
                self.pos += 1
                high = self.class_item()
                if len(low) != 1 or len(high) != 1 or low[0][0] != low[0][1] or high[0][0] != high[0][1] \
                        or high[0][0] < low[0][0]:
                    self.fail("a bad range in a class")
                ranges.append((low[0][0], high[0][0]))
            else:
                ranges.extend(low)
        self.pos += 1
        return _complement(ranges) if negated else _merge(ranges)

    def class_item(self) -> list[tuple[int, int]]:
        c = self.take()
        if c == "\\":
            ranges, negated = self.escape(in_class=True)
            return _complement(ranges) if negated else ranges
        return [(ord(c), ord(c))]

    def chars(self, ranges: list[tuple[int, int]]) -> str:
        """A symbol writing any of these characters as JSON string text."""
        plain, escaped = [], []
        for low, high in _merge(ranges):
            for special in (0x22, 0x5C, *WRITTEN_CONTROLS):
                if low <= special <= high:
                    escaped.append(literal(json.dumps(chr(special))[1:-1]))
            for a, b in _cut(low, high):
                plain.append((a, b))
        alternatives = ([char_class(plain) if len(plain) > 1 or plain[0][0] != plain[0][1]
                         else literal(chr(plain[0][0]))] if plain else []) + escaped
        if not alternatives:
            self.fail("a class of control characters only")
        if len(alternatives) == 1:
            return alternatives[0]
        return self.grammar.add(f"{self.hint}-chars", " | ".join(alternatives), self.where)


def _cut(low: int, high: int) -> list[tuple[int, int]]:
    """[low, high] without what JSON escapes or what is no character (quote, backslash, controls,
    DEL, surrogates)."""
    out = []
    for a, b in ((0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7E), (0x80, 0xD7FF), (0xE000, LAST)):
        if max(a, low) <= min(b, high):
            out.append((max(a, low), min(b, high)))
    return out


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _complement(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out, start = [], 0
    for low, high in _merge(ranges):
        if low > start:
            out.append((start, low - 1))
        start = high + 1
    if start <= LAST:
        out.append((start, LAST))
    return out
