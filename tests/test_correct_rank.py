"""``mistralkit correct --mode rank``: the embedded Gemma 3 270M chooses among the rules' candidates by
log-probability, through llama.cpp; sure changes are applied, unsure ones proposed. And the second
pass's fixes: the README's examples, control characters, the hybrid loop cap."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from mistralkit.corrector import Corrector, ranking
from mistralkit.corrector import edits as E
from mistralkit.corrector.llm import FirstLine, limit_for
from mistralkit.errors import InvalidParameter
from mistralkit.settings import CorrectSettings

pytestmark = pytest.mark.slow

COUSINS = "Mes cousins on gagné le tournoi de foot de Brest en 2022."


@pytest.fixture(scope="module")
def rank(model):
    with Corrector(CorrectSettings(mode="rank")) as corrector:  # the embedded Gemma 3 270M by default
        yield corrector


def consistent(result) -> None:
    for edit in [*result.edits, *result.proposed]:
        assert result.text[edit.start:edit.end] == edit.before, edit
        assert not E.overlaps(edit.start, edit.end, result.protected), edit
    assert E.apply(result.text, result.edits) == result.corrected


def test_the_model_picks_the_homophone_and_says_how_sure(rank):
    result = rank.correct(COUSINS)
    consistent(result)
    assert "Mes cousins ont gagné" in result.corrected and "Brest" in result.corrected and "2022" in result.corrected
    (ont,) = [e for e in result.edits if e.after == "ont"]
    assert ont.source == "lm" and ont.before == "on" and 0.5 < ont.confidence <= 1
    assert result.mode == "rank" and result.model == "gemma-3-270m:q4_k_m"
    assert rank.engine.parallel > 1  # a spot's variants are scored in one batch


def test_a_change_below_the_margin_is_proposed_not_applied(rank, monkeypatch):
    sure = rank.correct(COUSINS).corrected
    monkeypatch.setattr(ranking, "SURE", 1e9)
    monkeypatch.setattr(ranking, "SURE_UNFLAGGED", 1e9)
    unsure = rank.correct(COUSINS)
    consistent(unsure)
    assert unsure.corrected == COUSINS and not unsure.edits
    assert ("on", "ont") in [(e.before, e.after) for e in unsure.proposed]
    assert "Mes cousins ont" in unsure.with_unsure()  # each proposal was judged on the text as written
    rank.settings.apply_unsure = True
    try:
        applied = rank.correct(COUSINS)
    finally:
        rank.settings.apply_unsure = False
    assert applied.corrected == sure and not applied.proposed


def test_scores_are_the_models_and_favour_the_right_spelling(rank):
    """The margin is a difference of real log-probabilities: the right sentence wins by a wide one."""
    scorer = ranking.Scorer(rank.engine)
    try:
        wrong, right = scorer.compare(["Le professeur et content.", "Le professeur est content."])
    finally:
        scorer.close()
    assert right - wrong > ranking.SURE


def test_spots_never_touch_protected_strings(rank):
    text = "Rendez-vous a 9h chez Ou Ping a Lyon."
    result = rank.correct(text, protect=["Ou Ping"])
    consistent(result)
    assert "Ou Ping" in result.corrected and "9h" in result.corrected


def test_readme_examples_do_what_they_promise(mk_home):
    done = run_cli("correct", "Hier, Lucas et sa soeur son allé au cinéma avec 3 amis.", home=mk_home)
    assert done.returncode == 0, done.stderr
    assert "sont allés au cinéma avec 3 amis" in done.stdout
    diff = run_cli("correct", "--diff", "--protect", "Leblanc", "M. Leblanc et sa femme son partit.", home=mk_home)
    assert diff.stdout.strip() == "M. Leblanc et sa femme [-son-]{+sont+} [-partit-]{+partis+}."


def test_cli_rank_diff_json_and_french_messages(mk_home, model):
    done = run_cli("correct", "--mode", "rank", "-m", str(model.path), "--diff", "--explain", "--lang", "fr",
                   COUSINS, home=mk_home)
    assert done.returncode == 0, done.stderr
    assert "[-on-]{+ont+}" in done.stdout and "lm   'on' -> 'ont' (" in done.stdout
    as_json = json.loads(run_cli("correct", "-m", str(model.path), "--json", COUSINS, home=mk_home).stdout)
    assert as_json["mode"] == "rank" and "proposed" in as_json  # a model given: rank mode by default
    assert [e["confidence"] for e in as_json["edits"] if e["after"] == "ont"][0] > 0.5
    bad = run_cli("correct", "--lang", "de", "bonjour", home=mk_home)
    assert bad.returncode != 0 and "--lang must be fr or en" in bad.stderr


@pytest.mark.parametrize("text", ["Il a\x00 mangé.", "Il a mangé\x1b[31m.", "Il\x7f a mangé."])
def test_control_characters_are_refused_naming_where(rank, text):
    with pytest.raises(InvalidParameter, match="control character .* at character"):
        rank.correct(text)


def test_cli_refuses_a_nul_byte_on_stdin(mk_home):
    done = run_cli("correct", "-", home=mk_home, stdin=b"Il a manger\x00 une pomme.", text=False)
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "control character (U+0000) at character 12" in stderr, stderr


def test_a_rewrite_that_runs_on_is_cut_short():
    sentence = "Le 12 mars, Paul a manger."
    line = FirstLine(limit_for(sentence))
    stopped = False
    for _ in range(200):
        if line.feed(" 12 mars"):
            stopped = True
            break
    assert stopped and line.overflow and len(line.text) <= limit_for(sentence) + len(" 12 mars") + 1
    short = FirstLine(limit_for(sentence))
    assert not short.feed("Le 12 mars, Paul a mangé.") and short.feed("\n") and not short.overflow


@pytest.mark.parametrize(("written", "meant", "apart"), [
    ("fesait", "faisait", 0), ("magnifik", "magnifique", 0), ("vaissel", "vaisselle", 0), ("bonome", "bonhomme", 0),
    ("mension", "mention", 0), ("cahié", "cahiers", 0), ("fesait", "ferait", 1), ("vaissel", "naisse", 2),
])
def test_a_misspelling_that_sounds_like_the_word_costs_no_letters(written, meant, apart):
    assert ranking.letters_apart(written, meant, by_ear=True) == apart
    assert ranking.letters_apart(written, meant) >= apart  # a known word's neighbours: letters as written


def test_two_words_the_dictionary_knows_as_one_are_a_spot(rank):
    text = "Enzo a mis son manteau par ce qu'il fait froid, Valentin a ri."
    found = {text[s.start:s.end]: s.candidates for s in ranking.spots(text, [], [], rank.checker.morph)}
    assert "parce" in found["par ce"] and "Valentin a" not in found  # a name is never glued to what follows
    result = rank.correct("Enzo a mis son manteau par ce qu'il fesait froid.")
    consistent(result)
    assert "parce qu'il" in result.corrected


def test_a_misspellings_far_pick_is_proposed_and_names_are_not_glued(rank):
    """The word meant ("vaisselle") is not among the checker's suggestions: the model's pick is a guess,
    proposed, not applied. "Le maître" is no spelling of the name "Lemaître"; after "on" (for "ont") a
    participle stays one."""
    guessed = rank.correct("Samia a mis la table pendant que son frère faisait la vaissel.")
    consistent(guessed)
    assert "vaissel" in guessed.corrected and any(e.before == "vaissel" for e in guessed.proposed)
    master = rank.correct("Le maître nous a demandé de rangé nos affaires.")
    assert master.corrected.startswith("Le maître nous a demandé de ranger")
    assert "aboyé" in rank.correct("Les chiens de Mamadou on aboyé toute la nuit.").corrected


@pytest.mark.parametrize("text, name", [("Kofi ces fait mal au genou en sautant du muret.", "Kofi"),
                                        ("Aïssatou ma prêté son livre sur les dinosaures.", "Aïssatou"),
                                        ("Ewen ses cassé le bras en jouant au rugby samedi.", "Ewen")])
def test_a_name_opening_a_sentence_is_never_spelt_into_another(rank, text, name):
    rules = Corrector(CorrectSettings(mode="rules"))
    try:
        assert rules.correct(text).corrected.startswith(name + " ")
    finally:
        rules.close()
    assert rank.correct(text).corrected.startswith(name + " ")
