"""Whether an LLM rewrite of one sentence may replace the rules output of that sentence, and the
placeholders that hide URLs, e-mails and phone numbers from the LLM.

>>> guard("Hier, Lucas et sa soeur son allé au cinéma.", "Hier, Paul et sa sœur sont allés au cinéma.",
...       ["Lucas"])
"protected string changed: 'Lucas'"
>>> reason_kind("new name: 'Paul'")
'name'
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from .sentences import sentence_starts
from .types import Protected

# The reason kinds, in the order the checks run; each reason starts with the prefix of its kind.
REASONS = ("protected", "placeholder", "digits", "number word", "name", "edit ratio", "length ratio", "checker",
           "undone", "word")
PREFIXES = {
    "protected string changed": "protected",
    "placeholder": "placeholder",
    "new digits": "digits",
    "new number word": "number word",
    "new name": "name",
    "word": "word",
    "rule fix undone": "undone",
    "edit ratio": "edit ratio",
    "length ratio": "length ratio",
    "more checker errors": "checker",
}

# Words that carry a quantity; a rewrite may drop one (the pupil's "cent" for "sans") but never
# bring one in. Not "un", "une": they are mostly articles. "neuf" and "second(e)" stay although they
# also mean "new" and "second": brought in from nowhere, either sense adds to what the pupil wrote.
# Any word ending in -ième(s) (deuxième, vingtième, énième) counts as an ordinal too.
NUMBER_WORDS = frozenset("""
    zéro deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize vingt vingts
    trente quarante cinquante soixante septante octante huitante nonante cent cents mille mil million millions
    milliard milliards billion billions premier première premiers premières second seconde seconds
    dizaine dizaines douzaine douzaines quinzaine quinzaines vingtaine vingtaines trentaine quarantaine
    cinquantaine soixantaine centaine centaines millier milliers demi demie moitié quart quarts tiers
    double triple
""".split())

PLACEHOLDER = re.compile(r"⟦P(\d+)⟧")
_BRACKET = re.compile(r"[⟦⟧]")
_DIGITS = re.compile(r"\d+")
_LETTERS = re.compile(r"[^\W\d_]+")
_TOKEN = re.compile(r"\w+|[^\w\s]")


def mask(text: str, spans: Iterable[Protected], kinds: Iterable[str] = ("url", "email", "phone")
         ) -> tuple[str, dict[str, str]]:
    """``text`` with each span of ``kinds`` replaced by a placeholder (one per distinct value) and
    the placeholder -> value mapping. Only where hiding costs nothing: French agreement never
    depends on a URL, but it does on a name ("Marie est allée"), so names stay visible.

    >>> mask("Écris à a@b.fr.", [Protected(8, 14, "a@b.fr", "email")])
    ('Écris à ⟦P1⟧.', {'⟦P1⟧': 'a@b.fr'})
    """
    wanted = set(kinds)
    mapping: dict[str, str] = {}
    by_value: dict[str, str] = {}
    pieces, last = [], 0
    for span in sorted((s for s in spans if s.kind in wanted), key=lambda s: s.start):
        if span.start < last:
            continue
        if span.value not in by_value:
            by_value[span.value] = f"⟦P{len(by_value) + 1}⟧"
            mapping[by_value[span.value]] = span.value
        pieces += [text[last:span.start], by_value[span.value]]
        last = span.end
    pieces.append(text[last:])
    return "".join(pieces), mapping


def unmask(text: str, mapping: dict[str, str]) -> str:
    """The placeholders of ``text`` put back; one that ``mapping`` does not know stays as it is."""
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)


def _occurrences(text: str, value: str) -> int:
    """How often ``value`` stands in ``text`` as a whole word; any space matches any space."""
    body = r"\s+".join(re.escape(part) for part in value.split())
    left = r"(?<!\w)" if re.match(r"\w", value) else ""
    right = r"(?!\w)" if re.search(r"\w$", value) else ""
    return len(re.findall(left + body + right, text))


def _protected_reason(before: str, after: str, protected: Counter[str]) -> str | None:
    for value, count in protected.items():
        expected = max(count, _occurrences(before, value))
        found = _occurrences(after, value)
        if found == 0:
            return f"protected string changed: '{value}'"
        if found != expected:
            return f"protected string changed: '{value}' ({found} instead of {expected})"
    return None


def _placeholder_reason(before: str, after: str) -> str | None:
    whole = [m.span() for m in PLACEHOLDER.finditer(after)]
    for bracket in _BRACKET.finditer(after):
        if not any(a <= bracket.start() < b for a, b in whole):
            start, end = bracket.start(), bracket.start()
            while start > 0 and not after[start - 1].isspace():
                start -= 1
            while end < len(after) and not after[end].isspace():
                end += 1
            return f"placeholder damaged: '{after[start:end]}'"
    was, now = Counter(PLACEHOLDER.findall(before)), Counter(PLACEHOLDER.findall(after))
    for number in was:
        if now[number] < was[number]:
            return f"placeholder lost: '⟦P{number}⟧'"
        if now[number] > was[number]:
            return f"placeholder duplicated: '⟦P{number}⟧'"
    if invented := [n for n in now if n not in was]:
        return f"placeholder invented: '⟦P{invented[0]}⟧'"
    return None


def _added(before: list[str], after: list[str]) -> list[str]:
    """What ``after`` holds more often than ``before``, in the order of ``after``."""
    extra = Counter(after) - Counter(before)
    return [item for item in dict.fromkeys(after) if extra[item] > 0]


def _number_words(text: str) -> list[str]:
    words = (w.lower() for w in _LETTERS.findall(text))
    return [w for w in words if w in NUMBER_WORDS or w.endswith(("ième", "ièmes"))]


def _new_names(before: str, after: str) -> list[str]:
    """Capitalised words of ``after`` outside sentence starts whose lower case ``before`` lacks:
    "paris" -> "Paris" is a fix, "Paul" from nowhere is a new name."""
    known = {w.lower() for w in _LETTERS.findall(before)}
    starts = sentence_starts(after)
    return list(dict.fromkeys(m.group() for m in _LETTERS.finditer(after)
                              if m.group()[0].isupper() and m.start() not in starts and m.group().lower() not in known))


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.replace("’", "'").lower())


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    """Levenshtein distance between two token lists (or two strings)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def edit_ratio(before: str, after: str) -> float:
    """Word-level edit distance over the words of ``before`` (words and punctuation marks, case and
    apostrophe style ignored)."""
    a, b = _tokens(before), _tokens(after)
    if not a:
        return 0.0 if not b else float("inf")
    return edit_distance(a, b) / len(a)


def guard(before: str, after: str, protected: Counter[str] | Iterable[str], *,
          count_issues: Callable[[str], int] | None = None, max_edit_ratio: float = 0.6,
          max_length_ratio: float = 1.3, fixes: Iterable[tuple[str, str]] = ()) -> str | None:
    """None when ``after`` (the LLM's rewrite of one sentence) may replace ``before`` (its rules
    output), else the first reason it may not. ``max_edit_ratio`` is high because a pupil's sentence
    may hold an error every other word ("Elle sait fait mal" -> "Elle s'est fait mal"); rewording is
    refused by word, whatever the ratio. ``protected``: the sentence's protected strings, less
    those ``mask`` hid (placeholders are checked on their own). ``fixes``: the rule pass's (old, new)
    words in this sentence; a rewrite that brings an old one back undoes a fix."""
    wanted = protected if isinstance(protected, Counter) else Counter(protected)
    if reason := _protected_reason(before, after, wanted):
        return reason
    if reason := _placeholder_reason(before, after):
        return reason
    plain_before, plain_after = PLACEHOLDER.sub(" ", before), PLACEHOLDER.sub(" ", after)
    if digits := _added(_DIGITS.findall(plain_before), _DIGITS.findall(plain_after)):
        return f"new digits: '{digits[0]}'"
    if words := _added(_number_words(plain_before), _number_words(plain_after)):
        return f"new number word: '{words[0]}'"
    if names := _new_names(plain_before, plain_after):
        return f"new name: '{names[0]}'"
    ratio = edit_ratio(before, after)
    if ratio > max_edit_ratio:
        return f"edit ratio {ratio:.2f} > {max_edit_ratio:.2f}"
    size_before, size_after = len(before.strip()), len(after.strip())
    length = size_after / size_before if size_before else (1.0 if not size_after else float("inf"))
    if not 1 / max_length_ratio <= length <= max_length_ratio:
        return f"length ratio {length:.2f} outside [{1 / max_length_ratio:.2f}, {max_length_ratio:.2f}]"
    if count_issues is not None:
        issues_before, issues_after = count_issues(before), count_issues(after)
        if issues_after > issues_before:
            return f"more checker errors ({issues_after} > {issues_before})"
    if reason := _undone(plain_before, plain_after, fixes):
        return reason
    return _rewording_reason(plain_before, plain_after)


def _undone(before: str, after: str, fixes: Iterable[tuple[str, str]]) -> str | None:
    """A word the rules fixed ("chat" -> "chats") that the rewrite turns back ("Le chat noir")."""
    old_words, new_words = Counter(_LETTERS.findall(before)), Counter(_LETTERS.findall(after))
    for old, new in fixes:
        gone = [w for w in _LETTERS.findall(new) if new_words[w] < old_words[w]]
        back = [w for w in _LETTERS.findall(old) if new_words[w] > old_words[w]]
        if gone and back:
            return f"rule fix undone: '{new}' -> '{old}'"
    return None


# Little words a grammar fix may add ("Elle a vu un chat", "je ne sais pas", "il s'est"): never "pas".
GLUE_WORDS = frozenset("un une le la les l de d du des à au aux en y ne n se s que qu".split())

# First sounds that French spelling mixes up: a fix may swap them ("ces" -> "ses", "ge" -> "je").
_SOUND = str.maketrans({"ç": "s", "c": "s", "z": "s", "q": "k", "g": "j", "h": "", "y": "i"})


def fold(word: str) -> str:
    """Lower case, no accents, no spaces, hyphens or apostrophes: what a pupil's spelling keeps."""
    plain = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in plain if c.isalnum() and not unicodedata.combining(c))


def _sounds_alike(old: str, new: str) -> bool:
    """Could ``new`` be a spelling fix of ``old``: close letters, and for short words the same first sound
    ("a" -> "à", "son" -> "sont", "ces" -> "ses"; not "tu" -> "je" nor "demain" -> "")."""
    a, b = fold(old), fold(new)
    if a == b:
        return True
    if not a or not b:
        return False
    if edit_distance(a, b) > max(2, len(a) // 3):
        return False
    return len(a) > 3 or a.translate(_SOUND)[:1] == b.translate(_SOUND)[:1]


def _rewording_reason(before: str, after: str) -> str | None:
    """A rewrite fixes spelling and grammar: each changed stretch of words must sound like what it
    replaces. Dropping "Demain", turning "Tu" into "Je" or adding "ne … pas" is rewording."""
    old, new = _LETTERS.findall(before), _LETTERS.findall(after)
    matcher = difflib.SequenceMatcher(None, [fold(w) for w in old], [fold(w) for w in new], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        gone, came = " ".join(old[i1:i2]), " ".join(new[j1:j2])
        pairs = list(zip(old[i1:i2], new[j1:j2])) if i2 - i1 == j2 - j1 else [(gone, came)]
        if not gone and all(fold(w) in GLUE_WORDS for w in new[j1:j2]):
            continue
        if not all(_sounds_alike(x.replace(" ", ""), y.replace(" ", "")) for x, y in pairs):
            if not came:
                return f"word dropped: '{gone}'"
            if not gone:
                return f"word added: '{came}'"
            return f"word changed: '{gone}' -> '{came}'"
    return None


def reason_kind(reason: str) -> str:
    """The kind (one of ``REASONS``) of a reason ``guard`` returned, or "other"."""
    for prefix, kind in PREFIXES.items():
        if reason.startswith(prefix):
            return kind
    return "other"
