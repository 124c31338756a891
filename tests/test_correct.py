"""``mistralkit correct``: the library, the CLI and ``POST /v1/correct`` against real Grammalecte, real
spaCy and the embedded model through llama.cpp."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest

from conftest import run_cli
from mistralkit.corrector import Corrector
from mistralkit.corrector import edits as E
from mistralkit.corrector.guards import guard, reason_kind
from mistralkit.corrector.sentences import sentence_spans
from mistralkit.errors import CheckerUnavailable, InvalidParameter
from mistralkit.settings import CorrectSettings
from test_server_api import KEY, Serve

pytestmark = pytest.mark.slow

PUPIL = ("Hier, Lucas et sa soeur son allé au cinema avec 3 amis. M. Leblanc habite au 58213 rue des Lilas, "
         "il a manger a 14h30 et a payer 12,50 €.\n\nEcrivez a lucas.leblanc@example.fr avant le 7 novembre 2024.")
KEPT = ["Lucas", "3", "Leblanc", "58213", "14h30", "12,50 €", "lucas.leblanc@example.fr", "7 novembre 2024"]


@pytest.fixture(scope="module")
def rules():
    with Corrector(CorrectSettings(mode="rules")) as corrector:
        yield corrector


@pytest.fixture(scope="module")
def hybrid(model):
    with Corrector(CorrectSettings(mode="hybrid")) as corrector:
        yield corrector


def assert_consistent(result) -> None:
    """Edits index the input, apply to give the output, and never touch a protected string."""
    for edit in result.edits:
        assert result.text[edit.start:edit.end] == edit.before
        assert not E.overlaps(edit.start, edit.end, result.protected), edit
    assert E.apply(result.text, result.edits) == result.corrected
    for value in KEPT:
        assert result.corrected.count(value) == result.text.count(value), value


def test_rules_fix_errors_and_keep_every_protected_string(rules):
    result = rules.correct(PUPIL)
    assert_consistent(result)
    assert "a mangé" in result.corrected and "cinéma" in result.corrected
    assert {e.source for e in result.edits} == {"rule"} and all(e.message for e in result.edits)
    kinds = {p.value: p.kind for p in result.protected}
    assert kinds["Leblanc"] == "name" and kinds["58213"] == "number" and kinds["14h30"] == "time"
    assert kinds["12,50 €"] == "amount" and kinds["lucas.leblanc@example.fr"] == "email"
    assert result.timings["total"] > 0 and result.checker == "grammalecte"


def test_the_checker_alone_would_change_a_surname_the_rules_do_not(rules):
    text = "M. Leblanc est venu hier."
    flagged = [i for i in rules.checker.check(text) if text[i.start:i.end] == "Leblanc"]
    assert flagged and flagged[0].suggestions  # Grammalecte would "correct" it
    assert rules.correct(text).corrected == text


def test_user_words_are_protected(rules):
    text = "Le chien Rex mange une pome."
    assert "pomme" in rules.correct(text).corrected
    kept = rules.correct(text, protect=["pome"])
    assert "pome." in kept.corrected and any(p.kind == "user" for p in kept.protected)


def test_paragraphs_keep_their_place(rules):
    text = "Il a manger.\n\n\nElle a chanter hier.\n"
    result = rules.correct(text)
    assert result.corrected == "Il a mangé.\n\n\nElle a chanté hier.\n"
    assert_consistent(result)


def test_hybrid_keeps_what_the_guards_pass_and_says_why_it_refused(hybrid):
    result = hybrid.correct(PUPIL)
    assert_consistent(result)
    assert result.mode == "hybrid" and result.model == "gemma-3-270m:q4_k_m"
    rules_only = Corrector(CorrectSettings(mode="rules"), checker=hybrid.checker).correct(PUPIL)
    for refusal in result.refused:
        assert reason_kind(refusal.reason) and refusal.reason
        assert result.corrected[refusal.start:refusal.end] == rules_only.corrected[refusal.start:refusal.end]
    # Every sentence that differs from the rules result is one the guards accept.
    if result.corrected != rules_only.corrected:
        for start, end in sentence_spans(rules_only.corrected):
            before = rules_only.corrected[start:end]
            if before not in result.corrected:
                after = next(result.corrected[s:e] for s, e in sentence_spans(result.corrected) if s >= start)
                values = Counter(p.value for p in result.protected if p.value in before)
                assert guard(before, after, values, count_issues=lambda s: len(hybrid.checker.check(s))) is None


def test_hybrid_with_the_embedded_model_fixes_a_plain_sentence(hybrid):
    result = hybrid.correct("Il a manger une pome.")
    assert_consistent(result)
    assert result.corrected.startswith("Il a mangé")


def test_hybrid_stops_rewriting_between_sentences_once_cancelled(hybrid):
    from mistralkit.corrector.pipeline import CANCELLED

    class Counted:
        """The corrector's engine, counting its generations."""

        def __init__(self, engine) -> None:
            self.engine, self.calls = engine, 0

        def __getattr__(self, name: str):
            return getattr(self.engine, name)

        def generate(self, *args, **kwargs):
            self.calls += 1
            return self.engine.generate(*args, **kwargs)

    text = "Il a manger une pome. Elle a chanter hier. Nous somme partis tôt."
    real = hybrid.engine
    hybrid.engine = counted = Counted(real)
    try:
        result = hybrid.correct(text, cancelled=lambda: counted.calls >= 1)  # gone after the first rewrite
    finally:
        hybrid.engine = real
    rules_only = Corrector(CorrectSettings(mode="rules"), checker=hybrid.checker).correct(text)
    assert counted.calls == 1
    assert [r.reason for r in result.refused if r.reason == CANCELLED] and len(
        [r for r in result.refused if r.reason == CANCELLED]) == 2
    later = sentence_spans(rules_only.corrected)[1:]
    assert all(rules_only.corrected[s:e] in result.corrected for s, e in later)
    assert_consistent(result)


@pytest.mark.parametrize("text", ["", "   \n", "a\ud800b"])
def test_bad_text_is_refused(rules, text):
    with pytest.raises(InvalidParameter):
        rules.correct(text)


def test_bad_checkers_are_one_line_errors():
    with pytest.raises(InvalidParameter, match="grammalecte or languagetool"):
        CorrectSettings(checker="hunspell")
    with pytest.raises(CheckerUnavailable):
        Corrector(CorrectSettings(checker="languagetool", languagetool_url="http://127.0.0.1:9"))


# --- the CLI ---------------------------------------------------------------------------------------

def test_cli_prints_the_corrected_text_alone_and_json(mk_home):
    done = run_cli("correct", "Il a manger une pome à 14h30.", home=mk_home)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Il a mangé une pomme à 14h30.\n"
    as_json = json.loads(run_cli("correct", "--json", "Il a manger.", home=mk_home).stdout)
    assert as_json["corrected"] == "Il a mangé." and as_json["edits"][0]["source"] == "rule"
    diff = run_cli("correct", "--diff", "Il a manger.", home=mk_home)
    assert diff.stdout.strip() == "Il a [-manger-]{+mangé+}."


def test_cli_file_to_file(mk_home, tmp_path):
    source, out = tmp_path / "devoir.txt", tmp_path / "corrige.txt"
    source.write_text("Il a manger.\n\nElle a chanter.\n\nM. Leblanc est venu.\n", encoding="utf-8")
    done = run_cli("correct", "-f", str(source), "-o", str(out), "--explain", home=mk_home)
    assert done.returncode == 0, done.stderr
    assert out.read_text(encoding="utf-8") == "Il a mangé.\n\nElle a chanté.\n\nM. Leblanc est venu.\n"
    assert not (tmp_path / "corrige.txt.partial").exists()
    assert "rule 'manger' -> 'mangé'" in done.stdout


@pytest.mark.parametrize(("args", "stdin", "says"), [
    (("",), None, "the text to correct is empty"),
    (("-",), b"caf\xe9", "standard input: not valid UTF-8"),
    (("--file", "{binary}"), None, "looks like a binary file"),
    (("--checker", "hunspell", "bonjour"), None, "must be grammalecte or languagetool"),
    (("--checker", "languagetool", "bonjour"), None, "languagetool_url"),
    (("--checker", "languagetool", "--languagetool-url", "http://127.0.0.1:9", "bonjour"), None, "LanguageTool"),
    (("--mode", "hybrid", "-m", "no-such-model", "bonjour"), None, "unknown model"),
])
def test_cli_bad_input(mk_home, tmp_path, args, stdin, says):
    binary = tmp_path / "photo.jpg"
    binary.write_bytes(b"\xff\xd8\xff\xe0\0\0JFIF\0" * 10)
    out = tmp_path / "out.txt"
    done = run_cli("correct", *[a.format(binary=binary) for a in args], "-o", str(out), home=mk_home,
                   stdin=stdin, text=False)
    stderr = done.stderr.decode()
    assert done.returncode != 0 and "Traceback" not in stderr and says in stderr, stderr
    assert len(stderr[stderr.index("error: "):].strip().splitlines()) <= 2
    assert not out.exists() and not (tmp_path / "out.txt.partial").exists()


def test_cli_hybrid_with_a_model_too_big_for_4gb_says_which_fit(mk_home):
    done = run_cli("correct", "--mode", "hybrid", "-m", "mistral-7b-instruct-v0.3", "bonjour", home=mk_home)
    assert done.returncode != 0  # not downloaded here; the note comes first
    assert "needs more than a 4 GB machine has" in done.stderr and "Ministral" in done.stderr
    assert "apache-2.0" in done.stderr


# --- the server ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "correct.log", "--api-key", KEY, "--threads", "1")
    yield serve
    serve.stop()


def post(server, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/correct", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=300)


def test_server_corrects_in_every_mode(server):
    rules = post(server, {"text": PUPIL, "mode": "rules"})
    assert rules.status_code == 200, rules.text
    body = rules.json()
    assert body["object"] == "correction" and body["mode"] == "rules" and "a mangé" in body["corrected"]
    assert all(body["text"][e["start"]:e["end"]] == e["before"] for e in body["edits"])
    hybrid = post(server, {"text": "Il a manger une pome.", "mode": "hybrid", "protect": ["pome"]})
    assert hybrid.status_code == 200, hybrid.text
    result = hybrid.json()
    assert result["mode"] == "hybrid" and result["model"] == "gemma-3-270m:q4_k_m" and "pome" in result["corrected"]
    ranked = post(server, {"text": "Mes cousins on gagné le tournoi de Brest."})  # serve's default: rank
    assert ranked.status_code == 200, ranked.text
    result = ranked.json()
    assert result["mode"] == "rank" and result["model"] == "gemma-3-270m:q4_k_m"
    assert "ont gagné" in result["corrected"] and "Brest" in result["corrected"]
    assert all(0 < e["confidence"] <= 1 for e in result["edits"]) and isinstance(result["proposed"], list)
    control = post(server, {"text": "Il a\u0000 mangé."})
    assert control.status_code == 400 and "control character" in control.json()["error"]["message"]


def test_server_correct_errors_and_schema(server):
    assert post(server, {"text": "Il a manger."}, key="wrong-key-000000").status_code == 401
    blank = post(server, {"text": "  "})
    assert blank.status_code == 400 and blank.json()["error"]["message"]
    assert post(server, {"text": "x", "mode": "poetry"}).status_code == 400
    assert post(server, {"text": "x", "checker": "languagetool"}).status_code == 400
    lost = post(server, {"text": "Il a manger.", "mode": "hybrid", "model": "/etc/passwd"})
    assert lost.status_code == 404
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v1/correct" in schema["paths"]


def test_correct_settings_precedence(tmp_path):
    from mistralkit.settings import load_section

    config = tmp_path / "config.toml"
    config.write_text('temperature = 0.5\n[correct]\nmode = "hybrid"\nprotect = ["Leblanc"]\nmax_tokens = 64\n')
    got = load_section("correct", {"max_tokens": 32}, environ={"MISTRALKIT_CORRECT_MODE": "rules"},
                       config_file=config)
    assert (got.settings.mode, got.settings.protect, got.settings.max_tokens) == ("rules", ("Leblanc",), 32)
    assert got.sources["mode"] == "env MISTRALKIT_CORRECT_MODE" and got.sources["max_tokens"] == "command line"
    assert got.sources["protect"].startswith("config file")
    config.write_text('[correct]\nmood = "x"\n')
    with pytest.raises(InvalidParameter, match=r"unknown setting \[correct\] 'mood'"):
        load_section("correct", config_file=config, environ={})


@pytest.mark.parametrize(("text", "fixed"), [
    ("Je mange a la cantine a 12h15.", "Je mange a la cantine à 12h15."),
    ("Ma tante habite a Bordeaux depuis 2010.", "Ma tante habite à Bordeaux depuis 2010."),
    ("On y va a pied.", "On y va à pied."),
    ("Il a 2h de retard.", None),
    ("Léa a Paul au téléphone.", None),
    ("Il y a Lyon et Paris.", None),
])
def test_our_a_rule_only_where_the_verb_cannot_stand(text, fixed):
    from mistralkit.corrector.homophones import issues
    from mistralkit.corrector.protect import find_protected

    found = issues(text, find_protected(text))
    if fixed is None:
        assert found == []
    else:
        assert len(found) == 1 and E.apply(text, [E.Edit(found[0].start, found[0].end, "a", "à", "rule")]) == fixed
