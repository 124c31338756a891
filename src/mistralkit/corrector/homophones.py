"""Our own few rules for what Grammalecte misses most in pupils' writing: "a" written for "à".

Only contexts where the verb "a" (avoir) can hardly stand, and never right after a subject pronoun
or a name ("il a 2h de retard", "Léa a Paul au téléphone" stay): before a time ("a 14h30"), before a place or
person name ("chez ma tante a Bordeaux"), and in set phrases ("a pied", "a côté", "a demain"). Each is an ordinary Issue,
so protection, the rule rounds and the guards treat it like the checker's own findings.

>>> [i.suggestions for i in issues("Rendez-vous a 14h30.", [Protected(15, 20, "14h30", "time")])]
[('à',)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .types import Issue, Protected

# After these, "a" is the verb: "il a", "on a", "qui a", "il y a".
SUBJECTS = frozenset("il elle on qui ça cela ce y lui".split())
SET_PHRASES = frozenset("pied cause côté coté moi toi demain bientôt travers peine".split())
_A = re.compile(r"(?<![\w'’-])([aA])\s+([\w'’-]+)")
_WORD = re.compile(r"[\w'’]+")
RULE = "mistralkit_a_à"


def issues(text: str, protected: Sequence[Protected]) -> list[Issue]:
    """Issues for every "a" that can only be the preposition "à"."""
    starts = {p.start: p for p in protected}
    found = []
    for match in _A.finditer(text):
        following = starts.get(match.start(2))
        before = _WORD.findall(text[max(0, match.start() - 40):match.start()])
        previous = before[-1] if before else ""
        why = None
        if previous.lower() in SUBJECTS or previous[:1].isupper():  # a subject: "a" is the verb
            continue
        if following is not None and following.kind == "time":
            why = "devant une heure, c'est la préposition « à »"
        elif following is not None and following.kind == "name":
            why = "devant un lieu ou une personne, sans sujet avant, c'est la préposition « à »"
        elif match.group(2).lower() in SET_PHRASES:
            why = f"« à {match.group(2).lower()} » s'écrit avec la préposition « à »"
        if why:
            found.append(Issue(match.start(1), match.end(1), f"Confusion a/à : {why}.",
                               ("À" if match.group(1) == "A" else "à",), RULE, "grammar", "mistralkit"))
    return found
