"""Our own correction rules (``confusions``, the morphology side of ``homophones``) and how the rule
pass weighs them against Grammalecte's, with the real Grammalecte dictionary and checker."""

from __future__ import annotations

import pytest

from mistralkit.corrector import Corrector
from mistralkit.corrector import edits as E
from mistralkit.corrector.confusions import issues as confusion_issues
from mistralkit.corrector.grammalecte import GrammalecteChecker
from mistralkit.corrector.homophones import issues as homophone_issues
from mistralkit.corrector.morphology import Sentence
from mistralkit.corrector.types import Issue, Protected
from mistralkit.settings import CorrectSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checker():
    with GrammalecteChecker() as c:
        yield c


@pytest.fixture(scope="module")
def rules():
    with Corrector(CorrectSettings(mode="rules")) as corrector:
        yield corrector


def fixed_by(found: list[Issue], text: str) -> str:
    return E.apply(text, [E.Edit(i.start, i.end, text[i.start:i.end], i.suggestions[0], "rule") for i in found])


@pytest.mark.parametrize(("text", "fixed"), [
    # son / sont
    ("Ses amis son partis hier.", "Ses amis sont partis hier."),
    ("Il y a 25 élèves et 13 son des filles.", "Il y a 25 élèves et 13 sont des filles."),
    ("Mes cousins son très contents.", "Mes cousins sont très contents."),
    ("Il range son petit vélo.", None),
    ("Il range son très grand vélo.", None),
    ("Le son des cloches est fort.", None),
    ("Il a pris sont vélo.", "Il a pris son vélo."),
    ("Ils sont partis.", None),
    # s'est
    ("Paul c'est levé tôt.", "Paul s'est levé tôt."),
    ("Le petit Gabriel sais caché sous le lit.", "Le petit Gabriel s'est caché sous le lit."),
    ("Lucie ces bien amusée.", "Lucie s'est bien amusée."),
    ("Voilà, c'est fini.", None),
    ("Je sais dessiner.", None),
    # c'est / ces
    ("Ses très difficile.", "C'est très difficile."),
    ("Ses très nombreux amis sont venus.", None),
    ("C'est livres sont à moi.", "Ces livres sont à moi."),
    ("C'est deux euros.", None),
    # on / ont
    ("Les enfants on peur du noir.", "Les enfants ont peur du noir."),
    ("Les enfants on choisis un jeu.", "Les enfants ont choisis un jeu."),
    ("Avec les enfants on mange tôt.", None),
    ("Les enfants, on les aime.", None),
    # et / est
    ("Hier il et parti.", "Hier il est parti."),
    ("Le gâteau de Noé et délicieux.", "Le gâteau de Noé est délicieux."),
    ("Léa et Paul sont là.", None),
    ("Il mange du pain et du beurre.", None),
    ("Il et elle dansent.", None),
    # m'a / m'ont
    ("Mon père ma dit de venir.", "Mon père m'a dit de venir."),
    ("Mes amis mon offert un jeu.", "Mes amis m'ont offert un jeu."),
    ("Ma petite sœur dort.", None),
    ("Mon ami dort.", None),
    # -là
    ("Ce chien la est gentil.", "Ce chien-là est gentil."),
    ("Ce chien la mord.", None),
    # elision, before a vowel or a mute h, names included; not before an aspirated h, "onze", "la une", "là où"
    ("Il la a garée devant le hôtel.", "Il l'a garée devant l'hôtel."),
    ("Je ai vu le arc-en-ciel de Ilan.", "J'ai vu l'arc-en-ciel d'Ilan."),
    ("Ce est vrai lorsque on rit, si il pleut.", "C'est vrai lorsqu'on rit, s'il pleut."),
    ("Le hibou et le héros ont vu le onze de France et la une du journal.", None),
    ("Ce arbre est là où je suis.", None),
    ("Elle la appelé Réglisse, la entrée est là.", "Elle l'a appelé Réglisse, l'entrée est là."),
    # a singular noun after a number of two or more
    ("Le trajet dure 2 heure et trois cahier.", "Le trajet dure 2 heures et trois cahiers."),
    ("Il a 1 frère, 2 fois, en 2024 marque.", None),
    # an -er verb opening a sentence without "tu" is an imperative; "Va-y" is "Vas-y"
    ("Ranges ta chambre. Va-y !", "Range ta chambre. Vas-y !"),
    ("Tu ranges ta chambre.", None),
])
def test_confusion_rules(checker, text, fixed):
    found = confusion_issues(text, checker.morph)
    assert all(i.checker == "mistralkit" and i.rule.startswith("mistralkit_") for i in found)
    assert fixed_by(found, text) == (fixed or text)


def test_confusion_rules_need_a_dictionary():
    assert confusion_issues("Les enfants on peur du noir.", None) == []


def test_words_inside_a_url_are_not_words_of_the_sentence(checker):
    text = "Va sur https://example.fr/inscription et remplis le formulaire."
    url = Protected(7, 37, "https://example.fr/inscription", "url")
    assert text[url.start:url.end] == url.value
    assert confusion_issues("Va sur l'inscription et remplie.", checker.morph)  # a noun, then an adjective
    assert confusion_issues(text.replace("remplis", "remplie"), checker.morph, [url]) == []


@pytest.mark.parametrize(("text", "fixed"), [
    ("Marie est allée a la boulangerie.", "Marie est allée à la boulangerie."),
    ("Je viens a l'école.", "Je viens à l'école."),
    ("Peux-tu m'aider a porter ce carton ?", "Peux-tu m'aider à porter ce carton ?"),
    ("Je n'arrive pas a faire l'exercice.", "Je n'arrive pas à faire l'exercice."),
    ("Il a manger une pomme.", None),  # a subject before: the verb, with a participle to fix
    ("Mon équipe a gagner le match.", None),  # "équipe" after "Mon" is a noun, not a verb
    ("L'allée a la forme d'un S.", None),
    ("L'homme qui court a faim.", None),
    ("Je mange a la cantine.", None),  # manger takes a direct object: not decided here
])
def test_a_after_a_verb_that_takes_no_direct_object(checker, text, fixed):
    found = homophone_issues(text, [], checker.morph)
    assert fixed_by(found, text) == (fixed or text)


def test_our_rules_go_before_grammalecte_neighbour_fixes(rules):
    # Grammalecte alone makes "vélo" agree with "sont" ("sont vélos"); ours fixes the determiner.
    assert rules.correct("Il a pris sont vélo hier.").corrected == "Il a pris son vélo hier."
    assert rules.correct("Le petit Gabriel sais caché sous le lit.").corrected == \
        "Le petit Gabriel s'est caché sous le lit."


def test_a_noun_grammalecte_would_swap_for_another_leaves_the_determiner_to_fix(rules):
    text = "Le maîtresse nous a parlé."
    flagged = {text[i.start:i.end]: i.suggestions for i in rules.checker.check(text)}
    assert flagged.get("maîtresse", ("",))[0] == "maître"  # what Grammalecte proposes first
    assert rules.correct(text).corrected == "La maîtresse nous a parlé."
    assert rules.correct("La rentré a lieu lundi.").corrected == "La rentrée a lieu lundi."


def test_a_capital_letter_alone_is_no_name(checker, rules):
    assert "C" not in checker.proper_nouns(["C", "Marie"]) and "Marie" in checker.proper_nouns(["Marie"])
    result = rules.correct("C'est livres sont à moi.")
    assert result.corrected == "Ces livres sont à moi." and not result.protected


def test_sentence_reads_lower_case_readings_of_a_capitalised_first_word(checker):
    words = Sentence("Mon équipe a gagné.", checker.morph).words
    assert words[0].determiner and words[1].nominal and words[3].participle


@pytest.mark.parametrize(("text", "fixed"), [
    ("ce matin il pleut sur Brest", "Ce matin il pleut sur Brest."),
    ("Mon chien s'appelle Rocky. il a 5 ans et il court", "Mon chien s'appelle Rocky. Il a 5 ans et il court."),
    ("Pourquoi le bus ne passe plus", "Pourquoi le bus ne passe plus ?"),
    ("Viens-tu au parc avec Léa demain", "Viens-tu au parc avec Léa demain ?"),
    ("Tu viens à mon anniversaire, Marius", "Tu viens à mon anniversaire, Marius"),  # a question by its tone, or not
    ("Mehdi, tu peux me rendre mon ballon", "Mehdi, tu peux me rendre mon ballon"),
    ("Bonjour Madame Dupuis", "Bonjour Madame Dupuis"),  # under four words: a greeting, a title
    ("iPhone et eBay sont des marques.", "iPhone et eBay sont des marques."),
    ("Il dit (au revoir)", "Il dit (au revoir)"),
])
def test_typography_capitals_and_final_marks(rules, text, fixed):
    assert rules.correct(text).corrected == fixed
