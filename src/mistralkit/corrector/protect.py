"""What no correction may change: numbers, dates, times, amounts, percentages, phone numbers,
e-mails, URLs (regexes), names (spaCy French NER trimmed to proper nouns, titles such as "M.",
the checker's dictionary) and the user's own words.

>>> [(p.value, p.kind) for p in find_protected("Il paie 12,50 € le 7 novembre 1867.", ner=None)]
[('12,50 €', 'amount'), ('7 novembre 1867', 'date')]
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import InvalidParameter, MissingDependency
from ..text import decode
from .sentences import paragraph_spans, sentence_starts
from .types import Protected

ProperNouns = Callable[[list[str]], set[str]]

_UP = "A-ZÀ-ÖØ-ÞŒŸ"  # French capitals (re has no \p{Lu})
_SP = r"[ \u00a0\u202f]"  # a space inside one value: never a line break
_NUM = rf"\d{{1,3}}(?:{_SP}\d{{3}})+(?:[.,]\d+)?(?!\d)|\d+(?:[.,]\d+)*"  # 58 213 | 12,50 | 1.000.000
_MONTHS = ("janvier|f[ée]vrier|mars|avril|mai|juin|juillet|ao[ûu]t|septembre|octobre|novembre|d[ée]cembre"
           "|janv\\.|f[ée]vr\\.|sept\\.|oct\\.|nov\\.|d[ée]c\\.")
_DAYS = "lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche"
_DAY_NUMBER = r"(?:1er|1ᵉʳ|\d{1,2})"
_CURRENCY = r"(?:[€$£¥]|(?:euros?|centimes?|dollars?|francs?|cents|yens?|EUR|USD|CHF|GBP)(?!\w))"
_SCALE = r"(?:(?:millions?|milliards?|mille){_SP}+(?:d['’]{_SP}?)?|[kM]{_SP}?(?=€))".replace("{_SP}", _SP)
_URL_TAIL = r"[^\s<>«»\"]*"
_TLD = "fr|com|org|net|eu|be|ch|io|info|edu|gouv"  # not .ca, .re: "parti.ca va" is a missing space
_PHONE_SEP = r"[ .\-\u00a0]?"

_URL = (rf"(?:https?|ftp)://{_URL_TAIL}|(?<![\w@.])www\.[\w-]+(?:\.[\w-]+)+{_URL_TAIL}"
        rf"|(?<![\w@.\-/])[\w-]+(?:\.[\w-]+)*\.(?:{_TLD})(?:/{_URL_TAIL})?(?![\w@])")
_EMAIL = r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
_PHONE = (rf"(?<![\w+])(?:(?:\+|00)33{_PHONE_SEP}(?:\(0\){_PHONE_SEP})?[1-9]|0[1-9])(?:{_PHONE_SEP}\d{{2}}){{4}}(?!\d)"
          rf"|(?<![\w+])\+\d{{1,3}}(?:{_PHONE_SEP}\d{{2,4}}){{2,5}}(?!\d)")
_AMOUNT = rf"(?<!\w)[€$£]{_SP}?(?:{_NUM})|(?<!\w)(?:{_NUM}){_SP}?{_SCALE}?{_CURRENCY}"
_PERCENT = rf"(?<!\w)(?:{_NUM}){_SP}?(?:%|‰|pour{_SP}?cents?(?!\w)|pourcents?(?!\w))"
_DATE = (rf"(?<!\w)(?:(?:{_DAYS}){_SP}+)?{_DAY_NUMBER}{_SP}+(?:{_MONTHS})(?:{_SP}+\d{{4}})?(?!\w)"  # lundi 3 mars 2024
         rf"|(?<!\w)(?:{_MONTHS}){_SP}+\d{{4}}(?!\d)"  # mai 2024
         r"|(?<![\w/.\-])\d{1,2}([/.\-])\d{1,2}\1\d{2,4}(?![\w/])"  # 12/03/2024, 12.03.24
         r"|(?<!\w)\d{4}-\d{2}-\d{2}(?!\w)")  # 2024-03-12
_TIME = (rf"(?<!\w)\d{{1,2}}{_SP}?[hH](?:{_SP}?\d{{2}})?(?!\w)"  # 9h, 14h30, 14 h 30
         r"|(?<![\w:])\d{1,2}:\d{2}(?::\d{2})?(?![\w:])"  # 14:30
         rf"|(?<!\w)\d{{1,2}}{_SP}heures?(?:{_SP}\d{{1,2}}(?:{_SP}?min(?:utes?)?)?)?(?!\w)")  # 3 heures
# Ordinals: 3e, 1er, 2nde, XIXe, François Ier. A roman numeral needs its suffix, and a lone C or L
# with "e" is a word ("Ce", "Le"); bare numerals ("Louis XIV") are left to NER.
_ORDINAL = (r"(?<!\w)\d+(?:er|re|ère|e|ème|è|ᵉ|ᵉʳ|nd|nde)(?!\w)"
            r"|(?<!\w)(?:[IVX][IVXLC]*|[LC][IVXLC]+)(?:e|ème|ᵉ)(?!\w)|(?<!\w)Ier(?!\w)")

# (kind, pattern), the most specific kinds first.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("url", re.compile(_URL)),
    ("email", re.compile(_EMAIL)),
    ("phone", re.compile(_PHONE)),
    ("amount", re.compile(_AMOUNT)),
    ("percent", re.compile(_PERCENT)),
    ("date", re.compile(_DATE, re.IGNORECASE)),
    ("time", re.compile(_TIME)),
    ("number", re.compile(_ORDINAL)),
    ("number", re.compile(rf"(?<![\w\-−+])[-−+]?(?:{_NUM})")),  # 3, -5, 58 213, 12,50
    ("number", re.compile(r"(?<!\w)\w*\d\w*")),  # A380, mp3, 3D: a word that holds a digit
    # A word holding an invisible character (zero-width space or joiner, soft hyphen, BOM): the checker
    # reads it as two words or a misspelling, and a "fix" would drop the character. Left as written.
    ("invisible", re.compile(r"[\w'’-]*[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]+[\w'’-]*")),
    # A capital after a small letter inside a word: a brand or a name ("iPhone", "eBay", "McDonald").
    ("name", re.compile(r"(?<!\w)[^\W\d_]*[a-zà-ÿ][A-ZÀ-Þ][^\W\d_]*")),
)
# On a tie in width, the earlier kind names the merged span.
SPECIFICITY = ("url", "email", "phone", "amount", "percent", "date", "time", "number", "user", "invisible", "name")

# Capitalised where French capitalises common words: never a name on its own.
TITLE_WORDS = frozenset("M MM Mme Mmes Mlle Mlles Dr Drs Pr Me Mgr Monsieur Madame Mademoiselle Messieurs "
                        "Mesdames Docteur Professeur Maître".split())
NOT_NAMES = frozenset("lundi mardi mercredi jeudi vendredi samedi dimanche janvier février fevrier mars avril mai "
                      "juin juillet août aout septembre octobre novembre décembre decembre bonjour bonsoir salut "
                      "merci hier demain le la les un une des du de au aux mon ton son ma ta sa mes tes ses notre nos "
                      "votre vos leur leurs ce cet cette ces je tu il elle on nous vous ils elles et ou où mais donc "
                      "car ni que qui quoi quand comme si".split())
# After a sentence's first word, these say it was no name but a misspelt word or a verb spaCy took
# for one ("Demin on va", "Kan je suis", "Apelle moi", "Pendan les vacances", "Écris à Paul").
_NOT_AFTER_A_NAME = frozenset("je j' j’ tu il elle on nous vous ils elles moi toi ma mon mes ta ton tes sa son ses "
                               "notre nos votre vos".split())  # "Manges ta soupe": a verb, which a possessive follows
_NAME_TOKEN = re.compile(r"[^\W\d_]+(?:[-'’.][^\W\d_]+)*\.?")
_CLOSED_POS = frozenset("DET ADP PRON CCONJ SCONJ AUX PUNCT SYM NUM PART SPACE".split())
_TITLE = re.compile(rf"(?<!\w)(?:M|MM|Mme|Mmes|Mlle|Mlles|Dr|Pr|Me|Mgr|Monsieur|Madame|Mademoiselle|Docteur|"
                    rf"Professeur|Maître)\.?{_SP}+([{_UP}][\w'’]*(?:(?:-|{_SP}+)[{_UP}][\w'’]*){{0,2}})")
_CAPITALISED = re.compile(rf"(?<![\w])[{_UP}][^\W\d_]*")
_TRAILING = ".,;:!?'’»\")]}"


def _trim_url(value: str) -> str:
    """Drop the sentence's punctuation that an URL pattern swallowed ("voir www.site.fr.")."""
    while value and value[-1] in _TRAILING and not (value[-1] == ")" and "(" in value):
        value = value[:-1]
    return value


# A singular unit after a number of 2 or more ("9 heure", "7 euro"): the number is protected, the
# unit is a word like any other, which the agreement rules may put in the plural.
_SINGULAR_UNIT = re.compile(rf"({_NUM}){_SP}?(?:heure|euro|centime|dollar|franc|yen)$")


def _number_alone(value: str) -> str | None:
    """The number of ``value`` when its unit is singular where French wants a plural, else None."""
    found = _SINGULAR_UNIT.fullmatch(value)
    if found is None:
        return None
    number = found[1]
    digits = re.sub(r"[\s\u00a0\u202f]", "", number).replace(",", ".")
    try:
        return number if float(digits) >= 2 else None
    except ValueError:
        return None


def _regex_spans(text: str) -> list[Protected]:
    found = []
    for kind, pattern in PATTERNS:
        for match in pattern.finditer(text):
            value = _trim_url(match.group()) if kind == "url" else match.group()
            if kind in ("amount", "time") and (number := _number_alone(value)):
                value, kind = number, "number"
            if value:
                end = match.start() + len(value)
                found.append(Protected(match.start(), end, value, kind))  # type: ignore[arg-type]
    return found


def _word_pattern(word: str) -> re.Pattern[str]:
    """Whole-word, case-sensitive; any run of spaces in a phrase matches any run of spaces."""
    body = r"\s+".join(re.escape(part) for part in word.split())
    left = r"(?<!\w)" if re.match(r"\w", word) else ""
    right = r"(?!\w)" if re.search(r"\w$", word) else ""
    return re.compile(left + body + right)


def _user_spans(text: str, words: Iterable[str]) -> list[Protected]:
    return [Protected(m.start(), m.end(), m.group(), "user", "user")
            for word in words if word.strip() for m in _word_pattern(word.strip()).finditer(text)]


def _title_spans(text: str) -> list[Protected]:
    """The capitalised words after a title ("M. Leblanc", "Mme Petit"): names spaCy may miss."""
    return [Protected(m.start(1), m.end(1), m.group(1), "name", "regex") for m in _TITLE.finditer(text)]


_MODELS: dict[str, Any] = {}
_LOCK = threading.Lock()


def _import_spacy() -> Any:
    """spaCy, without the PyTorch its thinc layer imports when torch is installed: the NER model runs
    on thinc's own NumPy ops, and importing torch costs a CLI call 1-2 s. A later ``import torch``
    (hybrid mode on a transformers model) works as usual."""
    import sys

    if "spacy" in sys.modules or "torch" in sys.modules:
        import spacy

        return spacy
    sys.modules["torch"] = None  # type: ignore[assignment]  # "import torch" raises ImportError meanwhile
    try:
        import spacy
    finally:
        del sys.modules["torch"]
    return spacy


# Letters, as the few ranges written in the languages mistralkit corrects use (Latin, Greek, Cyrillic).
_EXTRA = "\u0100-\u024f\u1e00-\u1eff\u0370-\u03ff\u0400-\u04ff"  # cased letters of both cases
_LETTERS = {"ALPHA_LOWER": "a-zµß-öø-ÿ" + _EXTRA, "ALPHA_UPPER": "A-ZÀ-ÖØ-Þ" + _EXTRA}
_LETTERS["ALPHA"] = _LETTERS["ALPHA_LOWER"] + "A-ZÀ-ÖØ-Þ"


def _import_language(lang: str) -> None:
    """Import ``spacy.lang.<lang>`` with compact letter classes.

    spaCy writes "a letter" as every letter range of every script it knows; its French tokenizer
    exceptions put that class in some 800 character sets of one regex, which ``re`` takes 2.3 s to
    compile: most of a one-sentence ``mistralkit correct``. Written as the ranges of the scripts above,
    the same regexes compile in 0.05 s and tokenize the project's 514 French test and bench sentences
    exactly as before (tests/test_correct.py). The pipeline is then loaded without its saved tokenizer
    (``exclude=["tokenizer"]``), which holds the same patterns in the long form; the language's own
    tokenizer, built from these, takes its place."""
    import importlib
    import sys

    from spacy.lang import char_classes

    if f"spacy.lang.{lang}" in sys.modules:
        return
    saved = {key: getattr(char_classes, key) for key in _LETTERS}
    for key, value in _LETTERS.items():
        setattr(char_classes, key, value)
    try:
        importlib.import_module(f"spacy.lang.{lang}")
    except ImportError:
        pass  # spacy.load says what is missing
    finally:
        for key, value in saved.items():
            setattr(char_classes, key, value)


def load_ner(name: str = "fr_core_news_sm") -> Any:
    """The spaCy pipeline ``name``, loaded once per process, without the pipes protection does not use
    (its tokenizer built from compact letter classes: ``_import_language``)."""
    with _LOCK:
        if name not in _MODELS:
            try:
                spacy = _import_spacy()
            except ImportError:
                raise MissingDependency("spaCy is not installed", hint="pip install 'mistralkit[correct]'") from None
            _import_language(name.split("_", 1)[0])
            try:
                _MODELS[name] = spacy.load(name, exclude=["parser", "lemmatizer", "senter", "tokenizer"])
            except OSError:
                raise MissingDependency(f"spaCy model {name!r} is not installed",
                                        hint=f"pip install 'mistralkit[correct]' or python -m spacy download {name}"
                                        ) from None
        return _MODELS[name]


def _keep(token: Any, in_entity: bool, starts: set[int]) -> bool:
    """A name token: a capitalised open-class word; inside an entity any such word ("Marie",
    "Besançon" are often tagged NOUN), outside one only a PROPN that is not at a sentence start."""
    word = token.text
    if not word[:1].isupper() or token.pos_ in _CLOSED_POS or not _NAME_TOKEN.fullmatch(word):
        return False
    if word.rstrip(".") in TITLE_WORDS or word.lower() in NOT_NAMES:
        return False
    return in_entity or (token.pos_ == "PROPN" and token.idx not in starts)


def _misread_start(tokens: list[Any], run: list[Any], starts: set[int]) -> bool:
    """A run at a sentence start followed by a subject pronoun, a determiner, a preposition or an adverb
    ("Écoutes bien": a verb; a name there is still protected when the checker's dictionary has it)."""
    if run[0].idx not in starts or run[-1].i + 1 >= len(tokens):
        return False
    following = tokens[run[-1].i + 1]
    return following.lower_ in _NOT_AFTER_A_NAME or following.pos_ in ("DET", "ADP", "ADV")


def _name_runs(doc: Any, offset: int, starts: set[int]) -> list[Protected]:
    """Each maximal run of name tokens in ``doc`` (one paragraph, at ``offset`` in the text)."""
    in_entity = {i for ent in doc.ents for i in range(ent.start, ent.end)}
    tokens = list(doc)
    kept = [_keep(token, token.i in in_entity, starts) for token in tokens]
    for i in range(1, len(tokens) - 1):  # Dupont-Moretti: a glued hyphen between two name tokens
        if tokens[i].text in "-‐" and kept[i - 1] and kept[i + 1] and not tokens[i - 1].whitespace_ \
                and not tokens[i].whitespace_:
            kept[i] = True
    for i in range(len(tokens) - 1):  # Rendez-vous, Est-ce: part of a compound, not a name
        if kept[i] and not tokens[i].whitespace_ and tokens[i + 1].text.startswith("-") and not kept[i + 1]:
            kept[i] = False
    runs: list[list[Any]] = []
    for token, keep in zip(tokens, kept):
        glued = bool(runs) and runs[-1][-1].i == token.i - 1 and "\n" not in runs[-1][-1].whitespace_
        if keep and glued:
            runs[-1].append(token)
        elif keep:
            runs.append([token])
    spans = []
    for run in runs:
        if not _misread_start(tokens, run, starts):
            start, end = run[0].idx, run[-1].idx + len(run[-1])
            spans.append(Protected(offset + start, offset + end, doc.text[start:end], "name", "spacy"))
    return spans


def _spacy_spans(text: str, ner: str, starts: set[int]) -> list[Protected]:
    nlp = load_ner(ner)
    paragraphs = paragraph_spans(text)  # bounded chunks: spaCy refuses texts over nlp.max_length
    found = []
    for (start, end), doc in zip(paragraphs, nlp.pipe(text[s:e] for s, e in paragraphs)):
        found += _name_runs(doc, start, {s - start for s in starts if start <= s < end})
    return found


def _dictionary_spans(text: str, proper_nouns: ProperNouns) -> list[Protected]:
    """Capitalised words the checker's dictionary tags as proper nouns, wherever they stand."""
    matches = list(_CAPITALISED.finditer(text))
    names = proper_nouns(list(dict.fromkeys(m.group() for m in matches))) if matches else set()
    return [Protected(m.start(), m.end(), m.group(), "name", "dictionary") for m in matches if m.group() in names]


def _elsewhere(text: str, names: list[Protected]) -> list[Protected]:
    """Every other occurrence of a name found once: a sentence start hides the second "Léa"."""
    return [Protected(m.start(), m.end(), m.group(), "name", name.source)
            for name in {p.value: p for p in names}.values() for m in _word_pattern(name.value).finditer(text)]


def _merge(text: str, found: list[Protected]) -> list[Protected]:
    """Overlapping spans become one covering them all, with the kind of the widest (then the most
    specific): an e-mail that holds a number is one e-mail."""
    rank = {kind: i for i, kind in enumerate(SPECIFICITY)}
    merged: list[Protected] = []
    cluster: list[Protected] = []

    def close() -> None:
        if cluster:
            best = min(cluster, key=lambda p: (p.start - p.end, rank[p.kind]))
            start, end = cluster[0].start, max(p.end for p in cluster)
            merged.append(Protected(start, end, text[start:end], best.kind, best.source))

    for span in sorted(found, key=lambda p: (p.start, -p.end)):
        if cluster and span.start >= max(p.end for p in cluster):
            close()
            cluster = []
        cluster.append(span)
    close()
    return merged


def find_protected(text: str, *, words: Iterable[str] = (), ner: str | None = "fr_core_news_sm",
                   proper_nouns: ProperNouns | None = None) -> list[Protected]:
    """Every span of ``text`` that no correction may change, sorted, without overlaps. ``ner=None``
    skips spaCy; ``proper_nouns`` is the checker's dictionary lookup; ``words`` the user's own."""
    starts = sentence_starts(text)
    found = _regex_spans(text) + _user_spans(text, words) + _title_spans(text)
    if ner:
        found += _spacy_spans(text, ner, starts)
    if proper_nouns is not None:
        found += _dictionary_spans(text, proper_nouns)
    found += _elsewhere(text, [p for p in found if p.kind == "name"])
    return _merge(text, found)


def values(spans: Iterable[Protected], start: int = 0, end: int | None = None) -> Counter[str]:
    """The multiset of protected strings (those inside ``[start, end)`` when given), for the guards."""
    return Counter(p.value for p in spans if p.start >= start and (end is None or p.end <= end))


PROTECT_FILE_LIMIT = 1 << 20


def read_protect_file(path: str | Path) -> list[str]:
    """The words and phrases of a protect file: one a line, ``#`` starts a comment, blank lines skipped."""
    from ..text import read_bounded

    data = read_bounded(path, PROTECT_FILE_LIMIT, "protect file")
    words: list[str] = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        where = f"{path}:{number}"
        if b"\0" in raw:
            raise InvalidParameter(f"{where}: not a text line (a NUL byte)", hint="give a text file, not a binary one")
        line = decode(raw, where).rstrip("\r")
        line = re.sub(r"(?:^|\s)#.*", "", line).strip()  # "C#" stays: a comment starts after a space
        if line and line not in words:
            words.append(line)
    return words
