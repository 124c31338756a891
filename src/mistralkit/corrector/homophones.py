"""Our own few rules for what Grammalecte misses most in pupils' writing: "a" written for "à".

Only contexts where the verb "a" (avoir) can hardly stand, and never right after a subject pronoun
or a name ("il a 2h de retard", "Léa a Paul au téléphone" stay): before a time ("a 14h30"), before a
place or person name ("chez ma tante a Bordeaux"), in set phrases ("a pied", "a côté", "a demain"),
and with a dictionary (``morph``) right after a verb that takes no direct object ("Marie est allée a
la boulangerie": nothing there can be the subject of "a") or before an infinitive that follows a
verb or a negation ("m'aider a porter", "pas a faire"). Each is an ordinary Issue, so protection,
the rule rounds and the guards treat it like the checker's own findings.

>>> [i.suggestions for i in issues("Rendez-vous a 14h30.", [Protected(14, 19, "14h30", "time")])]
[('à',)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .morphology import Morph, Sentence
from .types import Issue, Protected

# After these, "a" is the verb: "il a", "on a", "qui a", "il y a".
SUBJECTS = frozenset("il elle on qui ça cela ce y lui".split())
SET_PHRASES = frozenset("pied cause côté coté moi toi demain bientôt travers peine".split())
_A = re.compile(r"(?<![\w'’-])([aA])\s+([\w'’-]+)")
_WORD = re.compile(r"[\w'’]+")
RULE = "mistralkit_a_à"
NEGATIONS = frozenset("pas plus jamais rien".split())  # "n'arrive pas a faire": never "a" the verb
RELATIVES = frozenset("qui que qu' qu’ dont où".split())  # "l'homme qui court a faim": "a" is the verb


def _after_verb(words: Sentence, i: int) -> str | None:
    """Why word ``i`` ("a") is the preposition, judged on the words around it, or None."""
    prev, nxt = words[i - 1], words[i + 1]
    if prev is None or not words.joined(i - 1, i) or not prev.known or prev.text[0].isupper():
        return None
    if any(w is not None and w.lower in RELATIVES for w in (words[i - 2], words[i - 3], words[i - 4])):
        return None
    before = words[i - 2]
    as_noun = prev.nominal and before is not None and before.determiner  # "l'allée a la forme d'un S"
    if nxt is not None and words.joined(i, i + 1) and nxt.only_infinitive and (
            prev.lower in NEGATIONS or prev.verb and not as_noun):
        return "devant un infinitif, après un verbe, c'est la préposition « à »"
    if prev.verb and prev.intransitive and not as_noun and not (nxt is not None and nxt.participle):
        return f"après « {prev.text} », verbe sans complément direct, c'est la préposition « à »"
    return None


def issues(text: str, protected: Sequence[Protected], morph: Morph | None = None) -> list[Issue]:
    """Issues for every "a" that can only be the preposition "à"."""
    starts = {p.start: p for p in protected}
    found = []
    words = Sentence(text, morph, [(p.start, p.end) for p in protected if p.kind in ("url", "email", "phone")]
                     ) if morph is not None else None
    index = {w.start: n for n, w in enumerate(words.words)} if words is not None else {}
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
        elif words is not None and match.start(1) in index:
            why = _after_verb(words, index[match.start(1)])
        if why:
            found.append(Issue(match.start(1), match.end(1), f"Confusion a/à : {why}.",
                               ("À" if match.group(1) == "A" else "à",), RULE, "grammar", "mistralkit"))
    return found
