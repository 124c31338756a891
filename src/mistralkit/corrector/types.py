"""The data the corrector passes between its parts. Every span is in code points of the text it
belongs to (Python string indices), end exclusive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

Source = Literal["rule", "llm", "lm"]  # lm: chosen by a model's scores (ranking.py), llm: its rewrite


@dataclass(frozen=True)
class Issue:
    """One finding of a rule checker: ``text[start:end]`` and what to put there instead."""

    start: int
    end: int
    message: str
    suggestions: tuple[str, ...] = ()
    rule: str = ""  # the checker's rule id
    kind: str = "grammar"  # grammar, spelling, typography, style
    checker: str = ""


class Checker(Protocol):
    """A rule checker (Grammalecte, LanguageTool): issues of one text, spans in code points."""

    name: str

    def check(self, text: str) -> list[Issue]: ...

    def proper_nouns(self, words: list[str]) -> set[str]:
        """The words its dictionary tags as proper nouns (first names, surnames, places)."""
        ...

    def close(self) -> None: ...


ProtectKind = Literal["number", "date", "time", "amount", "percent", "phone", "email", "url", "name", "user",
                      "invisible"]


@dataclass(frozen=True)
class Protected:
    """A span no correction may change: ``text[start:end] == value``."""

    start: int
    end: int
    value: str
    kind: ProtectKind
    source: str = "regex"  # regex, spacy, dictionary, user


@dataclass(frozen=True)
class Edit:
    """One change from the original text: ``original[start:end]`` (``before``) became ``after``."""

    start: int
    end: int
    before: str
    after: str
    source: Source
    message: str = ""
    rule: str = ""
    confidence: float = 1.0  # a rule's certainty, or the model's probability of ``after`` against ``before``


@dataclass(frozen=True)
class Refusal:
    """A sentence whose LLM rewrite was not kept: the rules result stands there, for ``reason``."""

    start: int  # the sentence in the rules output
    end: int
    reason: str
    rewrite: str = ""  # what the LLM proposed


@dataclass
class Correction:
    """What ``mistralkit.correct`` returns."""

    text: str  # the input
    corrected: str
    mode: str  # rules, rank or hybrid
    edits: list[Edit] = field(default_factory=list)
    proposed: list[Edit] = field(default_factory=list)  # unsure changes, not applied (spans in ``text``)
    protected: list[Protected] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    issues_left: list[Issue] = field(default_factory=list)  # the checker's findings in ``corrected``
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    checker: str = ""
    model: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def with_unsure(self) -> str:
        """The text with the applied edits and the proposed ones (``--apply-unsure``)."""
        out, at = [], 0
        for edit in sorted([*self.edits, *self.proposed], key=lambda e: (e.start, e.end)):
            if edit.start < at:
                continue  # overlaps one already taken
            out += [self.text[at:edit.start], edit.after]
            at = edit.end
        return "".join(out) + self.text[at:]
