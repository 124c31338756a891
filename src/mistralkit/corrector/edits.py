"""Edits between texts: the rule pass's own, a word-level diff for the LLM's, and both expressed
against the original text.

>>> [(e.before, e.after) for e in diff_edits("il a manger ici", "il a mangé ici", "llm")]
[('manger', 'mangé')]
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import replace

from .types import Edit, Issue, Protected, Source

_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")


def _tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _TOKEN.finditer(text)]


def hunks(before: str, after: str) -> list[tuple[int, int, int, int]]:
    """Word-level changes as (start, end) in ``before`` and (start, end) in ``after``."""
    old, new = _tokens(before), _tokens(after)
    matcher = difflib.SequenceMatcher(None, [before[s:e] for s, e in old], [after[s:e] for s, e in new],
                                      autojunk=False)
    out = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        start = old[i1][0] if i1 < len(old) else len(before)
        end = old[i2 - 1][1] if i2 > i1 else start
        a_start = new[j1][0] if j1 < len(new) else len(after)
        a_end = new[j2 - 1][1] if j2 > j1 else a_start
        out.append((start, end, a_start, a_end))
    return out


def diff_edits(before: str, after: str, source: Source, message: str = "") -> list[Edit]:
    """Word-level changes from ``before`` to ``after`` (spans in ``before``)."""
    return [Edit(s, e, before[s:e], after[a:b], source, message) for s, e, a, b in hunks(before, after)]


def apply(text: str, edits: Sequence[Edit]) -> str:
    """``text`` with non-overlapping ``edits`` (spans in ``text``) applied."""
    out, at = [], 0
    for edit in sorted(edits, key=lambda e: e.start):
        out += [text[at:edit.start], edit.after]
        at = edit.end
    return "".join(out) + text[at:]


def overlaps(start: int, end: int, spans: Sequence[Protected]) -> bool:
    """Does ``[start, end)`` touch a protected span (an empty range inside one counts)?"""
    return any(start < p.end and p.start < end or (start == end and p.start < start < p.end) for p in spans)


def rule_edits(text: str, issues: Sequence[Issue], protected: Sequence[Protected]) -> tuple[list[Edit], list[Issue]]:
    """The first suggestion of every issue that touches no protected span and no earlier pick.

    Returns (edits, the issues left as hints for the LLM: no suggestion, or overlapping a pick).
    Issues on protected spans are dropped altogether: a name is not a spelling mistake.
    """
    edits: list[Edit] = []
    hints: list[Issue] = []
    taken_until = -1
    for issue in sorted(issues, key=lambda i: (i.start, -(i.end - i.start))):
        if overlaps(issue.start, issue.end, protected):
            continue
        before = text[issue.start:issue.end]
        pick = next((s for s in issue.suggestions if s != before), None)
        if pick is None or issue.start < taken_until:
            hints.append(issue)
            continue
        edits.append(Edit(issue.start, issue.end, before, pick, "rule", issue.message, issue.rule))
        taken_until = issue.end
    return edits, hints


class OffsetMap:
    """Positions in a text after ``edits`` back to the text before them (exact at edit boundaries)."""

    def __init__(self, edits: Sequence[Edit]) -> None:
        self.spans: list[tuple[int, int, Edit]] = []  # (start, end) in the edited text
        shift = 0
        for edit in sorted(edits, key=lambda e: e.start):
            start = edit.start + shift
            self.spans.append((start, start + len(edit.after), edit))
            shift += len(edit.after) - (edit.end - edit.start)

    def original(self, pos: int) -> int:
        shift = 0
        for start, end, edit in self.spans:
            if pos < start:
                break
            if pos <= end and pos != start:  # inside or at the end of an edit: its original end
                return edit.end if pos == end else edit.start
            if pos == start:
                return edit.start
            shift += len(edit.after) - (edit.end - edit.start)
        return pos - shift


def combine(original: str, rules: list[Edit], middle: str, final: str, llm_message: str = "") -> list[Edit]:
    """Every edit from ``original`` to ``final``: the rule edits (``original`` -> ``middle``) the LLM kept,
    and the LLM's changes (``middle`` -> ``final``) widened over any rule edit they touch, all in
    ``original``'s coordinates. A rule edit the LLM changed again becomes an llm edit carrying its message.
    """
    mapping = OffsetMap(rules)
    kept = list(rules)
    merged: list[Edit] = []
    for start, end, a_start, a_end in hunks(middle, final):
        touched = [(s, e, edit) for s, e, edit in mapping.spans
                   if s < end and start < e or (start == end and s < start < e)]
        left = max([start - s for s, _, _ in touched] + [0])  # unchanged by the LLM: same text in final
        right = max([e - end for _, e, _ in touched] + [0])
        o_start, o_end = mapping.original(start - left), mapping.original(end + right)
        rules_touched = [edit for _, _, edit in touched]
        kept = [edit for edit in kept if edit not in rules_touched]
        merged.append(Edit(o_start, o_end, original[o_start:o_end], final[a_start - left:a_end + right], "llm",
                           "; ".join(e.message for e in rules_touched if e.message) or llm_message,
                           ",".join(e.rule for e in rules_touched if e.rule)))
    return sorted([*kept, *merged], key=lambda e: (e.start, e.end))


def shift(edits: Sequence[Edit], by: int) -> list[Edit]:
    """Edits of a paragraph moved to the whole text's coordinates."""
    return [replace(e, start=e.start + by, end=e.end + by) for e in edits]
