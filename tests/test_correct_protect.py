"""Protection, sentence spans and guards of ``mistralkit correct``, against the real spaCy French
model (fr_core_news_sm, loaded once for the module)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter

import pytest

from mistralkit.corrector.guards import PREFIXES, REASONS, edit_ratio, guard, mask, reason_kind, unmask
from mistralkit.corrector.protect import find_protected, load_ner, read_protect_file, values
from mistralkit.corrector.sentences import paragraph_spans, sentence_spans, sentence_starts
from mistralkit.corrector.types import Protected
from mistralkit.errors import InvalidParameter, MissingDependency


@pytest.fixture(scope="module", autouse=True)
def nlp():
    return load_ner("fr_core_news_sm")


PROTECTED = [
    ("Hier, Lucas et sa soeur son allé au cinéma avec 3 amis.", [("Lucas", "name"), ("3", "number")]),
    # "Lilas" is the proper part of a street name (spaCy: LOC "rue des Lilas"); "rue des" may be corrected.
    ("M. Leblanc habite au 58213 rue des Lilas à Paris.",
     [("Leblanc", "name"), ("58213", "number"), ("Lilas", "name"), ("Paris", "name")]),
    # "Marie" (NOUN at the start) and "Besançon" (NOUN) are in entities: kept although not PROPN.
    ("Marie est allé à Lyon le 7 novembre 1867 avec le Dr. Martin.",
     [("Marie", "name"), ("Lyon", "name"), ("7 novembre 1867", "date"), ("Martin", "name")]),
    ("Victor Hugo est né à Besançon en 1802.", [("Victor Hugo", "name"), ("Besançon", "name"), ("1802", "number")]),
    ("Je sui allé a la plage avec Emma et Noé.", [("Emma", "name"), ("Noé", "name")]),
    ("Elle a parlé avec Mme Durand et M. Petit.", [("Durand", "name"), ("Petit", "name")]),
    ("Mme Dupont-Moretti a rencontré Jean-Pierre à la gare de Lyon.",
     [("Dupont-Moretti", "name"), ("Jean-Pierre", "name"), ("Lyon", "name")]),
    ("Nous avons visité la tour Eiffel et le Louvre.", [("Eiffel", "name"), ("Louvre", "name")]),  # not "le", "tour"
    ("Le Havre est une ville.", [("Havre", "name")]),
    ("Samedi, Tom va au match du PSG.", [("Tom", "name"), ("PSG", "name")]),  # "Samedi" is tagged PER: not a name
    ("Rendez-vous à 14h30 devant la mairie de Nantes.", [("14h30", "time"), ("Nantes", "name")]),  # not "Rendez"
    # spaCy takes these misspelt first words for places; what follows them says they are not.
    ("Demin on va a Paris.", [("Paris", "name")]),
    ("Apelle moi demain.", []),
    ("Pendan les vacances, Yanis est parti.", [("Yanis", "name")]),
    ("Léa et Hugo sont là. Puis Léa rit.", [("Léa", "name"), ("Hugo", "name"), ("Léa", "name")]),
    ("Paul a payé 12,50 €, 3 euros, €12.50, 20 $ et 100 francs.",
     [("Paul", "name"), ("12,50 €", "amount"), ("3 euros", "amount"), ("€12.50", "amount"), ("20 $", "amount"),
      ("100 francs", "amount")]),
    ("Il coûte 3 millions d'euros, 1 200 € ou 3 M€.",
     [("3 millions d'euros", "amount"), ("1 200 €", "amount"), ("3 M€", "amount")]),
    ("Appelle le 06 12 34 56 78, le +33 6 12 34 56 78 ou le 01.23.45.67.89 avant 9h.",
     [("06 12 34 56 78", "phone"), ("+33 6 12 34 56 78", "phone"), ("01.23.45.67.89", "phone"), ("9h", "time")]),
    ("Écris à lea.martin2010@mail.fr ou va sur https://www.exemple.fr/page?id=3. Ou www.site.fr, ou exemple.com.",
     [("lea.martin2010@mail.fr", "email"), ("https://www.exemple.fr/page?id=3", "url"), ("www.site.fr", "url"),
      ("exemple.com", "url")]),
    ("Le 1er janvier, le 12/03/2024, le 2024-03-12, lundi 3 mars et en mai 2024.",
     [("1er janvier", "date"), ("12/03/2024", "date"), ("2024-03-12", "date"), ("lundi 3 mars", "date"),
      ("mai 2024", "date")]),
    ("On part à 14 h 30, à 14:30 ou à 3 heures.", [("14 h 30", "time"), ("14:30", "time"), ("3 heures", "time")]),
    ("Les prix montent de 12 %, de 12%, de 12,5 pour cent.",
     [("12 %", "percent"), ("12%", "percent"), ("12,5 pour cent", "percent")]),
    ("La ville a 58 213 habitants au XIXe siècle, au 3e étage, le 1er, 1re, 2nde, un A380 et -5 degrés.",
     [("58 213", "number"), ("XIXe", "number"), ("3e", "number"), ("1er", "number"), ("1re", "number"),
      ("2nde", "number"), ("A380", "number"), ("-5", "number")]),
    ("Louis XIV et François Ier régnèrent.", [("Louis XIV", "name"), ("François Ier", "name")]),
    ("Il fait beau aujourdhui et les enfants joue dans la cour.", []),
]


@pytest.mark.parametrize("text, expected", PROTECTED, ids=[t[:30] for t, _ in PROTECTED])
def test_protected_values(text, expected):
    spans = find_protected(text)
    assert [(p.value, p.kind) for p in spans] == expected
    assert all(text[p.start:p.end] == p.value for p in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))  # sorted, no overlaps


def test_sources():
    spans = find_protected("M. Leblanc voit Lucas le 3 mars.", words=["voit"])
    assert [(p.value, p.source) for p in spans] == [("Leblanc", "regex"), ("voit", "user"), ("Lucas", "spacy"),
                                                    ("3 mars", "regex")]


def test_overlaps_keep_the_widest():
    text = "Écris à lea2010@mail.fr, va sur https://site.fr/2024/12 et paie 12,50 € le 7 novembre 1867."
    spans = find_protected(text, ner=None)
    assert [(p.value, p.kind) for p in spans] == [("lea2010@mail.fr", "email"), ("https://site.fr/2024/12", "url"),
                                                  ("12,50 €", "amount"), ("7 novembre 1867", "date")]


def test_partial_overlaps_become_one_span():
    # the user's phrase starts inside an amount: both are kept, as one span of the wider kind
    spans = find_protected("Il paie 12,50 € par mois.", words=["€ par mois"], ner=None)
    assert [(p.value, p.kind) for p in spans] == [("12,50 € par mois", "user")]


def test_user_words_whole_word_and_case_sensitive():
    text = "Lucas aime Lucasfilm, lucas et la rue des  Lilas."
    spans = find_protected(text, words=["Lucas", "rue des Lilas", "  "], ner=None)
    assert [(p.value, p.kind, p.source) for p in spans] == [("Lucas", "user", "user"),
                                                            ("rue des  Lilas", "user", "user")]


def test_user_word_wins_a_tie_with_a_name():
    spans = find_protected("Hier, Lucas est venu.", words=["Lucas"])
    assert [(p.value, p.kind, p.source) for p in spans] == [("Lucas", "user", "user")]


def test_dictionary_proper_nouns():
    """The callable stands in for the rule checker's dictionary (its own module, tested there)."""
    asked = []

    def proper_nouns(words: list[str]) -> set[str]:
        asked.extend(words)
        return {"Rose", "Capucine"} & set(words)

    text = "Rose est belle. Je suis venu avec Rose et Capucine, pas avec rose."
    spans = find_protected(text, ner=None, proper_nouns=proper_nouns)
    assert [(p.value, p.start, p.source) for p in spans] == [("Rose", 0, "dictionary"), ("Rose", 34, "dictionary"),
                                                             ("Capucine", 42, "dictionary")]
    assert asked == ["Rose", "Je", "Capucine"]


def test_a_name_found_once_is_protected_everywhere():
    spans = find_protected("Léa rit. Puis Léa chante.")
    assert [(p.value, p.start) for p in spans] == [("Léa", 0), ("Léa", 14)]


def test_titles_protect_the_name_after_them_without_spacy():
    spans = find_protected("Il a vu M. Leblanc et Mme Petit-Durand.", ner=None)
    assert [p.value for p in spans] == ["Leblanc", "Petit-Durand"]


def test_a_name_does_not_cross_lines():
    spans = find_protected("Je suis allé à Paris\nLucas est resté.")
    assert "Paris\nLucas" not in [p.value for p in spans]
    assert "Paris" in [p.value for p in spans]


def test_values_counts_protected_strings():
    text = "Lucas a 3 ans et Léa a 3 ans. Lucas rit."
    spans = find_protected(text)
    assert values(spans) == Counter({"Lucas": 2, "3": 2, "Léa": 1})
    first = sentence_spans(text)[0]
    assert values(spans, *first) == Counter({"Lucas": 1, "3": 2, "Léa": 1})


def test_missing_model_names_the_install():
    with pytest.raises(MissingDependency) as error:
        find_protected("Bonjour Lucas.", ner="fr_core_news_nonexistent")
    message = str(error.value)
    assert "\n" not in message
    assert "pip install 'mistralkit[correct]'" in message
    assert "python -m spacy download fr_core_news_nonexistent" in message


def test_model_loaded_once_without_unused_pipes(nlp):
    assert load_ner("fr_core_news_sm") is nlp
    assert "parser" not in nlp.pipe_names and "lemmatizer" not in nlp.pipe_names
    assert {"ner", "morphologizer"} <= set(nlp.pipe_names)


def test_importing_the_corrector_does_not_import_spacy():
    code = ("import sys, mistralkit.corrector.protect, mistralkit.corrector.guards; "
            "print('spacy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_read_protect_file(tmp_path):
    path = tmp_path / "protect.txt"
    path.write_bytes("# mes mots\nLeblanc\r\n\n  rue des Lilas  # une rue\nC#\nLeblanc\n".encode())
    assert read_protect_file(path) == ["Leblanc", "rue des Lilas", "C#"]


@pytest.mark.parametrize("content, line", [(b"Lucas\n# ok\n\xe9t\xe9\n", 3), (b"Lucas\nL\x00a\n", 2)])
def test_read_protect_file_names_the_bad_line(tmp_path, content, line):
    path = tmp_path / "protect.txt"
    path.write_bytes(content)
    with pytest.raises(InvalidParameter) as error:
        read_protect_file(path)
    assert str(error.value).startswith(f"{path}:{line}: ")


def test_read_protect_file_missing(tmp_path):
    with pytest.raises(InvalidParameter, match="cannot read"):
        read_protect_file(tmp_path / "absent.txt")


SENTENCES = [
    ("M. Leblanc arrive à 14h30. Il paie 12,50 € !", ["M. Leblanc arrive à 14h30.", "Il paie 12,50 € !"]),
    ("Mme Durand et le Dr. Martin sont là. J. K. Rowling écrit.",
     ["Mme Durand et le Dr. Martin sont là.", "J. K. Rowling écrit."]),
    ("Des fruits, p. ex. des pommes, des poires, etc. et du pain. Puis, etc. Ensuite on part.",
     ["Des fruits, p. ex. des pommes, des poires, etc. et du pain.", "Puis, etc.", "Ensuite on part."]),
    ("Il pèse 3.5 kg. Voir www.site.fr/a.b. Écris à lea@mail.fr. Merci.",
     ["Il pèse 3.5 kg.", "Voir www.site.fr/a.b.", "Écris à lea@mail.fr.", "Merci."]),
    ("Il a dit « Bonjour ! » et il est parti. « Quoi ? » demanda-t-il. Il hésita… puis partit… Enfin!",
     ["Il a dit « Bonjour ! » et il est parti.", "« Quoi ? » demanda-t-il.", "Il hésita… puis partit…", "Enfin!"]),
    ("Vraiment ?! Oui... Bon. je suis fatigué", ["Vraiment ?!", "Oui...", "Bon.", "je suis fatigué"]),
    ("Première ligne sans point\nDeuxième ligne.\n\n  Paragraphe 2 ", ["Première ligne sans point", "Deuxième ligne.",
                                                                        "Paragraphe 2"]),
    ("1. Acheter du pain.", ["1. Acheter du pain."]),
    ("   \n ", []),
]


@pytest.mark.parametrize("text, expected", SENTENCES, ids=[t[:20] for t, _ in SENTENCES])
def test_sentence_spans(text, expected):
    spans = sentence_spans(text)
    assert [text[s:e] for s, e in spans] == expected
    edges = [0] + [i for span in spans for i in span] + [len(text)]
    gaps = [text[a:b] for a, b in zip(edges[::2], edges[1::2])]
    assert all(not gap.strip() for gap in gaps)  # between the sentences: whitespace only
    assert "".join(g + text[s:e] for g, (s, e) in zip(gaps, spans)) + gaps[-1] == text


def test_paragraph_spans():
    text = "\n  Un. Deux.\nTrois.\n \n\nQuatre.  \n"
    assert [text[s:e] for s, e in paragraph_spans(text)] == ["Un. Deux.\nTrois.", "Quatre."]


def test_sentence_starts():
    text = "Il dit « Paul viendra ». Puis Léa rit."
    assert sorted(text[i:i + 4] for i in sentence_starts(text)) == ["Il d", "Paul", "Puis"]


BEFORE = "Hier, Lucas et sa soeur son allé au cinéma avec 3 amis."
GOOD = "Hier, Lucas et sa sœur sont allés au cinéma avec 3 amis."
LUCAS = Counter({"Lucas": 1, "3": 1})


def test_guard_keeps_a_good_rewrite():
    assert guard(BEFORE, GOOD, LUCAS) is None
    assert guard(BEFORE, GOOD, ["Lucas", "3"]) is None
    assert guard("Il habite à paris.", "Il habite à Paris.", []) is None  # capitalising a name is a fix
    assert guard("il est là.", "Il est là.", []) is None  # a sentence start
    assert guard("il pleut depuis ce matin, on reste à la maison.",
                 "Il pleut depuis ce matin. On reste à la maison.", []) is None  # "On" starts a sentence
    assert guard("Elle a vu chat.", "Elle a vu un chat.", []) is None  # "un" is an article
    assert guard("Il a dit « bonjour ».", "Il a dit « Bonjour ».", []) is None


ISSUES = re.compile(r"\bsoeur\b|\bson allé\b|\bsa sont\b")


def count_issues(text: str) -> int:
    """A fixed list of errors standing in for the rule checker (its own module, tested there)."""
    return len(ISSUES.findall(text))


@pytest.mark.parametrize("after, protected, reason, kind, limits", [
    ("Hier, Léo et sa sœur sont allés au cinéma avec 3 amis.", LUCAS, "protected string changed: 'Lucas'",
     "protected", {}),
    ("Hier, Lucas et sa sœur sont allés au cinéma avec trois amis.", LUCAS, "protected string changed: '3'",
     "protected", {}),
    ("Hier, Lucas et Lucas sont allés au cinéma avec 3 amis.", LUCAS,
     "protected string changed: 'Lucas' (2 instead of 1)", "protected", {}),
    ("Hier, Lucas et sa sœur sont allés au cinéma avec 3 amis et 4 chiens.", LUCAS, "new digits: '4'", "digits", {}),
    ("Hier, Lucas et ses deux sœurs sont allés au cinéma avec 3 amis.", LUCAS, "new number word: 'deux'",
     "number word", {}),
    ("Hier, Lucas et sa sœur sont allés au cinéma pour la troisième fois avec 3 amis.", LUCAS,
     "new number word: 'troisième'", "number word", {}),
    ("Hier, Lucas et sa sœur Emma sont allées au cinéma avec 3 amis.", LUCAS, "new name: 'Emma'", "name", {}),
    ("Lucas, sa sœur et 3 copains ont vu un film hier soir.", LUCAS, "edit ratio 0.86 > 0.60", "edit ratio", {}),
    ("Hier, Lucas et sa sœur sont allés au magnifique cinéma municipal avec 3 amis très chers.", LUCAS,
     "length ratio 1.60 outside [0.77, 1.30]", "length ratio", {"max_edit_ratio": 1.0}),
    ("Hier, Lucas et 3 amis.", LUCAS, "length ratio 0.40 outside [0.77, 1.30]", "length ratio",
     {"max_edit_ratio": 1.0}),
    ("Hier, Lucas et sa soeur, sa soeur son allé au cinéma avec 3 amis.", LUCAS, "more checker errors (3 > 2)",
     "checker", {}),
])
def test_guard_reasons(after, protected, reason, kind, limits):
    got = guard(BEFORE, after, protected, count_issues=count_issues, **limits)
    assert got == reason
    assert reason_kind(got) == kind


def test_guard_checks_in_order():
    # a lost name, a new digit and a new name at once: the protected string is named first
    assert reason_kind(guard(BEFORE, "Hier, Paul et sa sœur sont allés au cinéma avec 4 amis.", LUCAS)) == "protected"


def test_edit_ratio_ignores_case_and_apostrophes():
    assert edit_ratio("je suis l'ami", "Je suis l’ami") == 0
    assert edit_ratio("il son allé", "il sont allé") == pytest.approx(1 / 3)


def test_reason_kinds_cover_every_prefix():
    assert sorted(set(PREFIXES.values())) == sorted(REASONS)
    assert reason_kind("something else") == "other"


TEXT = "Écris à lea@mail.fr ou au 06 12 34 56 78, voir https://site.fr et https://site.fr, Lucas."


def test_mask_and_unmask_round_trip():
    spans = find_protected(TEXT)
    masked, mapping = mask(TEXT, spans)
    assert masked == "Écris à ⟦P1⟧ ou au ⟦P2⟧, voir ⟦P3⟧ et ⟦P3⟧, Lucas."  # a name stays visible
    assert mapping == {"⟦P1⟧": "lea@mail.fr", "⟦P2⟧": "06 12 34 56 78", "⟦P3⟧": "https://site.fr"}
    assert unmask(masked, mapping) == TEXT
    assert unmask("⟦P9⟧ reste", mapping) == "⟦P9⟧ reste"


def test_mask_only_the_kinds_asked():
    spans = [Protected(8, 19, "lea@mail.fr", "email"), Protected(89, 94, "Lucas", "name")]
    assert mask(TEXT, spans, kinds=("url",)) == (TEXT, {})


@pytest.mark.parametrize("after, reason", [
    ("Ecris à ⟦P1⟧ ou au numéro ⟦P2⟧.", "placeholder lost: '⟦P3⟧'"),
    ("Écris à ⟦P1⟧ ou ⟦P1⟧ au ⟦P2⟧, voir ⟦P3⟧.", "placeholder duplicated: '⟦P1⟧'"),
    ("Écris à ⟦P1⟧ ou au ⟦P2⟧, voir ⟦P3⟧ ou ⟦P4⟧.", "placeholder invented: '⟦P4⟧'"),
    ("Écris à ⟦P1⟧ ou au ⟦P2⟧, voir ⟦P3.", "placeholder damaged: '⟦P3.'"),
    ("Écris à ⟦P1⟧ ou au ⟦P2⟧, voir ⟦P3⟧ ⟧.", "placeholder damaged: '⟧.'"),
])
def test_guard_placeholders(after, reason):
    before = "Écris à ⟦P1⟧ ou au ⟦P2⟧, voir ⟦P3⟧."
    got = guard(before, after, [])
    assert got == reason
    assert reason_kind(got) == "placeholder"
    assert guard(before, "Écris à ⟦P1⟧ ou au ⟦P2⟧ ; voir ⟦P3⟧.", []) is None


@pytest.mark.parametrize(("before", "after", "reason"), [
    ("Demain je vais manger chez ma tante a Bordeaux.", "Je vais manger chez ma tante a Bordeaux.",
     "word dropped: 'Demain'"),
    ("Tu préfères aller à Lyon ou à Grenoble ?", "Je préfère aller à Lyon ou à Grenoble ?",
     "word changed: 'Tu préfères' -> 'Je préfère'"),
    ("Quand je serais grand, je serai pompier.", "Quand je ne serai pas grand, je serai pompier.",
     "word changed: 'serais' -> 'ne serai pas'"),
    ("Il était une fois un roi qui vivait dans un château.", "Il était un roi qui vivait dans un château.",
     "word dropped: 'une fois'"),
])
def test_a_rewrite_that_rewords_is_refused(before, after, reason):
    assert guard(before, after, []) == reason and reason_kind(reason) == "word"


@pytest.mark.parametrize(("before", "after"), [
    ("Ces un cadeau, je suis rentré tard parceque le bus.", "C'est un cadeau, je suis rentré tard parce que le bus."),
    ("Mes parents on acheté une maison a Nantes.", "Mes parents ont acheté une maison à Nantes."),
    ("Elle sait fait mal, mon père ma dit.", "Elle s'est fait mal, mon père m'a dit."),
    ("Sa va, il fesait tres froid.", "Ça va, il faisait très froid."),
    ("Je sais pas ou il est.", "Je ne sais pas où il est."),
])
def test_spelling_and_grammar_fixes_are_not_rewording(before, after):
    assert guard(before, after, []) is None


def test_a_rewrite_that_undoes_a_rule_fix_is_refused():
    fixes = [("chat", "chats"), ("noir", "noirs")]
    before = "Les chats noirs de Madame Leblanc dorme sur le canapé."
    undone = guard(before, "Le chat noir de Madame Leblanc dorme sur le canapé.", ["Leblanc"], fixes=fixes)
    assert undone == "rule fix undone: 'chats' -> 'chat'" and reason_kind(undone) == "undone"
    assert guard(before, "Les chats noirs de Madame Leblanc dorment sur le canapé.", ["Leblanc"], fixes=fixes) is None
    assert guard("Il son aller.", "Il sont allés.", [], fixes=[("allé", "aller")]) is None  # fixing the fix


def test_the_compact_tokenizer_cuts_french_as_the_models_saved_one(nlp):
    """load_ner builds spaCy's French tokenizer from compact letter classes (2.3 s less a CLI call):
    every sentence of the corrector's benches and tests, and the hard cases below, must come out in
    the same tokens as with the tokenizer saved in fr_core_news_sm."""
    import json
    from pathlib import Path

    import spacy

    saved = spacy.load("fr_core_news_sm", exclude=["tok2vec", "morphologizer", "parser", "senter", "attribute_ruler",
                                                   "lemmatizer", "ner"])
    assert len(nlp.tokenizer.token_match.__self__.pattern) < len(saved.tokenizer.token_match.__self__.pattern) / 5
    texts = [text for text, _ in PROTECTED] + [
        "C'est-à-dire qu'aujourd'hui, peut-être, l'homme de Saint-Étienne va à New-York.",
        "Le prud'homme a vu la 5e B. en l'an 52 av. J.-C. ; est-ce vrai ? A-t-il dit « non » ?",
        "Écris à marie.dupont@exemple.fr ou va sur https://exemple.fr/a-b?c=d avant 14h30, 12,50 € TTC.",
        "ÉLÈVES, ÇA VA ? Œuvre d'Ørsted, Straße, Αθήνα, Москва, Łódź, Việt Nam.",
    ]
    for path in sorted((Path(__file__).parents[1] / "bench" / "data").glob("correct_fr*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            texts += [item["text"], item["reference"]]
    assert len(texts) > 1000
    differ = [text for text in texts if [t.text for t in nlp.tokenizer(text)] != [t.text for t in saved(text)]]
    assert differ == []
