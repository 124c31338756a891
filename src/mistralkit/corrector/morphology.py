"""The words of a text with the checker's dictionary readings, for our own confusion rules.

A reading is Grammalecte's ``>lemma/:tag:tag.../*``: ``:N`` noun, ``:A`` adjective, ``:Q`` past
participle, ``:Y`` infinitive, ``:W`` adverb, ``:G`` grammatical word (``:D`` determiner, ``:O``
pronoun), ``:B`` number word; ``:m``/``:f``/``:e`` gender, ``:s``/``:p``/``:i`` number; a verb
carries ``:V1_it_q__a`` (group, then flags: ``i`` intransitive, ``t`` direct object, ``n``
indirect object, ``q``/``p`` pronominal) and, when conjugated, a person such as ``:3s``.

>>> w = Word(0, 4, "allé", (">aller/:V1_i__e_e_:Q:m:s/*",))
>>> w.participle, w.nominal, w.intransitive
(True, False, True)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Morph = Callable[[list[str]], dict[str, list[str]]]  # words -> their readings (the checker's ``morph``)

_WORD = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*['’]?|\d+(?:[,.]\d+)?")
SUBJECT_PRONOUNS = frozenset("il elle on ils elles qui".split())


def tags(reading: str) -> list[str]:
    """A reading's tags: ``>heure/:N:f:s;É/*`` -> ``['', 'N', 'f', 's']``."""
    return reading.lstrip(">").partition("/")[2].split("/")[0].split(";")[0].split(":")


@dataclass(frozen=True)
class Word:
    start: int
    end: int
    text: str
    readings: tuple[str, ...] = ()

    @property
    def lower(self) -> str:
        return self.text.lower().replace("’", "'")

    def _with(self, *wanted: str) -> list[list[str]]:
        return [t for t in map(tags, self.readings) if all(w in t for w in wanted)]

    def has(self, *wanted: str) -> bool:
        """Some reading carries every tag in ``wanted``."""
        return bool(self._with(*wanted))

    @property
    def known(self) -> bool:
        return bool(self.readings)

    @property
    def nominal(self) -> bool:
        """A noun or an adjective that is not a verb form (a participle's ``:A`` does not count)."""
        return any(("N" in t or "A" in t) and not any(x.startswith("V") for x in t)
                   for t in map(tags, self.readings))

    def nominal_number(self, *numbers: str) -> bool:
        """A noun or adjective reading (not a participle) of one of these numbers (s, p, i)."""
        return any(("N" in t or "A" in t) and not any(x.startswith("V") for x in t)
                   and any(n in t for n in numbers) for t in map(tags, self.readings))

    def nominal_gender(self, *genders: str) -> bool:
        return any(("N" in t or "A" in t) and not any(x.startswith("V") for x in t)
                   and any(g in t for g in genders) for t in map(tags, self.readings))

    @property
    def participle(self) -> bool:
        return self.has("Q")

    @property
    def infinitive(self) -> bool:
        return self.has("Y")

    @property
    def only_infinitive(self) -> bool:
        return self.known and all("Y" in t for t in map(tags, self.readings))

    @property
    def finite(self) -> bool:
        """A conjugated verb form (indicative, subjunctive, conditional or imperative)."""
        return any(any(x.startswith("V") for x in t) and not ({"Q", "Y", "P"} & set(t))
                   for t in map(tags, self.readings))

    def person(self, person: str) -> bool:
        return any(person in t for t in map(tags, self.readings))

    def _verb_flags(self) -> list[str]:
        return [x[2:] for t in map(tags, self.readings) for x in t if x.startswith("V") and len(x) > 6]

    @property
    def verb(self) -> bool:
        return bool(self._verb_flags())

    @property
    def intransitive(self) -> bool:
        """A verb that takes no direct object in any of its readings (aller, venir, travailler...)."""
        flags = self._verb_flags()
        return bool(flags) and all(f[2] != "t" for f in flags)

    @property
    def pronominal(self) -> bool:
        """A verb that can be pronominal (se lever, se perdre, se cacher)."""
        return any(f[4] in "pq" for f in self._verb_flags())

    @property
    def adverb(self) -> bool:
        return self.known and all("W" in t for t in map(tags, self.readings))

    @property
    def determiner(self) -> bool:
        """Le, la, un, des (``:D``), mon, ton (``:Dp``), ce, cette (``:Dd``)..."""
        return any("G" in t and any(x.startswith("D") for x in t) for t in map(tags, self.readings))

    @property
    def pronoun(self) -> bool:
        return any("G" in t and any(x.startswith("O") for x in t) for t in map(tags, self.readings))

    @property
    def proper(self) -> bool:
        return any({"M1", "M2", "MP"} & set(t) for t in map(tags, self.readings))


class Sentence:
    """The words of a text and what lies between them."""

    def __init__(self, text: str, morph: Morph | None, hidden: Sequence[tuple[int, int]] = ()) -> None:
        """``hidden``: spans (URLs, e-mails) whose words are no words of the sentence."""
        self.text, self._morph = text, morph
        spans = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)
                 if not any(s < m.end() and m.start() < e for s, e in hidden)]
        keys = {w: w.rstrip("'’") for _, _, w in spans if not w[0].isdigit()}
        lookups = sorted({k for k in keys.values()} | {k.lower() for k in keys.values()})
        readings = (morph(lookups) if morph and lookups else {}) or {}

        def both(word: str) -> tuple[str, ...]:  # "Mon" at a sentence start is also "mon"
            key = keys.get(word, "")
            return tuple(dict.fromkeys([*readings.get(key, ()), *readings.get(key.lower(), ())]))

        self.words = [Word(s, e, w, both(w)) for s, e, w in spans]

    def __len__(self) -> int:
        return len(self.words)

    def readings(self, word: str) -> tuple[str, ...]:
        """The dictionary's readings of a word not in the sentence (a form a rule would write)."""
        found = (self._morph([word]) if self._morph else {}) or {}
        return tuple(found.get(word, ()))

    def __getitem__(self, i: int) -> Word | None:
        return self.words[i] if 0 <= i < len(self.words) else None

    def joined(self, i: int, j: int) -> bool:
        """Only spaces (or an elision) between words ``i`` and ``j``: no comma, no full stop."""
        a, b = self[i], self[j]
        return a is not None and b is not None and not self.text[a.end:b.start].strip()

    def at_sentence_start(self, i: int) -> bool:
        word = self[i]
        if word is None:
            return False
        pos = word.start - 1  # the last character before the word that is not a space
        while pos >= 0 and self.text[pos].isspace():
            pos -= 1
        return pos < 0 or self.text[pos] in ".!?…:"

    def is_name(self, i: int) -> bool:
        """A capitalised word in the middle of a sentence, or one the dictionary calls a name."""
        word = self[i]
        if word is None or not word.text[0].isalpha():
            return False
        return word.proper or (word.text[0].isupper() and not self.at_sentence_start(i))

    def subject_before(self, i: int) -> bool:
        """Word ``i`` directly follows what can be a subject: il, elle, on, a name or a noun."""
        prev = self[i - 1]
        if prev is None or not self.joined(i - 1, i):
            return False
        return prev.lower in SUBJECT_PRONOUNS or self.is_name(i - 1) or (
            prev.has("N") and not prev.has("G") and not prev.text[0].isdigit())


def common_words(morph: Morph | None, words: set[str]) -> set[str]:
    """The ``words`` the dictionary knows as common words ("Enfin" opening a sentence, as "enfin"); a
    name does not count ("Le maître" is not "Lemaître", "Sofi" no spelling of "Kofi")."""
    if morph is None or not words:
        return set()
    readings = morph(sorted(words | {w.lower() for w in words})) or {}

    def common(word: str) -> bool:
        return any(not {"M1", "M2", "MP"} & set(tags(r)) for r in [*readings.get(word, ()),
                                                                   *readings.get(word.lower(), ())])
    return {w for w in words if common(w)}


def keep_case(like: str, word: str) -> str:
    """``word`` with a capital first letter when ``like`` has one."""
    return word[:1].upper() + word[1:] if like[:1].isupper() else word

