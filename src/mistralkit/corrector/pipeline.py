"""``mistralkit.correct``: rules (checker suggestions outside protected spans); in rank mode a model
chooses among the rules' candidates by their likelihood (``ranking.py``) instead; in hybrid mode an LLM
rewrite of each sentence follows the rules, kept or refused by the guards.

>>> from mistralkit import correct
>>> correct("Il a manger une pomme.").corrected  # doctest: +SKIP
'Il a mangé une pomme.'
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from ..engines.base import Engine
from ..errors import ContextOverflow, InvalidParameter, MistralkitError
from ..settings import CorrectSettings
from ..text import check as check_text
from . import edits as E
from . import llm
from .types import Checker, Correction, Issue, Protected, Refusal

log = logging.getLogger(__name__)
RULE_ROUNDS = 4  # rule passes at most: each re-checks the text the previous one left
RANK_PARALLEL = 4  # sequences the rank mode's own model decodes at once
RANK_CTX = 1024  # tokens per slot: a scored sentence is far shorter (a longer one keeps its spots as they are)
PIECE = 4000  # characters corrected at once at most (Grammalecte checks ~7,000 a second here)
CANCELLED = "cancelled: the request was abandoned, the sentence is kept as the rules left it"
Cancelled = Callable[[], bool]


@dataclass
class _Stage:
    """Seconds spent per stage, added up over paragraphs."""

    seconds: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, fn: Callable, *args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started


class Corrector:
    """A checker process, the NER model and (hybrid) a loaded LLM, kept for many texts. Close it."""

    def __init__(self, settings: CorrectSettings | None = None, *, checker: Checker | None = None,
                 engine: Engine | None = None, model_name: str | None = None) -> None:
        """``engine`` (rank and hybrid modes): the model that scores or rewrites, any ``Engine`` (the server
        hands in its queue as one); without one, those modes load ``settings.model``."""
        from .checkers import open_checker

        self.settings = settings or CorrectSettings()
        self.checker = checker or open_checker(self.settings.checker, url=self.settings.languagetool_url)
        self._owns_checker = checker is None
        self._loaded = None
        self.engine, self.model_name = engine, model_name
        if self.settings.mode != "rules" and engine is None:
            self._load_model()
        self._scorer = None

    def _load_model(self) -> None:
        from ..api import load
        from ..settings import load as load_settings

        from ..models.catalog import BASE_MODEL

        s = self.settings
        model = s.model or (BASE_MODEL if s.mode == "rank" else None)  # ranking needs French, not chat
        parallel = RANK_PARALLEL if s.mode == "rank" else 1  # a spot's variants are scored together
        ctx = RANK_CTX if s.mode == "rank" else None  # a sentence at a time: a small KV cache per slot
        self._loaded = loaded = load(load_settings({"model": model, "adapter": s.adapter, "ctx": ctx}).settings,
                                     parallel)
        self.engine, self.model_name = loaded.engine, loaded.model.name

    def close(self) -> None:
        if self._scorer is not None:
            self._scorer.close()
        if self._owns_checker:
            self.checker.close()
        if self._loaded is not None:
            self._loaded.close()

    def __enter__(self) -> Corrector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the whole text ---------------------------------------------------------------------------

    def correct(self, text: str, *, protect: Sequence[str] = (), cancelled: Cancelled | None = None) -> Correction:
        """Correct ``text`` paragraph by paragraph; edits and spans index ``text``. Once ``cancelled()``
        is true (an HTTP client gone), no further sentence is sent to the model: the rules output stands."""
        pieces = list(self.paragraphs(text, protect=protect, cancelled=cancelled))
        return join(text, pieces, self.settings.mode, self.checker.name, self.model_name)

    def paragraphs(self, text: str, *, protect: Sequence[str] = (),
                   cancelled: Cancelled | None = None) -> Iterator[tuple[int, Correction]]:
        """(offset in ``text``, correction) of each paragraph in order, as each one is done; a paragraph
        over ``PIECE`` characters goes in pieces of whole sentences (the work stays linear in the text's
        length). Once ``cancelled()`` is true nothing more is corrected: the rest stays as it was."""
        from .sentences import correction_spans

        validate(text)
        words = tuple(dict.fromkeys((*self.settings.protect, *protect)))
        for start, end in correction_spans(text, PIECE):
            if cancelled is not None and cancelled():
                return
            yield start, self.paragraph(text[start:end], words, cancelled)

    # --- one paragraph ----------------------------------------------------------------------------

    def paragraph(self, text: str, words: Sequence[str] = (), cancelled: Cancelled | None = None) -> Correction:
        from .protect import find_protected

        stage = _Stage()
        started = time.perf_counter()
        protected = stage.timed("protect", find_protected, text, words=words, ner=self.settings.spacy_model,
                                proper_nouns=self.checker.proper_nouns)
        issues = stage.timed("check", self._issues, text, protected)
        proposed: list[E.Edit] = []
        if self.settings.mode == "rank":
            middle, rules, left, proposed = self._ranked(text, protected, issues, stage, cancelled)
        else:
            middle, rules, left = self._rules(text, protected, issues, stage, cancelled)
        middle, rules, left = self._sure_rules(text, middle, rules, protected, left)
        final, refused = middle, []
        if self.settings.mode == "hybrid":
            final, refused, left = self._rewrite(middle, _moved(protected, rules), left, stage,
                                                 [(e.before, e.after) for e in rules], cancelled)
        stage.seconds["total"] = time.perf_counter() - started
        in_final = _moved(protected, E.diff_edits(text, final, "llm"))
        left = [i for i in left if not E.overlaps(i.start, i.end, in_final)]  # a name is no mistake
        edits = [e for e in E.combine(text, rules, middle, final) if e.before != e.after]  # a fix undone: no edit
        return Correction(text, final, self.settings.mode, edits, proposed, protected, refused, left, stage.seconds,
                          self.checker.name, self.model_name)

    def _rules(self, text: str, protected: list[Protected], issues: list[Issue], stage: _Stage,
               cancelled: Cancelled | None = None) -> tuple[str, list[E.Edit], list[Issue]]:
        """Rounds of picks a word apart, re-checked after each (a fix often settles its neighbours)."""
        current, done, spans, seen = text, [], protected, {text}
        for _ in range(RULE_ROUNDS):
            if cancelled is not None and cancelled():
                break
            picks, _ = E.rule_edits(current, issues, spans)
            following = E.apply(current, picks)
            if not picks or following in seen:  # nothing left, or going round in circles
                break
            done = E.combine(text, done, current, following, "rule", picks)
            spans, current = _moved(spans, picks), following
            seen.add(current)
            issues = stage.timed("check", self._issues, current, spans)
        return current, done, issues

    def _sure_rules(self, text: str, current: str, done: list[E.Edit], protected: list[Protected],
                    left: list[Issue]) -> tuple[str, list[E.Edit], list[Issue]]:
        """The sure rules, on the text the word rules (or the model) left: elisions ("si il" -> "s'il",
        which the model's scores may leave; found by the rounds' last check, among ``left``), capitals
        opening sentences and the paragraph's final mark (``typography.py``): (text, edits in ``text``'s
        coordinates, the issues left moved to the new text)."""
        from .typography import issues as typography

        def elisions(current: str, spans: list[Protected]) -> list[Issue]:
            return [i for i in left if i.rule == "mistralkit_elision"]

        for finder in (elisions, typography):  # one after the other: "ce est" -> "c'est" -> "C'est"
            spans = _moved(protected, done)
            picks = [E.Edit(i.start, i.end, current[i.start:i.end], i.suggestions[0], "rule", i.message, i.rule,
                            0.95) for i in finder(current, spans) if not E.overlaps(i.start, i.end, spans)]
            if picks:
                following = E.apply(current, picks)
                done, current, left = E.combine(text, done, current, following, "rule", picks), following, \
                    _moved(left, picks)
        return current, done, left

    def _ranked(self, text: str, protected: list[Protected], issues: list[Issue], stage: _Stage,
                cancelled: Cancelled | None = None) -> tuple[str, list[E.Edit], list[Issue], list[E.Edit]]:
        """Rounds of spots decided by the model's scores (``ranking.py``), re-checked after each: (text,
        applied edits, issues left, proposed edits), edits in ``text``'s coordinates."""
        from . import ranking

        if self._scorer is None:
            self._scorer = ranking.Scorer(self.engine)
        morph = getattr(self.checker, "morph", None)
        current, done, spans, seen = text, [], protected, {text}
        unsure: list[E.Edit] = []
        for round_ in range(ranking.ROUNDS):
            if cancelled is not None and cancelled():
                break
            found = stage.timed("spots", ranking.spots, current, issues, spans, morph, free=round_ == 0)
            apply_unsure = self.settings.apply_unsure
            choices = stage.timed("rank", ranking.decide, current, found, self._scorer, cancelled, apply_unsure)
            edits = [E.Edit(c.start, c.end, c.before, c.after, "lm", c.message or ranking.MESSAGE, c.rule,
                            round(c.confidence, 3)) for c in choices]
            picks = [e for e, c in zip(edits, choices) if c.sure or apply_unsure]
            back = E.OffsetMap(done)  # the unsure ones, in the original text's coordinates
            unsure += [replace(e, start=back.original(e.start), end=back.original(e.end),
                               before=text[back.original(e.start):back.original(e.end)])
                       for e, c in zip(edits, choices) if not (c.sure or apply_unsure)]
            following = E.apply(current, picks)
            if not picks or following in seen:
                break
            done = E.combine(text, done, current, following, "lm", picks)
            spans, current = _moved(spans, picks), following
            seen.add(current)
            issues = stage.timed("check", self._issues, current, spans)
        unsure = [u for u in unsure if not E.overlaps(u.start, u.end, [_as_span(e) for e in done])]
        return current, done, issues, unsure

    def _issues(self, text: str, protected: Sequence[Protected]) -> list[Issue]:
        """The checker's findings and our own rules' ("a"/"à", confusions decided on its dictionary)."""
        from .confusions import issues as confusion_issues
        from .homophones import issues as homophone_issues

        morph = getattr(self.checker, "morph", None)  # LanguageTool has no dictionary lookup
        ours = confusion_issues(text, morph, protected)
        ours += [i for i in homophone_issues(text, protected, morph) if not E.overlaps(i.start, i.end, _spans(ours))]
        return [*_names_opening_sentences_kept(text, self.checker.check(text), morph), *ours]

    def _rewrite(self, middle: str, protected: list[Protected], issues: list[Issue], stage: _Stage,
                 fixes: list[tuple[str, str]], cancelled: Cancelled | None = None
                 ) -> tuple[str, list[Refusal], list[Issue]]:
        from .guards import guard, mask, unmask
        from .sentences import sentence_spans

        out, refused, at = [], [], 0
        for start, end in sentence_spans(middle):
            sentence = middle[start:end]
            out.append(middle[at:start])
            at = end
            here = sum(map(len, out))  # where the sentence starts in the final text (rewrites before it
            span = (here, here + len(sentence))  # may have changed its length): refusals point there
            if not sentence.strip():
                out.append(sentence)
                continue
            if cancelled is not None and cancelled():  # checked between sentences, never mid-generation
                refused.append(Refusal(*span, CANCELLED))
                out.append(sentence)
                continue
            inside = [p for p in protected if start <= p.start and p.end <= end]
            hints = [i for i in issues if start <= i.start and i.end <= end]
            kept, reason, proposal = stage.timed("llm", self._one, sentence, start, inside, hints, mask, unmask)
            if reason is None:
                mine = [(old, new) for old, new in fixes if new and new in sentence]
                reason = stage.timed("guards", guard, sentence, kept, Counter(p.value for p in inside),
                                     count_issues=self._count, fixes=mine)
            if reason is None:
                out.append(kept)
            else:
                refused.append(Refusal(*span, reason, proposal))
                out.append(sentence)
        out.append(middle[at:])
        final = "".join(out)
        return final, refused, (self.checker.check(final) if final != middle else issues)

    def _one(self, sentence: str, offset: int, inside: list[Protected], hints: list[Issue], mask,
             unmask) -> tuple[str, str | None, str]:
        """(rewrite, reason it cannot be used or None, what the model said)."""
        local = [replace(p, start=p.start - offset, end=p.end - offset) for p in inside]
        masked, mapping = mask(sentence, local)
        words = [(sentence[h.start - offset:h.end - offset], h.message, h.suggestions) for h in hints]
        prompt = llm.messages(masked, words)
        try:
            engine = self.engine
            tokens = engine.count_tokens(prompt)
            if tokens + 16 >= engine.n_ctx:
                raise ContextOverflow(f"{tokens} tokens")
            line = llm.first_line(engine, prompt, llm.params(self.settings.temperature, self.settings.max_tokens,
                                                             max(1, tokens // 3)), llm.limit_for(masked))
        except ContextOverflow:
            return sentence, "too long for the model's context: the sentence is kept as the rules left it", ""
        except MistralkitError as exc:
            return sentence, f"model error: {exc.message}", ""
        reply = line.text
        if line.overflow:
            return sentence, llm.LOOP, reply
        proposal = llm.clean(reply, masked)
        if not proposal:
            return sentence, "empty rewrite", reply
        return unmask(proposal, mapping), None, proposal

    def _count(self, sentence: str) -> int:
        return len(self.checker.check(sentence))


CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # C0 controls but tab, line breaks and form feed; DEL


def _names_opening_sentences_kept(text: str, issues: list[Issue], morph) -> list[Issue]:
    """``issues`` less the spelling findings on a capitalised word opening a sentence that no common word
    a letter away, or sounding like it, could fix: a name the NER model missed ("Kofi" -> "Sofi",
    "Aïssatou" -> "Cassetout"), left as written; "Demin" -> "Demain", "Kan" -> "Quand" stay."""
    from .morphology import common_words
    from .ranking import letters_apart
    from .sentences import sentence_starts

    if morph is None:
        return issues
    starts = sentence_starts(text)
    kept = []
    for issue in issues:
        word = text[issue.start:issue.end]
        if issue.kind == "spelling" and issue.start in starts and word[:1].isupper():
            near = {s for s in issue.suggestions if " " not in s and letters_apart(word, s, by_ear=True) <= 1}
            if not common_words(morph, near):
                continue
        kept.append(issue)
    return kept


def validate(text: str) -> None:
    if not isinstance(text, str):
        raise InvalidParameter("the text to correct must be a string")
    check_text(text, "the text to correct")
    if found := CONTROL.search(text):
        raise InvalidParameter(f"the text to correct holds a control character (U+{ord(found.group()):04X}) at "
                               f"character {found.start() + 1}", hint="remove it: it is no part of a French text")
    if not text.strip():
        raise InvalidParameter("the text to correct is empty", hint="pass some French text")


Span = TypeVar("Span", Protected, Issue)


def _moved(protected: Sequence[Span], edits: Sequence[E.Edit]) -> list[Span]:
    """Protected spans (or issues) in the text after ``edits`` (which never touch protected spans) — spans
    that an edit did touch (possible only for an LLM diff, or an issue the edit fixed) are dropped."""
    out = []
    for p in protected:
        if E.overlaps(p.start, p.end, [_as_span(e) for e in edits if e.end > e.start]):
            continue
        shift = sum(len(e.after) - (e.end - e.start) for e in edits if e.end <= p.start)
        out.append(replace(p, start=p.start + shift, end=p.end + shift))
    return out


def _spans(issues: Sequence[Issue]) -> list[Protected]:
    return [Protected(i.start, i.end, "", "user") for i in issues]


def _as_span(edit: E.Edit) -> Protected:
    return Protected(edit.start, edit.end, edit.before, "user")


def join(text: str, pieces: Sequence[tuple[int, Correction]], mode: str, checker: str,
         model: str | None) -> Correction:
    """Paragraph corrections put back together in ``text``'s coordinates."""
    out, at = [], 0
    whole = Correction(text, "", mode, checker=checker, model=model)
    for offset, piece in pieces:
        out += [text[at:offset], piece.corrected]
        at = offset + len(piece.text)
        new_offset = sum(map(len, out)) - len(piece.corrected)
        whole.edits += E.shift(piece.edits, offset)
        whole.proposed += E.shift(piece.proposed, offset)
        whole.protected += [replace(p, start=p.start + offset, end=p.end + offset) for p in piece.protected]
        whole.refused += [replace(r, start=r.start + new_offset, end=r.end + new_offset) for r in piece.refused]
        whole.issues_left += [replace(i, start=i.start + new_offset, end=i.end + new_offset) for i in piece.issues_left]
        for stage, seconds in piece.timings.items():
            whole.timings[stage] = whole.timings.get(stage, 0.0) + seconds
    whole.corrected = "".join(out) + text[at:]
    return whole


def correct(text: str, *, mode: str = "rules", model: str | None = None, adapter: str | None = None,
            checker: str = "grammalecte", languagetool_url: str | None = None, protect: Sequence[str] = (),
            temperature: float = 0.0, max_tokens: int = 256, spacy_model: str = "fr_core_news_sm") -> Correction:
    """Correct French ``text``; names, places, numbers, dates, amounts, e-mails and URLs never change.

    ``mode="rules"`` applies the checker's suggestions; ``"hybrid"`` then lets ``model`` (default: the
    embedded one) rewrite each sentence, keeping a rewrite only when every guard passes.
    """
    settings = CorrectSettings(mode=mode, model=model, adapter=adapter, checker=checker,
                               languagetool_url=languagetool_url, temperature=temperature, max_tokens=max_tokens,
                               spacy_model=spacy_model, protect=tuple(protect))
    with Corrector(settings) as corrector:
        return corrector.correct(text)
