"""LM-ranked correction: a language model chooses among the spellings the rules know, it writes nothing.

A small model cannot be trusted to rewrite a sentence (it drops words, repeats, changes names), but
it is good at one thing: telling which of two near-identical sentences is the more likely French.
"Mes cousins on gagné" and "Mes cousins ont gagné" differ by one letter and by ~20 nats under
Gemma 3 270M. So the ranker never generates: for each uncertain spot of a sentence it builds the
sentence once per candidate, scores each with the model's log-probability (``Engine.logprobs``; the
variants share their beginning, whose KV cache llama.cpp keeps, so only the rest is evaluated) and
changes the spot only when a candidate beats what is written by a margin. The margin is also the
edit's confidence: above ``SURE`` nats it is applied, between ``UNSURE`` and ``SURE`` it is only
proposed (``Correction.proposed``), below it nothing happens.

Spots and candidates (never inside a protected span):
- every finding of the checker or of our rules, with its suggestions ("flagged": a rule says the
  text is wrong there, so a smaller margin suffices);
- every word of a homophone set (son/sont, a/à, et/est, on/ont, ou/où, ces/ses/c'est/s'est, ...),
  with the others of its set;
- every -er infinitive or participle (manger/mangé/mangez), with the other forms the
  dictionary knows; a noun after a number or a plural determiner, with its plural;
- two words the dictionary knows as one ("par ce" -> "parce", "en fin" -> "enfin", "pique nique" ->
  "pique-nique"), with that word.
A misspelt word's candidates that sound like it ("fesait" -> "faisait", ``sound``) cost no letters.
Spots are decided left to right, each within its own sentence (the same choice alone or inside a
paragraph) as the ones before it left it; then the checker looks again (a fixed "sont" makes "allé"
an agreement error) for up to ``ROUNDS`` rounds.

>>> sorted(alternatives("Son"))
['Sa', 'Sont']
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..engines import require
from .guards import edit_distance, fold
from .homophones import SUBJECTS
from .morphology import Morph, common_words, keep_case
from .types import Issue, Protected

# Words heard alike, written differently (a word may be in several sets).
HOMOPHONES: tuple[frozenset[str], ...] = tuple(frozenset(s.split()) for s in (
    "son sont", "son sa", "sa ça", "a à as", "et est es", "on ont", "ou où", "ces ses c'est s'est sait sais",
    "ce se", "la là", "peu peut peux", "leur leurs", "ma m'a", "ta t'a", "mon m'ont",
    "quel quelle quels quelles qu'elle", "sans s'en", "dans d'en", "ni n'y", "si s'y",
    "du dû", "sur sûr", "près prêt", "quand quant qu'en", "ai est", "votre vôtre", "notre nôtre",
))  # not articles (un/une, le/la), mes/mais or tout/tous: the model flips right ones (the checker flags those)
# Verb endings heard alike: "manger", "mangé", "mangés", "mangée", "mangées", "mangez".
ENDINGS = ("er", "é", "és", "ée", "ées", "ez")
AUXILIARIES = frozenset("ai as a avons avez ont suis es est sommes êtes sont été".split())
# After these a participle stays one too: they are the auxiliaries "ont", "est" miswritten ("Les chiens on aboyé").
AUXILIARY_SOUNDS = frozenset("on et".split())
PLURAL_BEFORE = frozenset("les des mes tes ses ces nos vos leurs plusieurs quelques deux trois quatre cinq six "
                          "sept huit neuf dix".split())
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?|\d+(?:[,.]\d+)?")

SURE = 3.0  # nats: a candidate this much likelier than the next best option is applied
SURE_UNFLAGGED = 2.0  # where no rule flagged the text (calibrated: bench/correct_calibrate.py)
UNSURE = 1.0  # from here up to SURE, the change is proposed, not applied
ROUNDS = 3
RIGHT_CONTEXT = 10  # characters after a spot scored with it: a word or two (agreement looks back)
MAX_CANDIDATES = 4  # per spot, the nearest spellings: each costs a scoring (262,144 logits a token for Gemma)
DISTANCE = 1.0  # nats taken off a candidate per letter it changes (accents, spaces and case are free)
RULE = 1.5  # nats given to the rule pass's own pick: the model must disagree by more to overrule it
MESSAGE = "le modèle de langue préfère cette forme"


# How French letters sound, roughly: enough to see that "fesait" and "faisait", "magnifik" and
# "magnifique", "bonome" and "bonhomme" are the same word to the ear. Applied in order to a folded word.
_SOUNDS = tuple((re.compile(a), b) for a, b in (
    (r"(.)\1", r"\1"), (r"(?:er|ez|et)s?$", "e"), (r"[sxtdp]+$", ""), (r"e$", ""), (r"t(?=ion)", "s"),
    (r"ph", "f"), (r"qu|ck|k|c(?=[aou])", "k"), (r"(?<=[aeiou])s(?=[aeiouy])", "z"), (r"sc(?=[ei])|c(?=[eiy])", "s"),
    (r"gu(?=[eiy])", "g"), (r"g(?=[eiy])", "j"), (r"h", ""), (r"eau|au", "o"), (r"ai|ei", "e"),
    (r"(?:an|am|en|em)(?![aeiouy])", "A"), (r"(?:ain|ein|in|im|un)(?![aeiouy])", "I"), (r"(?:on|om)(?![aeiouy])", "O"),
    (r"y", "i"),
))


def sound(word: str) -> str:
    """A rough French phonetic key of a (folded) word: equal keys sound alike.

    >>> sound("fesait") == sound("faisait"), sound("magnifik") == sound("magnifique"), sound("bonome") == sound("bonom")
    (True, True, True)
    """
    key = word.lower()
    for pattern, replacement in _SOUNDS:
        key = pattern.sub(replacement, key)
    return key


def letters_apart(written: str, candidate: str, by_ear: bool = False) -> int:
    """Letters a candidate changes in what is written (accents, spaces and case free); with ``by_ear``
    (a misspelt word: a dyslexic writer spells by ear), none when the two sound alike."""
    a, b = fold(written), fold(candidate)
    if by_ear and sound(a.replace(" ", "")) == sound(b.replace(" ", "")):
        return 0
    return edit_distance(a, b)


def alternatives(word: str) -> set[str]:
    """The other spellings of ``word``'s homophone sets, in its case."""
    plain = word.lower().replace("’", "'")
    found = set().union(*(s for s in HOMOPHONES if plain in s)) - {plain}
    apostrophe = "’" if "’" in word else "'"
    return {keep_case(word, w.replace("'", apostrophe)) for w in found}


def _stem_forms(word: str) -> set[str]:
    """The infinitive of an -er participle, and the participle of an infinitive ("mangé" <-> "manger"), to be
    checked against the dictionary. Not the participle's gender or number: who "je" is, the model cannot know
    (the checker's agreement rules flag those)."""
    lower = word.lower()
    for ending in sorted(ENDINGS, key=len, reverse=True):
        if lower.endswith(ending) and len(lower) > len(ending) + 1:
            stem = word[:len(word) - len(ending)]
            return {stem + "é"} if ending == "er" else {stem + "er"} if ending != "ez" else {stem + "er", stem + "é"}
    return set()


def _verb_a(word: str, previous: str) -> bool:
    """"a" right after a subject pronoun or a name ("Clément a 3 lapins") is the verb, and a capital "À"
    opening a sentence is the preposition: neither is a spot."""
    if word == "À":
        return True
    return word.lower() in ("a", "as") and (previous.lower() in SUBJECTS or previous[:1].isupper())


@dataclass
class Spot:
    """A place in a sentence where the writing is in doubt, and what it could be instead."""

    start: int
    end: int
    candidates: set[str]
    flagged: bool = False  # a finding of the checker or of our rules
    favoured: str | None = None  # the rule pass's own pick there (``edits.best_suggestion``)
    misspelt: bool = False  # the checker's dictionary does not know what is written
    message: str = ""
    rule: str = ""


def spots(text: str, issues: Sequence[Issue], protected: Sequence[Protected], morph: Morph | None,
          free: bool = True) -> list[Spot]:
    """The uncertain spots of ``text`` (spans in ``text``), each with its candidates; ``free``: also the
    words no rule flagged (homophones, verb forms, plurals)."""
    def hidden(start: int, end: int) -> bool:
        return any(start < p.end and p.start < end for p in protected)

    from .edits import best_suggestion, looks_like_a_name

    found: dict[tuple[int, int], Spot] = {}
    for issue in issues:
        options = {s.replace("’", "'") if "’" not in text else s for s in issue.suggestions if s}
        options.discard(text[issue.start:issue.end])
        if options and not hidden(issue.start, issue.end) and not looks_like_a_name(text, issue):
            spot = found.setdefault((issue.start, issue.end), Spot(issue.start, issue.end, set()))
            spot.candidates |= options
            spot.flagged, spot.message, spot.rule = True, spot.message or issue.message, spot.rule or issue.rule
            spot.favoured = spot.favoured or best_suggestion(text[issue.start:issue.end], issue, text)
            spot.misspelt = spot.misspelt or issue.kind == "spelling"
    words = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)] if free else []
    forms: dict[tuple[int, int], set[str]] = {}
    for n, (start, end, word) in enumerate(words):
        if hidden(start, end) or text[end:end + 1] == "-" or text[start - 1:start] == "-":
            continue  # "as-tu", "a-t-il": an inversion is written as it is
        previous = words[n - 1][2] if n else ""
        options = alternatives(word) if not _verb_a(word, previous) else set()
        previous = previous.lower()
        after_auxiliary = previous in AUXILIARIES or previous in AUXILIARY_SOUNDS
        if not word[0].isdigit() and not (after_auxiliary and not word.lower().endswith("er")):
            forms[(start, end)] = _stem_forms(word)  # after "a", "est"... a participle stays one
            if previous in PLURAL_BEFORE or previous.isdigit() and previous not in ("0", "1"):
                forms[(start, end)] |= {word + "s"} if not word.endswith(("s", "x", "z")) else set()
        if options:
            spot = found.setdefault((start, end), Spot(start, end, set()))
            spot.candidates |= options
    for (start, end, first), (start2, end2, second) in zip(words, words[1:]):
        name = second[0].isupper() or first[0].isupper() and text[:start].rstrip()[-1:] not in ("", ".", "!", "?")
        if text[end:start2] == " " and not hidden(start, end2) and first.isalpha() and second[0].isalpha() \
                and not name and len(first) + len(second) >= 5:
            forms[(start, end2)] = {first + second, f"{first}-{second}"}  # "par ce" -> "parce", "pique-nique"
    known = common_words(morph, {f for options in forms.values() for f in options})
    for (start, end), options in forms.items():
        options = {f for f in options if f in known}
        if options:
            spot = found.setdefault((start, end), Spot(start, end, set()))
            spot.candidates |= options
    for spot in found.values():  # "Gilles a aboyé": the verb, whatever a rule suggests
        before = WORD.findall(text[max(0, spot.start - 40):spot.start])
        if _verb_a(text[spot.start:spot.end], before[-1] if before else ""):
            spot.candidates -= {"à", "À"}
    ordered = sorted((s for s in found.values() if s.candidates), key=lambda s: (s.start, -s.end))
    out: list[Spot] = []
    for spot in ordered:  # overlapping spots: the first (the longest at a start) wins
        if out and spot.start < out[-1].end:
            continue
        out.append(spot)
    return out


class Scorer:
    """Log-probabilities of sentence variants from an engine that scores tokens (llama.cpp)."""

    def __init__(self, engine) -> None:
        require(engine, "logprobs", "LM-ranked correction")
        require(engine, "tokens", "LM-ranked correction")
        self.engine = engine
        # The variants of a spot go in together when the engine batches: one decode step for all.
        self._threads = ThreadPoolExecutor(engine.parallel, "rank") if engine.parallel > 1 else None

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()

    def compare(self, variants: Sequence[str]) -> list[float]:
        """Each variant's log-probability from the first token where they differ (what they share is
        the same for all, so it is left out and its KV cache reused)."""
        tokens = [self.engine.encode_text(v) for v in variants]
        if max(map(len, tokens)) >= self.engine.n_ctx:
            return [0.0] * len(variants)  # a "sentence" longer than the context: nothing is changed there
        shared = min(len(t) for t in tokens) - 1
        for i in range(shared):
            if any(t[i] != tokens[0][i] for t in tokens[1:]):
                shared = i
                break
        start = max(1, shared)
        def score(ids: list[int]) -> float:
            return math.fsum(self.engine.logprobs(ids, start)) if len(ids) > start else 0.0

        return list(self._threads.map(score, tokens)) if self._threads is not None else [score(t) for t in tokens]


@dataclass(frozen=True)
class Choice:
    """A spot decided: ``text[start:end]`` (``before``) -> ``after``, by ``margin`` nats over the next best
    option (what is written, or another candidate: a misspelling's two likely fixes make it unsure)."""

    start: int
    end: int
    before: str
    after: str
    margin: float
    flagged: bool
    message: str
    rule: str
    guess: bool = False  # a misspelling's pick two letters or more from it that does not sound like it

    @property
    def confidence(self) -> float:
        """The model's probability of ``after`` against the next best option (a logistic of the margin)."""
        return 1 / (1 + math.exp(-self.margin))

    @property
    def sure(self) -> bool:
        """Applied, not only proposed: by a margin, and not a guess ("vaissel" -> "naisse": the word meant
        was not among the checker's suggestions, and the model can only pick the least bad one)."""
        return self.margin >= (SURE if self.flagged else SURE_UNFLAGGED) and not self.guess


def decide(text: str, found: Sequence[Spot], scorer: Scorer, cancelled: Callable[[], bool] | None = None,
           apply_unsure: bool = False) -> list[Choice]:
    """Each spot decided left to right on the text as the choices before it left it; choices below
    ``UNSURE`` are dropped. Spans are in ``text``; sure choices (all, with ``apply_unsure``) are
    meant to be applied."""
    from .sentences import sentence_spans

    choices: list[Choice] = []
    current, shift = text, 0
    sentences = sentence_spans(current)
    for spot in found:
        if cancelled is not None and cancelled():
            break
        start, end = spot.start + shift, spot.end + shift
        written = current[start:end]
        # The writer meant a word near what is written, or one that sounds like it: a nat per letter changed.
        near = sorted((c for c in spot.candidates if c != written),
                      key=lambda c: (c != spot.favoured, letters_apart(written, c, spot.misspelt), c))[:MAX_CANDIDATES]
        options = [written, *near]
        if len(options) < 2:
            continue
        # Scored within its sentence: the same choice alone or inside a paragraph, and a bounded cost.
        first, last = next(((a, b) for a, b in sentences if a <= start and end <= b), (0, len(current)))
        cut = current.find(" ", min(last, end + RIGHT_CONTEXT))  # what follows the spot, a few words of it
        last = min(last, cut) if cut != -1 else last
        scores = scorer.compare([current[first:start] + o + current[end:last] for o in options])
        scores = [score + RULE if o == spot.favoured else score - DISTANCE * letters_apart(written, o, spot.misspelt)
                  for score, o in zip(scores, options)]  # the rule's pick is near by its own measure
        best = max(range(len(options)), key=scores.__getitem__)
        margin = scores[best] - max(score for i, score in enumerate(scores) if i != best)  # over the runner-up
        if best == 0 or margin < UNSURE:
            continue
        guess = spot.misspelt and letters_apart(written, options[best], True) >= 2
        choice = Choice(spot.start, spot.end, written, options[best], margin, spot.flagged, spot.message, spot.rule,
                        guess)
        choices.append(choice)
        if choice.sure or apply_unsure:
            current = current[:start] + choice.after + current[end:]
            shift += len(choice.after) - len(written)
            sentences = sentence_spans(current)
    return choices
