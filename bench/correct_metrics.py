"""Scores of a French corrector on (text, reference, output) triples, for bench/correct_quality.py.

Words are whitespace tokens with leading and trailing punctuation split off ("chat." -> "chat",
"."; "l'école" and "12,50" stay whole), so a missing comma or a wrong accent is one word error
either way. The typographic apostrophe counts as the straight one in words and exact matches
("J’ai" = "J'ai": both are right, and Grammalecte suggests the first); protected strings are
compared byte for byte.

- word errors: align text -> reference with difflib; every reference word that text does not match,
  and every gap where text has words the reference lacks, is an error slot. The output is aligned to
  the reference the same way: ``fixed`` = error slots the output gets right, ``introduced`` = slots
  text had right and the output gets wrong.
- edits: word-level changes text -> output (proposed) and text -> reference (gold), equal-length
  replacements split word by word; a proposed edit is right when the gold set has the same one.
- protected: a protected string is altered when its count (whole words only: "3" is not counted
  inside "13") differs between text and output.

>>> word_errors("les chat noir", "les chats noirs", "les chats noir")
WordErrors(errors=2, fixed=1, introduced=0)
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from pathlib import Path

# The error kinds a sentence of the evaluation set may carry ("correct": reference == text).
TAGS = ("phonetic", "homophone", "agreement", "participle", "accent", "split-merge", "elision",
        "capital", "punctuation", "correct")
LEADING = "«(\"'[“"
TRAILING = ".,;:!?…)»\"]”"

Edit = tuple[int, int, tuple[str, ...]]  # text words [start, end) become these words


def same_apostrophes(text: str) -> str:
    return text.replace("\u2019", "'")


def words(text: str) -> list[str]:
    """Whitespace tokens, with leading and trailing punctuation as tokens of their own."""
    out: list[str] = []
    for token in same_apostrophes(text).split():
        head = len(token) - len(token.lstrip(LEADING))
        body = token[head:].rstrip(TRAILING)
        tail = token[head + len(body):]
        out += list(token[:head]) + ([body] if body else []) + list(tail)
    return out


def _opcodes(a: Sequence[str], b: Sequence[str]):
    return SequenceMatcher(None, a, b, autojunk=False).get_opcodes()


def error_slots(source: Sequence[str], reference: Sequence[str]) -> set[tuple[str, int]]:
    """Where ``source`` differs from ``reference``: ("word", j) for reference word j, ("gap", j) for
    extra source words before reference word j."""
    slots: set[tuple[str, int]] = set()
    for op, i1, i2, j1, j2 in _opcodes(source, reference):
        if op == "delete":
            slots.add(("gap", j1))
        elif op != "equal":
            slots.update(("word", j) for j in range(j1, j2))
    return slots


@dataclass(frozen=True)
class WordErrors:
    errors: int  # error slots in the text
    fixed: int  # of those, right in the output
    introduced: int  # right in the text, wrong in the output


def word_errors(text: str, reference: str, output: str) -> WordErrors:
    ref = words(reference)
    before, after = error_slots(words(text), ref), error_slots(words(output), ref)
    return WordErrors(len(before), len(before - after), len(after - before))


def edits(source: Sequence[str], target: Sequence[str]) -> set[Edit]:
    """The word-level changes source -> target; a replacement of n words by n words is n edits."""
    out: set[Edit] = set()
    for op, i1, i2, j1, j2 in _opcodes(source, target):
        if op == "equal":
            continue
        if op == "replace" and i2 - i1 == j2 - j1:
            out.update((i1 + k, i1 + k + 1, (target[j1 + k],)) for k in range(i2 - i1))
        else:
            out.add((i1, i2, tuple(target[j1:j2])))
    return out


@dataclass(frozen=True)
class EditCounts:
    right: int  # proposed edits that are also gold edits
    proposed: int  # text -> output
    gold: int  # text -> reference


def edit_counts(text: str, reference: str, output: str) -> EditCounts:
    source = words(text)
    proposed, gold = edits(source, words(output)), edits(source, words(reference))
    return EditCounts(len(proposed & gold), len(proposed), len(gold))


def precision_recall_f(right: int, proposed: int, gold: int,
                       beta: float = 0.5) -> tuple[float, float, float]:
    """P, R and F-beta; P = 1 with nothing proposed, R = 1 with nothing to find (as in M2)."""
    p = right / proposed if proposed else 1.0
    r = right / gold if gold else 1.0
    b2 = beta * beta
    f = (1 + b2) * p * r / (b2 * p + r) if p + r else 0.0
    return p, r, f


def count_occurrences(text: str, value: str) -> int:
    """Occurrences of ``value`` in ``text`` that no letter or digit glues to a word."""
    if not value:
        return 0
    head = r"(?<!\w)" if value[0].isalnum() else ""
    tail = r"(?!\w)" if value[-1].isalnum() else ""
    return len(re.findall(head + re.escape(value) + tail, text))


def protected_altered(text: str, output: str, protected: Iterable[str]) -> list[str]:
    """The protected strings whose count in ``output`` differs from their count in ``text``."""
    return [p for p in protected if count_occurrences(output, p) != count_occurrences(text, p)]


def revert_reasons(reasons: Iterable[str]) -> Counter[str]:
    """Guard refusals grouped by the part of their reason before ":" ("protected: Lyon" ->
    "protected"), also cut before a number or a bracket ("length ratio 0.63 outside [0.77, 1.30]"
    -> "length ratio")."""
    return Counter(re.split(r"[:(\[\d]", reason, maxsplit=1)[0].strip() or reason
                   for reason in reasons)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between order statistics; the median at q = 50."""
    if not values:
        return None
    ordered = sorted(values)
    at = (len(ordered) - 1) * q / 100
    low = int(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


def score(rows: Sequence[dict], outputs: Sequence[str]) -> dict:
    """Corpus scores of ``outputs`` (one per row of the evaluation set, same order)."""
    errors = fixed = introduced = right = proposed = gold = exact = 0
    altered: list[dict] = []
    for row, output in zip(rows, outputs, strict=True):
        w = word_errors(row["text"], row["reference"], output)
        e = edit_counts(row["text"], row["reference"], output)
        errors, fixed, introduced = errors + w.errors, fixed + w.fixed, introduced + w.introduced
        right, proposed, gold = right + e.right, proposed + e.proposed, gold + e.gold
        exact += same_apostrophes(output).strip() == same_apostrophes(row["reference"]).strip()
        altered += [{"id": row["id"], "value": p, "text": count_occurrences(row["text"], p),
                     "output": count_occurrences(output, p)}
                    for p in protected_altered(row["text"], output, row["protected"])]
    p, r, f = precision_recall_f(right, proposed, gold)
    return {"sentences": len(rows), "exact": exact, "word_errors": errors, "fixed": fixed,
            "introduced": introduced, "fixed_pct": 100 * fixed / errors if errors else 0.0,
            "introduced_pct": 100 * introduced / errors if errors else 0.0,
            "edits_right": right, "edits_proposed": proposed, "edits_gold": gold,
            "precision": p, "recall": r, "f05": f, "protected_altered": len(altered),
            "protected_altered_list": altered}


# --- the evaluation set --------------------------------------------------------------------------

def load_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def problems(rows: Sequence[dict]) -> list[str]:
    """What is wrong with an evaluation set (empty when it is valid)."""
    found, seen = [], set()
    for n, row in enumerate(rows, 1):
        where = f"line {n} ({row.get('id')})"
        if set(row) != {"id", "text", "reference", "protected", "tags"}:
            found.append(f"{where}: keys {sorted(row)}")
            continue
        if row["id"] in seen:
            found.append(f"{where}: duplicate id")
        seen.add(row["id"])
        if not row["tags"] or not set(row["tags"]) <= set(TAGS):
            found.append(f"{where}: tags {row['tags']} not in {TAGS}")
        if ("correct" in row["tags"]) != (row["text"] == row["reference"]) or (
                "correct" in row["tags"] and len(row["tags"]) > 1):
            found.append(f"{where}: 'correct' must be the only tag, exactly when reference == text")
        for value in row["protected"]:
            counts = (count_occurrences(row["text"], value),
                      count_occurrences(row["reference"], value))
            if counts[0] != counts[1] or not counts[0]:
                found.append(f"{where}: protected {value!r} occurs {counts[0]} times in text, "
                             f"{counts[1]} in reference")
    return found
