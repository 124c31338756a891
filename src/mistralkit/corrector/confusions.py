"""Our own rules for homophones Grammalecte lets through in pupils' writing, decided on the
dictionary's readings of the neighbouring words (``morphology``), never on a word list of a sentence:

- "son" / "sont": "son" before a word that cannot follow a determiner ("son allé", "son des", the
  conjugated verb of "son partit", which the checker then makes a participle);
  "sont" before a noun that only a determiner can introduce ("sont vélo");
- "c'est", "sait", "ces", "ses" / "s'est": after a subject, before the participle of a verb that can
  be pronominal ("Nathan c'est levé", "Elle sait fait mal");
- "ces", "ses" / "c'est" before an adverb or a singular word ("Ses très difficile"); "c'est" / "ces"
  before a plural noun ("C'est livres");
- "on" / "ont": after a plural subject, before no verb "on" could govern ("Les enfants on peur");
- "et" / "est": after "il", "elle", "on", or after a name or noun before an adjective ("Noé et
  délicieux");
- "ma", "mon" / "m'a", "m'ont" before a participle no determiner fits ("Mon père ma dit").

Each finding is an ordinary Issue (checker "mistralkit"), so protection, rule rounds and guards treat
it like the checker's own.

>>> from .morphology import Sentence
>>> readings = {"Ils": [">il/:G:Os:O3:m:p/*"], "son": [">son/:N:m:s/*", ">son/:G:Dp:e:s/*"],
...             "partis": [">parti/:N:m:p/*", ">partir/:V3_i____e_:Q:A:m:p/*"]}
>>> [i.suggestions for i in issues("Ils son partis.", lambda words: readings)]
[('sont',)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .guards import fold
from .morphology import Morph, Sentence, Word, keep_case
from .types import Issue, Protected

CHECKER = "mistralkit"
CLITICS = frozenset("ne n' n’ y en se s' s’ le la les l' l’ lui leur me m' m’ te t' t’ nous vous".split())
Finding = tuple[int, int, str, str, str]  # start, end, replacement, rule, why
Rule = Callable[[Sentence, int, str], Finding | None]


def _after_adverb(s: Sentence, i: int) -> Word | None:
    """The word after word ``i``, or the one after that when the first is an adverb ("très")."""
    nxt = s[i + 1]
    if nxt is not None and nxt.has("W") and not nxt.participle and s.joined(i + 1, i + 2):
        return s[i + 2]
    return nxt if s.joined(i, i + 1) else None


def _plain(word: Word | None) -> bool:
    """A known lower-case word of letters: one the rules may reason about."""
    return word is not None and word.known and word.text[0].isalpha() and word.text[0].islower()


def son_sont(s: Sentence, i: int, apos: str) -> Finding | None:
    w, prev = s[i], s[i - 1]
    if w.lower == "son" and not (prev is not None and prev.determiner and s.joined(i - 1, i)):
        nxt = _after_adverb(s, i)
        if _plain(nxt) and not nxt.nominal_number("s", "i") and not nxt.has("B") and (
                nxt.participle or nxt.nominal or nxt.has("D") or nxt.finite and not nxt.has("N")):
            return w.start, w.end, keep_case(w.text, "sont"), "son_sont", \
                "« son » ne peut pas introduire ce mot : c'est le verbe « être », « sont »"
    if w.lower == "sont" and s.joined(i, i + 1):
        nxt = s[i + 1]
        if _plain(nxt) and nxt.has("N") and nxt.nominal_number("s") and not nxt.nominal_number("p") and all(
                not r.startswith(">") or ":N" in r for r in nxt.readings) and not nxt.has("A"):
            return w.start, w.end, keep_case(w.text, "son"), "sont_son", \
                "devant un nom singulier, c'est le déterminant « son »"
    return None


def _elided_est(s: Sentence, i: int, letter: str) -> bool:
    w, nxt = s[i], s[i + 1]
    return w.lower == letter + "'" and nxt is not None and nxt.lower == "est" and s.joined(i, i + 1)


def s_est(s: Sentence, i: int, apos: str) -> Finding | None:
    """"c'est", "sait", "ces", "ses" before a pronominal participle, after a subject: "s'est"."""
    w = s[i]
    if _elided_est(s, i, "c"):
        end, after = s[i + 1].end, i + 1
    elif w.lower in ("sait", "sais", "ces", "ses"):
        end, after = w.end, i
    else:
        return None
    part = _after_adverb(s, after)
    prev = s[i - 1]
    if not (_plain(part) and part.participle and part.pronominal and not part.infinitive):
        return None
    if not s.subject_before(i) or (prev is not None and prev.lower in ("je", "j'", "tu")):
        return None
    if w.lower in ("ces", "ses") and part.nominal_number("p", "i"):
        return None
    return w.start, end, keep_case(w.text, f"s{apos}est"), "s_est", \
        "devant le participe d'un verbe pronominal, après son sujet : « s'est »"


def c_est(s: Sentence, i: int, apos: str) -> Finding | None:
    """"ces"/"ses" before what no plural determiner can introduce: "c'est"; and the reverse."""
    w = s[i]
    if w.lower in ("ces", "ses"):
        nxt = _after_adverb(s, i)
        if _plain(nxt) and not nxt.nominal_number("p", "i") and not nxt.has("B") and not nxt.participle and (
                nxt.nominal_number("s") or (nxt.determiner and nxt.has("s"))):
            return w.start, w.end, keep_case(w.text, f"c{apos}est"), "ces_c_est", \
                "« ces » et « ses » précèdent un pluriel : ici, c'est « c'est »"
    if _elided_est(s, i, "c") and s.joined(i + 1, i + 2):
        nxt = s[i + 2]
        if _plain(nxt) and nxt.has("N") and nxt.nominal_number("p") and not nxt.nominal_number("s", "i"):
            return w.start, s[i + 1].end, keep_case(w.text, "ces"), "c_est_ces", \
                "devant un nom pluriel, c'est le déterminant « ces »"
    return None


def on_ont(s: Sentence, i: int, apos: str) -> Finding | None:
    w, prev, nxt = s[i], s[i - 1], s[i + 1]
    if w.lower != "on" or prev is None or not s.joined(i - 1, i) or not s.joined(i, i + 1):
        return None
    plural = prev.lower in ("ils", "elles") or (
        _plain(prev) and prev.has("N") and prev.nominal_number("p") and not prev.nominal_number("s", "i"))
    if plural and _plain(nxt) and nxt.lower not in CLITICS and not nxt.person("3s") and not nxt.pronoun:
        return w.start, w.end, keep_case(w.text, "ont"), "on_ont", \
            "après un sujet pluriel, c'est le verbe « avoir », « ont »"
    return None


def et_est(s: Sentence, i: int, apos: str) -> Finding | None:
    w, prev = s[i], s[i - 1]
    if w.lower != "et" or prev is None or not s.joined(i - 1, i) or s.at_sentence_start(i):
        return None
    nxt = _after_adverb(s, i)
    if not _plain(nxt) or nxt.pronoun or nxt.determiner:
        return None
    if prev.lower in ("il", "elle", "on"):
        return w.start, w.end, "est", "et_est", "après « il », « elle », « on », c'est le verbe « est »"
    noun = s.is_name(i - 1) or (prev.has("N") and not prev.has("A") and not prev.verb
                                and not prev.nominal_number("p"))
    adjective = (nxt.has("A") or nxt.participle) and not nxt.infinitive and not (
        nxt.has("N") and not nxt.has("A"))
    if noun and adjective:
        return w.start, w.end, "est", "et_est", \
            "entre un sujet et un adjectif, c'est le verbe « est »"
    return None


def m_a(s: Sentence, i: int, apos: str) -> Finding | None:
    """"ma", "ta" / "m'a", "t'a" and "mon", "ton" / "m'ont", "t'ont" before a bare participle."""
    w, nxt = s[i], s[i + 1]
    if w.lower not in ("ma", "ta", "mon", "ton") or not s.joined(i, i + 1) or not _plain(nxt):
        return None
    if not nxt.participle or nxt.infinitive:
        return None
    feminine = w.lower in ("ma", "ta")
    if nxt.nominal_gender("f", "e") if feminine else nxt.nominal:
        return None
    verb = "a" if feminine else "ont"
    return w.start, w.end, keep_case(w.text, f"{w.lower[0]}{apos}{verb}"), "m_a", \
        f"devant un participe, c'est le pronom et le verbe « {w.lower[0]}'{verb} »"


def la_là(s: Sentence, i: int, apos: str) -> Finding | None:
    """"Ce chien la est" -> "Ce chien-là est": "la" after a demonstrative and its noun, before "être"
    or the end of the clause (a pronoun "la" would need a verb after it: "ce chien la mord")."""
    w, noun, det, nxt = s[i], s[i - 1], s[i - 2], s[i + 1]
    if w.lower != "la" or det is None or det.lower not in DEMONSTRATIVES or not noun.has("N"):
        return None
    if not (s.joined(i - 2, i - 1) and s.joined(i - 1, i)):
        return None
    end_of_clause = nxt is None or not s.joined(i, i + 1)
    if end_of_clause or any(r.startswith(">être/") for r in nxt.readings):
        return noun.end, w.end, "-là", "la_là", "après « ce » et son nom, c'est l'adverbe « -là »"
    return None


# Elision: the word, what it becomes before a vowel. "ce" only before "est"/"était", "si" before "il(s)".
ELIDED = {"le": "l", "la": "l", "de": "d", "je": "j", "me": "m", "te": "t", "se": "s", "ne": "n", "que": "qu",
          "lorsque": "lorsqu", "puisque": "puisqu", "jusque": "jusqu", "ce": "c", "si": "s"}
ONLY_BEFORE = {"ce": frozenset("est était étaient".split()), "si": frozenset("il ils".split())}
# The dictionary marks what a word allows before it: ";É" elision ("l'homme"), ";é" none (an aspirated h:
# "le hibou", and "onze", "oui", "yaourt"). A word it does not know elides on a vowel, not on an h.
def _vowel_start(word: Word) -> bool:
    if any(";é" in r for r in word.readings):
        return False
    if word.lower.startswith("h"):
        return any(";É" in r for r in word.readings)
    return fold(word.lower[:1]) in "aeiou" or word.lower == "y"


def elision(s: Sentence, i: int, apos: str) -> Finding | None:
    """"le arbre", "je ai", "que il", "Ce est" -> "l'arbre", "j'ai", "qu'il", "C'est" (names too: "d'Ilan")."""
    w, nxt = s[i], s[i + 1]
    if w.lower not in ELIDED or not s.joined(i, i + 1) or not nxt.text[0].isalpha() or nxt.text.isupper():
        return None
    if w.lower in ONLY_BEFORE and nxt.lower not in ONLY_BEFORE[w.lower] or not _vowel_start(nxt):
        return None
    if w.lower in ("le", "la") and nxt.lower in ("un", "une", "où", "ou"):  # "la une", "là où"
        return None
    if w.lower == "la" and nxt.participle and not nxt.nominal_gender("f", "e"):  # "elle la appelé": "l'a appelé"
        return w.start, w.end, keep_case(w.text, f"l{apos}a"), "elision", \
            "devant un participe, c'est le pronom et le verbe « l'a »"
    return w.start, nxt.start, keep_case(w.text, ELIDED[w.lower] + apos), "elision", \
        f"devant une voyelle, « {w.lower} » s'élide : « {ELIDED[w.lower]}' »"


NUMBER_WORDS = frozenset("deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze quinze seize "
                         "vingt trente quarante cinquante soixante cent mille plusieurs".split())


def _plural(word: str) -> str:
    lower = word.lower()
    if lower.endswith(("eau", "au", "eu")) and lower not in ("pneu", "bleu"):
        return word + "x"
    return word[:-2] + "aux" if lower.endswith("al") and lower not in ("bal", "festival", "carnaval") else word + "s"


def plural_after_number(s: Sentence, i: int, apos: str) -> Finding | None:
    """"2 heure", "trois cahier" -> "2 heures", "trois cahiers": a singular noun after a number of 2 or more
    (not a year, not a verb form: "en 2024 marque")."""
    w, nxt = s[i], s[i + 1]
    if not s.joined(i, i + 1) or not _plain(nxt) or nxt.lower.endswith(("s", "x", "z")):
        return None
    if w.text[0].isdigit():
        value = float(w.text.replace(",", "."))
        if value < 2 or 1000 <= value <= 2100 and "," not in w.text:
            return None
    elif w.lower not in NUMBER_WORDS:
        return None
    if not nxt.nominal_number("s") or nxt.nominal_number("p", "i") or nxt.verb or nxt.has("G"):
        return None
    plural = _plural(nxt.text)
    if not any(":p" in r or ":i" in r for r in s.readings(plural)):
        return None
    return nxt.start, nxt.end, plural, "pluriel_nombre", f"après « {w.text} », le nom se met au pluriel"


def imperative(s: Sentence, i: int, apos: str) -> Finding | None:
    """"Écoutes bien", "Manges ta soupe" -> "Écoute", "Mange": a verb in -er opening a sentence without "tu"
    is an imperative, which has no "s" (and "Va-y" is "Vas-y")."""
    w = s[i]
    if w.lower == "va-y":
        return w.start, w.end, keep_case(w.text, "vas-y"), "imperatif", "devant « y », l'impératif s'écrit « vas »"
    if not s.at_sentence_start(i) or not w.lower.endswith("es") or not w.has("Ip", "2s"):
        return None
    if not any(t.startswith(">") and ":V1" in t for t in w.readings):
        return None
    bare = w.text[:-1]
    if not any(":E" in r and ":2s" in r for r in s.readings(bare.lower())):
        return None
    return w.start, w.end, bare, "imperatif", "à l'impératif, un verbe en -er ne prend pas de « s »"


DEMONSTRATIVES = frozenset("ce cet cette ces".split())
RULES: tuple[Rule, ...] = (son_sont, s_est, c_est, on_ont, et_est, m_a, la_là, elision, plural_after_number,
                           imperative)


def hidden(protected: Sequence[Protected]) -> list[tuple[int, int]]:
    return [(p.start, p.end) for p in protected if p.kind in ("url", "email", "phone")]


def issues(text: str, morph: Morph | None, protected: Sequence[Protected] = ()) -> list[Issue]:
    """Our confusion findings in ``text``; none without a dictionary (``morph``). Words inside a
    protected URL, e-mail or phone number are no words of the sentence."""
    if morph is None:
        return []
    s = Sentence(text, morph, hidden(protected))
    apos = "’" if "’" in text and "'" not in text else "'"
    found, taken = [], -1
    for i in range(len(s)):
        for rule in RULES:
            hit = rule(s, i, apos)
            if hit and hit[0] >= taken and hit[2] != text[hit[0]:hit[1]]:
                start, end, after, name, why = hit
                found.append(Issue(start, end, f"Confusion : {why}.", (after,), f"mistralkit_{name}",
                                   "grammar", CHECKER))
                taken = end
                break
    return found
