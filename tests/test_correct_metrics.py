"""bench/correct_metrics.py on hand-made (text, reference, output) triples; the evaluation set.

No Grammalecte and no model: the scores are plain functions of strings.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

from mistralkit.corrector.types import Issue

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # as when the script runs: its folder (report.py) importable
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


M = _load("correct_metrics")


def test_words_split_punctuation_off_and_keep_elisions_numbers_and_urls_whole():
    assert M.words("Hier, Lucas a payé 12,50 € (à l'école).") == [
        "Hier", ",", "Lucas", "a", "payé", "12,50", "€", "(", "à", "l'école", ")", "."]
    assert M.words("Écris à zoe.bernard@orange.fr ou va sur www.ecole.fr.") == [
        "Écris", "à", "zoe.bernard@orange.fr", "ou", "va", "sur", "www.ecole.fr", "."]
    assert M.words("Où es-tu ?  ") == ["Où", "es-tu", "?"]
    assert M.words("J’ai vu l’eau.") == M.words("J'ai vu l'eau.") == ["J'ai", "vu", "l'eau", "."]


@pytest.mark.parametrize("text, reference, output, expected", [
    # two wrong words, one fixed
    ("les chat noir", "les chats noirs", "les chats noir", (2, 1, 0)),
    # one fixed, and a surname "corrected": introduced
    ("Mme Leblanc a 3 chat.", "Mme Leblanc a 3 chats.", "Mme Leland a 3 chats.", (1, 1, 1)),
    # a repeated word: one error at a gap, fixed by deleting it
    ("il il mange", "il mange", "il mange", (1, 1, 0)),
    # a split word is one error (one reference word); left as it was
    ("elle a 9 ans aujour d'hui.", "elle a 9 ans aujourd'hui.", "elle a 9 ans aujour d'hui.",
     (1, 0, 0)),
    # a right sentence with a word added: introduced at a gap
    ("Il mange.", "Il mange.", "Il le mange.", (0, 0, 1)),
    # a wrong word changed into another wrong word: neither fixed nor introduced
    ("Il a manger.", "Il a mangé.", "Il a mangés.", (1, 0, 0)),
    # a missing comma: a reference token (",") the text lacks
    ("3 pommes 4 poires", "3 pommes, 4 poires", "3 pommes, 4 poires", (1, 1, 0)),
])
def test_word_errors_fixed_and_introduced(text, reference, output, expected):
    assert M.word_errors(text, reference, output) == M.WordErrors(*expected)


def test_edits_split_equal_length_replacements_word_by_word():
    source, target = M.words("Il a manger a Lyon"), M.words("Il a mangé à Lyon")
    assert M.edits(source, target) == {(2, 3, ("mangé",)), (3, 4, ("à",))}
    assert M.edits(M.words("aujour d'hui"), M.words("aujourd'hui")) == {(0, 2, ("aujourd'hui",))}
    assert M.edits(M.words("il il mange"), M.words("il mange")) in ({(0, 1, ())}, {(1, 2, ())})
    assert M.edits(source, source) == set()


def test_edit_counts_match_proposed_against_gold():
    # gold: manger->mangé, a->à; proposed: manger->mangé (right), Lyon->Lion (wrong)
    counts = M.edit_counts("Il a manger a Lyon", "Il a mangé à Lyon", "Il a mangé a Lion")
    assert counts == M.EditCounts(1, 2, 2)
    assert M.edit_counts("Il mange.", "Il mange.", "Il mange.") == M.EditCounts(0, 0, 0)


def test_precision_recall_f05():
    assert M.precision_recall_f(1, 2, 2) == (0.5, 0.5, 0.5)
    assert M.precision_recall_f(1, 1, 4) == (1.0, 0.25, 0.625)  # 1.25 * 0.25 / (0.25 + 0.25)
    assert M.precision_recall_f(0, 0, 3) == (1.0, 0.0, 0.0)  # nothing proposed, nothing found
    assert M.precision_recall_f(0, 0, 0) == (1.0, 1.0, 1.0)
    assert M.precision_recall_f(0, 2, 0) == (0.0, 1.0, 0.0)


def test_count_occurrences_whole_words_only():
    assert M.count_occurrences("13 élèves, 3 filles, la 3e classe", "3") == 1
    assert M.count_occurrences("Mme Rose a des roses et une Rosette", "Rose") == 1
    assert M.count_occurrences("12,50 € et 112,50 €", "12,50 €") == 1
    assert M.count_occurrences("appelle le +41 22 345 67 89.", "+41 22 345 67 89") == 1
    assert M.count_occurrences("Siobhan O'Connor, d'Irlande", "Irlande") == 1


def test_protected_altered_compares_counts_not_presence():
    text, protected = "Mme Leblanc a 3 chats et 3 chiens à Lyon.", ["Leblanc", "3", "Lyon"]

    def altered(output: str) -> list[str]:
        return M.protected_altered(text, output, protected)

    assert altered("Mme Leland a 3 chats et 3 chiens à Lyon.") == ["Leblanc"]
    assert altered("Mme Leblanc a 3 chats et 8 chiens à Lyon.") == ["3"]  # one 3 left of two
    assert altered("Mme Leblanc a 3 chats et 3 chiens à Lyon, Lyon.") == ["Lyon"]
    assert altered(text) == []


def test_revert_reasons_group_by_the_part_before_the_colon():
    reasons = ["protected: Lyon", "protected: 3", "edit ratio: 0.61 > 0.5", "checker errors: 2 > 1",
               "checker errors", "length ratio 0.63 outside [0.77, 1.30]",
               "more checker errors (1 > 0)", "empty rewrite"]
    assert M.revert_reasons(reasons) == Counter({
        "protected": 2, "checker errors": 2, "edit ratio": 1, "length ratio": 1,
        "more checker errors": 1, "empty rewrite": 1})


def test_percentile_is_the_median_at_50_and_interpolates():
    assert M.percentile([5.0, 1.0, 3.0, 2.0, 4.0], 50) == 3.0
    assert M.percentile([1.0, 2.0, 3.0, 10.0], 50) == 2.5  # the median, not the mean (4)
    assert M.percentile([float(i) for i in range(1, 21)], 95) == pytest.approx(19.05)
    assert M.percentile([], 95) is None


def _row(n, text, reference, protected=()):
    return {"id": f"t{n}", "text": text, "reference": reference, "protected": list(protected),
            "tags": ["correct"] if text == reference else ["agreement"]}


def test_score_over_a_small_set():
    rows = [_row(1, "les chat noir", "les chats noirs"),
            _row(2, "Madame Leblanc a 3 chat.", "Madame Leblanc a 3 chats.", ["Leblanc", "3"]),
            _row(3, "Il mange.", "Il mange.")]
    outputs = ["les chats noirs", "Madame Leland a 3 chats.", "Il mange."]
    s = M.score(rows, outputs)
    assert (s["exact"], s["word_errors"], s["fixed"], s["introduced"]) == (2, 3, 3, 1)
    assert s["fixed_pct"] == 100.0 and s["introduced_pct"] == pytest.approx(100 / 3)
    # proposed: chat->chats, noir->noirs, Leblanc->Leland, chat.->chats. : 3 right of 4; gold 3
    assert (s["edits_right"], s["edits_proposed"], s["edits_gold"]) == (3, 4, 3)
    assert (s["precision"], s["recall"]) == (0.75, 1.0)
    assert s["f05"] == pytest.approx(1.25 * 0.75 / (0.25 * 0.75 + 1.0))
    assert s["protected_altered"] == 1
    assert s["protected_altered_list"] == [{"id": "t2", "value": "Leblanc", "text": 1, "output": 0}]
    with pytest.raises(ValueError):
        M.score(rows, outputs[:2])  # one output per row
    typographic = M.score([_row(4, "Jai faim.", "J'ai faim.")], ["J’ai faim."])
    assert (typographic["exact"], typographic["fixed"]) == (1, 1)


# --- the evaluation set ---------------------------------------------------------------------------

def test_the_evaluation_set_is_valid():
    rows = M.load_rows(BENCH / "data" / "correct_fr.jsonl")
    assert len(rows) >= 110
    assert M.problems(rows) == []
    assert len({r["id"] for r in rows}) == len(rows)
    tags = Counter(t for r in rows for t in r["tags"])
    assert set(tags) == set(M.TAGS)  # every kind covered
    assert tags["correct"] >= 10
    for row in rows:
        for value in row["protected"]:
            assert value in row["text"] and value in row["reference"], (row["id"], value)
    with_numbers = sum(any(c.isdigit() for p in r["protected"] for c in p) for r in rows)
    assert with_numbers > len(rows) / 2
    assert sum(bool(r["protected"]) for r in rows) > 0.9 * len(rows)


def test_problems_names_what_is_wrong():
    good = _row(1, "Il a manger à Lyon.", "Il a mangé à Lyon.", ["Lyon"])
    assert M.problems([good]) == []
    bad = [good, {**good, "protected": ["Lyon", "Paris"]},
           {**good, "id": "t2", "tags": ["grammar"]},
           {**good, "id": "t3", "reference": good["text"]}, {"id": "t4", "text": "x"}]
    found = M.problems(bad)
    assert len(found) == 5, found
    assert "duplicate id" in found[0] and "'Paris' occurs 0 times" in found[1]
    assert "tags ['grammar']" in found[2] and "'correct'" in found[3] and "keys" in found[4]


# --- bench/correct_quality.py without Grammalecte or a model ------------------------------------

Q = _load("correct_quality")


def test_naive_applies_first_suggestions_right_to_left_skipping_overlaps():
    text = "Il a manger des pomme."
    issues = [Issue(5, 11, "infinitif", ("mangé", "mangée")), Issue(16, 21, "pluriel", ("pommes",)),
              Issue(3, 11, "overlaps 'manger'", ("X",)), Issue(0, 2, "no suggestion")]
    assert Q.apply_first_suggestions(text, issues) == "Il a mangé des pommes."
    assert Q.apply_first_suggestions(text, []) == text


class StubCorrector:
    """Stands in for ``mistralkit.correct``, which needs Grammalecte and (hybrid) a model that these
    metric tests must not: it tests the bench's plumbing (timing, refusals, summary, table row)."""

    def __init__(self, fixes: dict[str, tuple[str, list[str], list[str]]]) -> None:
        self.fixes, self.seen = fixes, []

    def __call__(self, text: str) -> tuple[str, list[str], list[str]]:
        self.seen.append(text)
        return self.fixes.get(text, (text, [], []))


def test_run_system_and_summary_with_a_stub():
    rows = [_row(1, "les chat noir", "les chats noirs"), _row(2, "Il mange.", "Il mange."),
            _row(3, "Il a manger à Lyon.", "Il a mangé à Lyon.", ["Lyon"])]
    stub = StubCorrector({"les chat noir": ("les chats noirs", [], []),
                          "Il mange.": ("Il mange.", [], ["Il manges."]),  # an unsure proposal, wrong
                          "Il a manger à Lyon.": ("Il a mangé à Lyon.",
                                                  ["protected: Lyon", "edit ratio: 0.7"], [])})
    raw = Q.run_system(stub, rows)
    assert stub.seen == [Q.WARM_UP, *(r["text"] for r in rows)]  # one untimed warm-up first
    outputs = [s["output"] for s in raw["sentences"]]
    assert outputs == ["les chats noirs", "Il mange.", "Il a mangé à Lyon."]
    assert all(s["seconds"] >= 0 for s in raw["sentences"])
    raw.update(peak_rss=100 * 2**20, children_peak_rss=50 * 2**20, load_s=0.1)
    s = Q.summarize(rows, raw)
    assert (s["exact"], s["fixed_pct"], s["reverts"]) == (3, 100.0, 2)
    assert s["reverts_by_reason"] == {"protected": 1, "edit ratio": 1}
    assert s["by_tag"]["correct"]["exact"] == 1 and s["by_tag"]["agreement"]["sentences"] == 2
    assert (s["unsure"], s["unsure_right"]) == (1, 0)
    row = Q.row_of("stub", s)
    assert row[:4] == ["stub", "3/3", "100.0", "0.0"] and row[7] == "0/1"
    assert row[9] == "2 (edit ratio 1, protected 1)"
    assert row[-2:] == ["100", "50"]


def test_flags():
    args = Q.parse_args(["--systems", "naive,rules", "--model", "a", "--model", "b",
                         "--limit", "5"])
    assert (args.systems, args.model, args.limit) == ("naive,rules", ["a", "b"], 5)
    assert args.data == Q.DATA
    with pytest.raises(SystemExit):
        Q.parse_args(["--limit", "0"])
    with pytest.raises(SystemExit):
        Q.open_system("rules:some-model")
