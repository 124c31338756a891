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

from .guards import edit_distance, fold
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
    """One round of the rule pass: the best suggestion of each issue that touches no protected span,
    keeping picks at least a word apart (neighbouring findings often describe one mistake: "a
    manger" is flagged twice, and fixing both gives "à mangé"); the rest waits for the next round.

    Returns (edits, the issues left as hints for the LLM: no usable suggestion, or set aside).
    Issues on protected spans are dropped altogether: a name is not a spelling mistake.
    """
    words = [m.span() for m in re.finditer(r"\w+", text)]
    edits: list[Edit] = []
    hints: list[Issue] = []
    taken: list[tuple[int, int]] = []  # word index ranges of the picks, and of the picks put off
    renamed = [i.start for i in issues if _renames(text, i)]
    for issue in sorted(issues, key=lambda i: (_priority(i), i.start)):
        if overlaps(issue.start, issue.end, protected) or looks_like_a_name(text, issue):
            continue
        before = text[issue.start:issue.end]
        pick = best_suggestion(before, issue, text)
        agreement = _agreement(issue)
        if pick is not None and agreement and _swaps_determiner(before, pick) and not any(
                issue.end < start <= issue.end + 1 for start in renamed):
            pick = None
        if pick is not None and agreement and issue.start in renamed:
            pick = None
        first, last = _word_range(words, issue.start, issue.end)
        near = any(first <= b + 1 and a - 1 <= last for a, b in taken)
        if pick is None or near:
            if near and pick is not None:  # it waits for the next round; so do the findings beside it,
                taken.append((first, last))  # or one of them is fixed first ("son allé": "allé" -> "aller")
            hints.append(issue)
            continue
        edits.append(Edit(issue.start, issue.end, before, pick, "rule", issue.message, issue.rule,
                          certainty(before, issue, pick)))
        taken.append((first, last))
    return sorted(edits, key=lambda e: e.start), hints


# Grammalecte makes a determiner agree with the noun after it; in a pupil's text the noun is the
# likelier mistake ("la rentré" -> "la rentrée", not "le rentré"), so such a swap is only a hint.
DETERMINERS = frozenset("le la les l un une mon ma mes ton ta tes son sa ses ce cet cette ces".split())


def _agreement(issue: Issue) -> bool:
    return issue.kind != "spelling" and "conf" not in issue.rule and issue.checker != "mistralkit"


def _renames(text: str, issue: Issue) -> bool:
    """An agreement fix that swaps the word for another one rather than inflecting it ("Le maîtresse"
    -> "Le maître"): the determiner beside it is then the likelier mistake ("La maîtresse")."""
    before = text[issue.start:issue.end]
    if not _agreement(issue) or not issue.suggestions or fold(before).strip() in DETERMINERS:
        return False
    return edit_distance(fold(before), fold(issue.suggestions[0])) > 2  # more than an ending


def _swaps_determiner(before: str, after: str) -> bool:
    return before.lower().strip("'’") in DETERMINERS and after.lower().strip("'’") in DETERMINERS


def _priority(issue: Issue) -> int:
    """Which of two neighbouring findings to trust first: spelling, then agreement, then confusions."""
    if issue.kind == "spelling" or issue.checker == "mistralkit":  # ours look at the words around
        return 0
    return 2 if "conf" in issue.rule else 1


def _word_range(words: list[tuple[int, int]], start: int, end: int) -> tuple[int, int]:
    inside = [i for i, (s, e) in enumerate(words) if s < end and start < e]
    if inside:
        return inside[0], inside[-1]
    before = sum(1 for s, _ in words if s < start)
    return before, before - 1


def best_suggestion(before: str, issue: Issue, text: str) -> str | None:
    """The checker's first suggestion, unless another only adds accents or spaces ("tres" -> "très",
    "parceque" -> "parce que"); in the apostrophe style of the text; None when there is none to use."""
    options = [s for s in issue.suggestions if s and s != before]
    if not options:
        return None
    pick = next((s for s in options if fold(s) == fold(before)), options[0])
    if issue.kind == "spelling":  # the nearest spelling, then the checker's order ("abite" -> "habite")
        pick = min(options, key=lambda s: (edit_distance(fold(s), fold(before)), s != pick))
    if "’" in pick and "’" not in text:
        pick = pick.replace("’", "'")
    return pick if pick != before else None


def looks_like_a_name(text: str, issue: Issue) -> bool:
    """A spelling finding on a capitalised word inside a sentence: a name the dictionary and the NER
    model do not know ("la tablette de Malo" -> "Mal"), not a mistake."""
    word = text[issue.start:issue.end]
    if issue.kind != "spelling" or not word[:1].isupper() or " " in word.strip():
        return False
    before = text[:issue.start].rstrip(" \t\u00a0«\"'(“")
    return bool(before) and before[-1] not in ".!?…:\n"


def certainty(before: str, issue: Issue, pick: str) -> float:
    """How sure a rule fix is: a grammar rule's or ours 0.95; a spelling fix with one suggestion, or one
    that only adds accents or spaces, 0.85; the nearest of several spellings, a guess, 0.6."""
    if issue.kind != "spelling":
        return 0.95
    options = [s for s in issue.suggestions if s and s != before]
    return 0.85 if len(options) == 1 or fold(pick) == fold(before) else 0.6


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


def combine(original: str, earlier: list[Edit], middle: str, final: str, source: Source = "llm",
            stage: Sequence[Edit] = (), message: str = "") -> list[Edit]:
    """Every edit from ``original`` to ``final``: the ``earlier`` edits (``original`` -> ``middle``) still
    standing, and the changes from ``middle`` to ``final`` (labelled ``source``, with the message of the
    ``stage`` edit that made them, spans in ``middle``), widened over any earlier edit they touch, all in
    ``original``'s coordinates. An earlier edit changed again becomes part of the new one.
    """
    mapping = OffsetMap(earlier)
    groups: list[list] = []  # [start, end, a_start, a_end, touched edits] in middle/final coordinates
    for start, end, a_start, a_end in hunks(middle, final):
        touched = [(s, e, edit) for s, e, edit in mapping.spans
                   if s < end and start < e or (start == end and s < start < e)]
        left = max([start - s for s, _, _ in touched] + [0])  # unchanged in this stage: same text in final
        right = max([e - end for _, e, _ in touched] + [0])
        group = [start - left, end + right, a_start - left, a_end + right, [edit for _, _, edit in touched]]
        if groups and groups[-1][1] > group[0]:  # two changes inside one earlier edit: one edit
            last = groups[-1]
            if group[1] >= last[1]:  # between changes the text is the same, so ends map one to one
                last[1], last[3] = group[1], group[3]
            last[4] += [e for e in group[4] if e not in last[4]]
        else:
            groups.append(group)
    touched_all = [edit for group in groups for edit in group[4]]
    merged = []
    for start, end, a_start, a_end, touched in groups:
        o_start, o_end = mapping.original(start), mapping.original(end)
        makers = [e for e in stage if e.start < end and start < e.end or e.start == e.end == start] + touched
        merged.append(Edit(o_start, o_end, original[o_start:o_end], final[a_start:a_end], source,
                           "; ".join(dict.fromkeys(e.message for e in makers if e.message)) or message,
                           ",".join(dict.fromkeys(e.rule for e in makers if e.rule)),
                           min((e.confidence for e in makers), default=1.0)))
    kept = [edit for edit in earlier if edit not in touched_all]
    return sorted([*kept, *merged], key=lambda e: (e.start, e.end))


def shift(edits: Sequence[Edit], by: int) -> list[Edit]:
    """Edits of a paragraph moved to the whole text's coordinates."""
    return [replace(e, start=e.start + by, end=e.end + by) for e in edits]
