"""What a pupil forgets that is no word: the capital opening a sentence, the mark closing a paragraph.

Both are sure, so they are applied in every mode after the word rules (``Corrector.paragraph``), and
never put to the language model (its scores favour the shorter text, so a missing full stop would
always lose):

- a sentence that opens with a lower-case letter gets a capital ("ce matin" -> "Ce matin"), unless
  its first word holds a capital inside (a brand: "iPhone") or is protected (an e-mail, a URL);
- a paragraph of four words or more that ends on a letter or a digit gets " ?" when it asks (it
  opens with a question word, or holds "est-ce que" or a verb-subject inversion such as "viens-tu"),
  else a full stop; not when "tu" or "vous" is among its first three words (a question by its tone
  alone, or not: a reader cannot tell), nor after a closing bracket or quote.

>>> [(i.start, i.end, i.suggestions) for i in issues("ce matin il pleut sur Brest")]
[(0, 2, ('Ce',)), (27, 27, ('.',))]
>>> [i.suggestions for i in issues("Pourquoi le bus ne passe plus")]
[(' ?',)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .sentences import sentence_spans
from .types import Issue, Protected

CHECKER = "mistralkit"
ASKING_FIRST = frozenset("pourquoi comment combien où ou qui quel quelle quels quelles lequel laquelle lesquels "
                         "lesquelles".split())  # "ou": "Ou est" is a question whose "où" the rules fix
TONE_ONLY = frozenset("tu vous".split())
_INVERSION = re.compile(r"\w-(?:t-)?(?:je|tu|il|elle|on|nous|vous|ils|elles)\b|\best[- ]ce\b", re.IGNORECASE)
_WORDS = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*|\d+")
MIN_WORDS = 4


def _capital(text: str, start: int, end: int, protected: Sequence[Protected]) -> Issue | None:
    word = _WORDS.match(text, start)
    if word is None or word.end() > end or not word.group()[0].islower():
        return None
    if any(c.isupper() for c in word.group()[1:]) or any(p.start < word.end() and word.start() < p.end
                                                          for p in protected):
        return None
    text_ = word.group()
    return Issue(word.start(), word.end(), "Une phrase commence par une majuscule.", (text_[0].upper() + text_[1:],),
                 "mistralkit_majuscule", "typography", CHECKER)


def asks(sentence: str) -> bool:
    """Whether a sentence without its final mark is a question by its words."""
    words = _WORDS.findall(sentence)
    first = words[0].lower() if words else ""
    return first in ASKING_FIRST or bool(_INVERSION.search(sentence))


def _final_mark(text: str, start: int, end: int) -> Issue | None:
    sentence = text[start:end]
    words = _WORDS.findall(sentence)
    if len(words) < MIN_WORDS or not sentence[-1].isalnum():
        return None
    if asks(sentence):
        space = "\u202f" if "\u202f?" in text else "\u00a0" if "\u00a0?" in text else " "
        return Issue(end, end, "Une question se termine par un point d'interrogation.", (space + "?",),
                     "mistralkit_ponctuation_finale", "typography", CHECKER)
    if TONE_ONLY & {w.lower() for w in words[:3]}:  # "Tu viens", "Mehdi, tu peux": asked by the tone, or not
        return None
    return Issue(end, end, "Une phrase se termine par un point.", (".",), "mistralkit_ponctuation_finale",
                 "typography", CHECKER)


def issues(text: str, protected: Sequence[Protected] = ()) -> list[Issue]:
    """The missing capitals of ``text``'s sentences, and the missing mark at its end (``text`` is one
    paragraph, or a run of its whole sentences)."""
    spans = sentence_spans(text)
    found = [issue for start, end in spans if (issue := _capital(text, start, end, protected))]
    if spans and (mark := _final_mark(text, *spans[-1])):
        found.append(mark)
    return found
