"""Cheap quality gates for a submitted case: length bounds, prose (not fields, numbers or the
instructions copied back), the spec's language, the target's numbers, in context, near-duplicates.

Prose: the share of the text's characters in lines that read as sentences (4 words or more, at
least 60 % of them words of letters) must reach ``spec.min_prose``; tokens that are numbers, e-mails,
paths or codes must stay under ``spec.max_data_share``; no run of ``spec.max_copied_words`` words may
come from the instruction's own fixed text (a model that echoes its prompt); with ``spec.language``
(en, fr), about one word in twelve must be one of that language's commonest words.

Numbers match in the usual French and English renderings: ``1250`` = ``1 250`` = ``1,250`` = ``1.250``
(thin and no-break spaces too) and ``84.5`` = ``84,5`` = ``84.50``.

Values in context: a target number counts where it stands in a sentence (the text cut at line breaks
and after . ! ? …) that has at least ``CONTEXT_WORDS`` (3) words besides labels (a word right before
``:`` or ``=``), and more words than data (number runs, e-mails, codes). A number on a line of its own,
in a list of numbers or in a ``label: value`` line has no context. The share of target numbers that
appear only out of context must stay at or under ``spec.max_out_of_context`` (0.25: one in four, such
as a reference on a signature line). Near-duplicates: word 5-gram
shingles, Jaccard at or above ``spec.near_duplicate`` against every case already in the index. The
index finds candidates with MinHash (64 hashes, LSH in 16 bands of 4: a pair at Jaccard 0.8 is missed
with probability 2e-4) and confirms each one with the exact Jaccard; comparing against all 5,000 cases
exactly cost 32 ms a submission (measured), the index 0.5 ms.
"""

from __future__ import annotations

import re
import threading
import zlib
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

SHINGLE = 5
PERMUTATIONS, BANDS = 64, 16
ROWS = PERMUTATIONS // BANDS
PRIME = (1 << 31) - 1
WORD = re.compile(r"\w+", re.UNICODE)
MAX_GROUPS = 6  # a number is at most 6 groups (999 999 999 999,99): bounds the work on long digit runs
NUMBER_RUN = re.compile(r"\d+(?:[ \u00a0\u202f.,']\d+)*")


class Refusal(NamedTuple):
    reason: str  # too_short | too_long | not_prose | mostly_data | copies_instructions | wrong_language
    #             | numbers_missing | out_of_context | near_duplicate | judge
    detail: str


COMMON = {  # the commonest words of each language a spec may name
    "en": frozenset("the and of to a in is that it for was with as on are this be by not have from at".split()),
    "fr": frozenset("le la les de des du un une et est en que qui dans pour pas sur au aux avec ce il elle ne "
                    "se son sa ses par plus je vous nous mon ma mes a".split()),
}
WORD_OF_LETTERS = re.compile(r"[^\W\d_]{2,}")
DATA_TOKEN = re.compile(r"\d|@|/|_|=|[{}\[\]|<>]")


def check(spec, text: str, numbers: list[str], index: NearDuplicates | None, instructions: str = "") -> Refusal | None:
    """The first gate the text fails (cheapest first), or None when it passes them all. ``instructions``:
    the fixed text of the prompt the case answers (its template without the record), never to be echoed."""
    size = len(text.strip())
    if size < spec.min_chars:
        return Refusal("too_short", f"{size} characters; at least {spec.min_chars} needed")
    if size > spec.max_chars:
        return Refusal("too_long", f"{size} characters; at most {spec.max_chars} allowed")
    refusal = prose(spec, text, instructions)
    if refusal is not None:
        return refusal
    missing = missing_numbers(text, numbers)
    if missing:
        return Refusal("numbers_missing", "the text must contain: " + ", ".join(missing))
    refusal = in_context(spec, text, numbers)
    if refusal is not None:
        return refusal
    found = index.find(text, spec.near_duplicate) if index is not None else None
    if found is not None:
        key, jaccard = found
        return Refusal("near_duplicate", f"too close to {key} (shingle Jaccard {jaccard:.2f} >= {spec.near_duplicate})")
    return None


# --- prose --------------------------------------------------------------------------------------

def prose(spec, text: str, instructions: str = "") -> Refusal | None:
    """Whether the text is written prose rather than fields, numbers or the prompt sent back."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    total = sum(len(line) for line in lines) or 1
    share = sum(len(line) for line in lines if _sentence(line)) / total
    if share < spec.min_prose:
        return Refusal("not_prose", f"{share:.0%} of the text is in sentences; at least {spec.min_prose:.0%} needed "
                                    "(labels, lists of values or lone numbers are not a case)")
    tokens = text.split()
    data = sum(1 for token in tokens if DATA_TOKEN.search(token)) / max(1, len(tokens))
    if data > spec.max_data_share:
        return Refusal("mostly_data", f"{data:.0%} of the words are numbers, e-mails or codes; at most "
                                      f"{spec.max_data_share:.0%} allowed")
    copied = copied_run(text, instructions, spec.max_copied_words)
    if copied:
        return Refusal("copies_instructions", f"repeats the instructions: \"{copied}\"")
    language = getattr(spec, "language", None)
    if language in COMMON:
        common = common_share(text, language)
        if common < 0.08:
            return Refusal("wrong_language", f"does not read as {language} ({common:.0%} of its words are common "
                                             f"{language} words; 8 % or more expected)")
    return None


def common_share(text: str, language: str) -> float:
    """The share of the text's words that are among ``language``'s commonest (``COMMON``)."""
    words = [w.lower() for w in WORD_OF_LETTERS.findall(text)] + [w for w in text.lower().split() if w == "a"]
    return sum(1 for w in words if w in COMMON[language]) / max(1, len(words))


def _sentence(line: str) -> bool:
    tokens = line.split()
    return len(tokens) >= 4 and sum(1 for t in tokens if WORD_OF_LETTERS.fullmatch(t.strip(".,;:!?()\"'«»"))) \
        >= 0.6 * len(tokens)


def copied_run(text: str, instructions: str, size: int) -> str | None:
    """The first run of ``size`` words of ``text`` that ``instructions`` holds too (case and punctuation aside)."""
    theirs = [w.lower() for w in WORD.findall(instructions)]
    if len(theirs) < size:
        return None
    runs = {tuple(theirs[i:i + size]) for i in range(len(theirs) - size + 1)}
    mine = WORD.findall(text)
    for i in range(len(mine) - size + 1):
        if tuple(w.lower() for w in mine[i:i + size]) in runs:
            return " ".join(mine[i:i + size])
    return None


# --- numbers ----------------------------------------------------------------------------------

def missing_numbers(text: str, numbers: list[str]) -> list[str]:
    """The target numbers that appear in the text in none of their usual renderings."""
    present = numbers_in(text)
    return [n for n in numbers if _value(n) not in present]


def numbers_in(text: str) -> set[Decimal]:
    """Every value a number written in the text may mean (``1,250`` is both 1250 and 1.25)."""
    found: set[Decimal] = set()
    for run in NUMBER_RUN.finditer(text):
        parts = re.split(r"([ \u00a0\u202f.,'])", run.group())
        groups, seps = parts[0::2], parts[1::2]
        for i in range(len(groups)):
            for j in range(i, min(len(groups), i + MAX_GROUPS)):
                found |= _readings(groups[i:j + 1], seps[i:j])
    return found


def _readings(groups: list[str], seps: list[str]) -> set[Decimal]:
    out = set()
    if all(len(g) == 3 for g in groups[1:]):  # thousands grouping
        out.add(Decimal("".join(groups)))
    if seps and seps[-1] in ".," and all(len(g) == 3 for g in groups[1:-1]):
        out.add(Decimal("".join(groups[:-1]) + "." + groups[-1]))
    return {v.normalize() for v in out}


def _value(number: str) -> Decimal | None:
    digits = number.strip().lstrip("+-").replace("\u00a0", "").replace("\u202f", "").replace(" ", "")
    if "," in digits and "." not in digits:
        digits = digits.replace(",", ".")
    try:
        return Decimal(digits.replace(",", "")).normalize()
    except InvalidOperation:
        return None


# --- values in context -------------------------------------------------------------------------

CONTEXT_WORDS = 3
SENTENCE_END = re.compile(r"(?<=[.!?\u2026])\s+|\n")
LABEL = re.compile(r"[^\W\d_][\w'\u2019-]*\s?[:=](?=\s|$)")


def in_context(spec, text: str, numbers: list[str]) -> Refusal | None:
    """Refuse a text whose target numbers stand outside sentences (a list, a lone line, ``label: value``)
    for more than ``spec.max_out_of_context`` of them."""
    if not numbers:
        return None
    stray = out_of_context(text, numbers)
    limit = getattr(spec, "max_out_of_context", 0.25)
    if len(stray) / len(numbers) <= limit:
        return None
    return Refusal("out_of_context", f"{', '.join(stray)} {'is' if len(stray) == 1 else 'are'} not written in a "
                                     f"sentence (a list of values, a line of its own or label: value): "
                                     f"{len(stray)} of {len(numbers)} target numbers, at most {limit:.0%} allowed; "
                                     f"a sentence needs {CONTEXT_WORDS} words or more besides labels, more words "
                                     "than figures")


def out_of_context(text: str, numbers: list[str]) -> list[str]:
    """The target numbers that the text holds only in pieces that are not sentences."""
    placed: set[Decimal] = set()
    for piece in SENTENCE_END.split(text):
        if _has_context(piece):
            placed |= numbers_in(piece)
    present = numbers_in(text)
    return [n for n in numbers if _value(n) in present and _value(n) not in placed]


def _has_context(sentence: str) -> bool:
    labels = len(LABEL.findall(sentence))
    tokens = NUMBER_RUN.sub(" 0 ", sentence).split()
    data = sum(1 for t in tokens if DATA_TOKEN.search(t))
    words = sum(1 for t in tokens if not DATA_TOKEN.search(t) and re.search(r"[^\W\d_]", t)) - labels
    return words >= CONTEXT_WORDS and words > data


# --- near-duplicates --------------------------------------------------------------------------

def shingles(text: str) -> set[int]:
    """Word 5-grams of the lower-cased text, each hashed to 32 bits (a short text is one shingle)."""
    words = WORD.findall(text.lower())
    grams = [" ".join(words[i:i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))]
    return {zlib.crc32(g.encode()) for g in grams}


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _jaccard_sorted(np, a, b) -> float:
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)


class NearDuplicates:
    """A MinHash LSH index of case texts, thread-safe; ``find`` confirms candidates exactly."""

    def __init__(self, seed: int = 1) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self._np = np
        self._a = rng.integers(1, PRIME, PERMUTATIONS, dtype=np.uint64)
        self._b = rng.integers(0, PRIME, PERMUTATIONS, dtype=np.uint64)
        self._bands: list[dict[bytes, list[str]]] = [{} for _ in range(BANDS)]
        self._sets: dict = {}  # key -> sorted uint32 shingles (a Python set would cost ~16 KB a case)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sets)

    def __contains__(self, key: str) -> bool:
        return key in self._sets

    def _bands_of(self, grams: set[int]) -> list[bytes]:
        np = self._np
        values = np.fromiter(grams, dtype=np.uint64, count=len(grams))
        signature = ((values[:, None] * self._a + self._b) % PRIME).min(axis=0)
        return [signature[i * ROWS:(i + 1) * ROWS].tobytes() for i in range(BANDS)]

    def add(self, key: str, text: str) -> None:
        grams = shingles(text)
        with self._lock:
            if key in self._sets:
                return
            self._sets[key] = self._np.array(sorted(grams), dtype=self._np.uint32)
            for band, code in zip(self._bands, self._bands_of(grams)):
                band.setdefault(code, []).append(key)

    def find(self, text: str, threshold: float) -> tuple[str, float] | None:
        """The most similar indexed case at or above ``threshold``, with its Jaccard; None if none."""
        grams = shingles(text)
        with self._lock:
            candidates = {k for band, code in zip(self._bands, self._bands_of(grams)) for k in band.get(code, ())}
            mine = self._np.array(sorted(grams), dtype=self._np.uint32)
            scored = sorted(((_jaccard_sorted(self._np, mine, self._sets[k]), k) for k in candidates), reverse=True)
        if scored and scored[0][0] >= threshold:
            return scored[0][1], scored[0][0]
        return None
