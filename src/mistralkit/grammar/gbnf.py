"""Writing GBNF that llama.cpp parses within known limits: rules, escaped literals and classes,
bounded repetitions, and a budget that every grammar is built under.

llama.cpp's grammar parser and checker are recursive and superlinear in places (measured on the
vendored llama.cpp, docs/grammars.md): parentheses nested ~20,000 deep overflow an 8 MB stack
(SIGSEGV); a chain of 10,000 rules that each start with the next costs 3 s and 700 MB to set up,
50,000 cost 108 s and 14.6 GB; ``x{m,n}`` above 2,000 is refused, or silently unbounded. So a
grammar here never nests parentheses deeper than a few levels per rule (each schema node and
pattern group is a rule of its own), keeps chains of leading rule references to the schema's own
bounded depth, spells a repetition ``x{m,n}`` only up to ``SPELLED`` and writes larger ones as
blocks of blocks (``x{0,20000}`` becomes ``B{0,140} x{0,141} | B{141} x{0,...}`` with ``B ::= x{141}``:
a few hundred rules instead of 20,000), and counts what llama.cpp will expand against ``Budget``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..errors import InvalidParameter

SPELLED = 1000  # largest count written as x{m,n}; llama.cpp refuses above 2000 (MAX_REPETITION_THRESHOLD)
MAX_BOUND = 100_000  # largest minLength/maxLength/minItems/maxItems (or pattern count) a grammar enforces
MAX_ELEMENTS = 200_000  # grammar elements llama.cpp may allocate for one grammar (repetitions expanded)


class GrammarError(InvalidParameter):
    """A schema (or pattern) that cannot be, or may not be, turned into a grammar; ``where`` is the
    path inside the schema (``properties.name.maxLength``), empty for the root."""

    def __init__(self, message: str, where: str = "", hint: str | None = None) -> None:
        shown = where if len(where) <= 120 else f"{where[:50]}...{where[-50:]}"
        super().__init__(f"{shown}: {message}" if where else message, hint)
        self.where, self.reason = where, message


@dataclass
class Budget:
    """What one grammar may cost; every rule and repetition is charged as it is written."""

    elements: int = 0
    limit: int = MAX_ELEMENTS

    def charge(self, elements: int, where: str) -> None:
        self.elements += elements
        if self.elements > self.limit:
            raise GrammarError(f"the schema needs a grammar of more than {self.limit:,} elements",
                               where, hint="use fewer properties, shorter enums or smaller length/item bounds")


@dataclass
class Grammar:
    """Named rules; ``add`` returns a rule's name (an identical body gets the name it already has)."""

    budget: Budget = field(default_factory=Budget)
    rules: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # body -> name

    def add(self, hint: str, body: str, where: str = "") -> str:
        if body in self.names:
            return self.names[body]
        name = self.fresh(hint)
        self.define(name, body, where)
        return name

    def fresh(self, hint: str) -> str:
        base = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in hint).strip("-") or "r"
        base = base[:40].lower()
        name, n = base, 1
        while name in self.rules or name in RESERVED:
            n += 1
            name = f"{base}-{n}"
        self.rules[name] = ""  # reserved until defined (a recursive $ref refers to it meanwhile)
        return name

    def define(self, name: str, body: str, where: str = "") -> None:
        self.budget.charge(len(body) // 2 + 1, where)
        self.rules[name] = body
        self.names.setdefault(body, name)

    def text(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        return "\n".join(lines) + "\n"


RESERVED = {"root"}


def literal(text: str) -> str:
    """``text`` as a GBNF string literal (quotes, backslashes and control characters escaped)."""
    return '"' + "".join(_char(c, '"\\') for c in text) + '"'


def char_class(ranges: list[tuple[int, int]], negated: bool = False) -> str:
    """A GBNF character class of code point ranges (inclusive)."""
    special = "]\\-^"
    parts = []
    for low, high in ranges:
        first, last = _char(chr(low), special), _char(chr(high), special)
        parts.append(first if low == high else f"{first}-{last}")
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def _char(c: str, special: str) -> str:
    code = ord(c)
    if c in special:
        return "\\" + c
    if c == "\n":
        return "\\n"
    if c == "\r":
        return "\\r"
    if c == "\t":
        return "\\t"
    if code < 0x20 or code == 0x7F:
        return f"\\x{code:02X}"
    if 0xD800 <= code <= 0xDFFF:
        raise GrammarError("a lone surrogate (\\u%04x) is not text" % code)
    return c


def repeat(grammar: Grammar, item: str, low: int, high: int | None, hint: str, where: str) -> str:
    """A GBNF sequence matching ``item`` (one symbol: a rule name, literal or class) ``low`` to
    ``high`` times (None: no upper bound), never spelling a count above ``SPELLED``."""
    if low < 0 or (high is not None and high < low):
        raise GrammarError(f"no count lies between {low} and {high}", where)
    for bound in (low, high):
        if bound is not None and bound > MAX_BOUND:
            raise GrammarError(f"{bound:,} is above {MAX_BOUND:,}, the largest count a grammar enforces", where,
                               hint="lower it, or leave the bound out and check the answer afterwards")
    head = _exactly(grammar, item, low, hint, where)
    if high is None:
        grammar.budget.charge(4, where)
        return _join(head, f"{item}*")
    return _join(head, _up_to(grammar, item, high - low, hint, where))


def _exactly(grammar: Grammar, item: str, count: int, hint: str, where: str) -> str:
    if count == 0:
        return ""
    if count == 1:
        return item
    if count <= SPELLED:
        grammar.budget.charge(count, where)
        return f"{item}{{{count}}}"
    side = math.isqrt(count)
    block = grammar.add(f"{hint}-block", f"{item}{{{side}}}", where)
    return _join(
        _exactly(grammar, block, count // side, hint, where), _exactly(grammar, item, count % side, hint, where)
    )


def _up_to(grammar: Grammar, item: str, count: int, hint: str, where: str) -> str:
    """``item`` 0 to ``count`` times."""
    if count == 0:
        return ""
    if count == 1:
        return f"{item}?"
    if count <= SPELLED:
        grammar.budget.charge(3 * count, where)
        return f"{item}{{0,{count}}}"
    # count = side * blocks + rest: fewer than `blocks` whole blocks then any tail below a block, or
    # exactly `blocks` blocks then a tail up to `rest`. Both branches spell counts of at most ~sqrt.
    side = math.isqrt(count)
    blocks, rest = divmod(count, side)
    block = grammar.add(f"{hint}-block", f"{item}{{{side}}}", where)
    fewer = _join(_up_to(grammar, block, blocks - 1, hint, where), _up_to(grammar, item, side - 1, hint, where))
    full = _join(_exactly(grammar, block, blocks, hint, where), _up_to(grammar, item, rest, hint, where))
    return grammar.add(f"{hint}-upto", f"{fewer} | {full}", where)


def _join(*parts: str) -> str:
    return " ".join(part for part in parts if part)
