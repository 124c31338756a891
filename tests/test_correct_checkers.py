"""The rule checkers behind ``mistralkit correct``: real Grammalecte (Debian's, in its own process)
and the LanguageTool client against a LanguageTool-shaped server on 127.0.0.1 (see FakeLanguageTool)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from mistralkit.corrector.checkers import open_checker
from mistralkit.corrector.grammalecte import OPTIONS_OFF, GrammalecteChecker
from mistralkit.corrector.languagetool import LanguageToolChecker, utf16_to_code_points
from mistralkit.errors import CheckerUnavailable, InvalidParameter

APT = "apt-get install python3-grammalecte grammalecte-cli"


@pytest.fixture(scope="module")
def grammalecte():
    checker = open_checker("grammalecte")
    yield checker
    checker.close()


def flagged(text: str, issues) -> list[str]:
    return [text[i.start:i.end] for i in issues]


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody has reaped yet (it runs nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.05)
    return False


# --- Grammalecte ---------------------------------------------------------------------------------

def test_the_example_sentence_flags_its_errors_at_their_places(grammalecte):
    text = "Hier, Lucas et sa soeur son allé au cinéma avec 3 amis."
    issues = grammalecte.check(text)
    by_word = {text[i.start:i.end]: i for i in issues}
    assert "soeur" in by_word and "allé" in by_word, flagged(text, issues)
    assert by_word["soeur"].start == text.index("soeur")
    assert by_word["soeur"].kind == "spelling" and by_word["soeur"].suggestions[0] == "sœur"
    assert by_word["soeur"].message  # Grammalecte gives spelling errors no message: we make one
    assert by_word["allé"].kind == "grammar" and by_word["allé"].rule and by_word["allé"].message
    assert not {"Lucas", "3"} & set(by_word)
    assert all(i.checker == "grammalecte" for i in issues)


@pytest.mark.parametrize("prefix", ["", "Ma soeur dort. ", "Un œuf cuit. ", "😀😀 Bon. 🇫🇷 ", "L'ami rit. ",
                                    "L’ami rit. ", "Il dort.\n\n", "Il dort.\r\n\r\n", "\n \n"])
def test_spans_index_the_original_text(grammalecte, prefix):
    text = prefix + "Il mange des pomme et des poire."
    issues = [i for i in grammalecte.check(text) if i.kind != "spelling"]
    assert flagged(text, issues) == ["pomme", "poire"]
    assert [i.start for i in issues] == [text.index("pomme"), text.index("poire")]


def test_every_paragraph_is_checked_and_mapped_to_the_whole_text(grammalecte):
    sentence = "Il mange des pomme."
    text = "\n\n".join([sentence, sentence + "\r\n" + sentence, "😀 " + sentence])
    issues = grammalecte.check(text)
    starts = [i.start for i in issues]
    expected = [n for n in range(len(text)) if text.startswith("pomme", n)]
    assert len(expected) == 4 and starts == expected
    assert flagged(text, issues) == ["pomme"] * 4


def test_typography_is_left_alone(grammalecte):
    text = "J'ai 58213 euros  et l'ami d'Emma a dit : « oui » etc... Il fait 25 km."
    assert grammalecte.check(text) == []


def test_the_typography_test_can_see_typography():
    """The same text with Grammalecte's typography defaults back on: the options really are sent."""
    text = "J'ai 58213 euros  et l'ami d'Emma a dit : « oui » etc... Il fait 25 km."
    with GrammalecteChecker(options={name: True for name in OPTIONS_OFF}) as checker:
        issues = checker.check(text)
    kinds = {i.kind for i in issues}
    words = set(flagged(text, issues))
    assert kinds == {"typography"}
    assert {"J'", "l'", "d'"} <= words and any("58213" in w for w in words) and "  " in words


def test_options_are_merged_with_the_defaults(grammalecte):
    options = grammalecte.options
    assert len(options) > 30  # every option, not only the ones we set
    assert all(options[name] is False for name in OPTIONS_OFF)
    assert all(options[name] for name in ("conf", "gn", "conj", "ppas", "infi", "maj", "tu"))


def test_a_capital_after_a_full_stop_is_still_checked(grammalecte):
    text = "Le chat dort. il rêve."
    assert "il" in flagged(text, grammalecte.check(text))


def test_proper_nouns_are_what_the_dictionary_tags(grammalecte):
    assert grammalecte.proper_nouns(["Lucas", "Leblanc", "blanc", "Paris"]) == {"Lucas", "Paris"}
    assert grammalecte.proper_nouns(["Marie", "marie", "Dupont", "France", "Mme", "maison"]) == {
        "Marie", "Dupont", "France"}
    assert grammalecte.proper_nouns([]) == set()


def test_empty_text_has_no_issues(grammalecte):
    assert grammalecte.check("") == [] and grammalecte.check(" \n\n \r\n") == []


def test_a_dead_worker_is_restarted_once(grammalecte):
    old = grammalecte.pid
    os.kill(old, signal.SIGKILL)
    assert wait_gone(old)
    assert flagged("Il mange des pomme.", grammalecte.check("Il mange des pomme.")) == ["pomme"]
    assert grammalecte.pid != old and not gone(grammalecte.pid)


def test_close_stops_the_child_process():
    checker = open_checker("grammalecte")
    pid = checker.pid
    assert not gone(pid)
    checker.close()
    assert gone(pid)
    with pytest.raises(CheckerUnavailable):
        checker.check("Il mange des pomme.")
    checker.close()  # twice is fine


def _spawn_owner(tmp_path: Path, then: str) -> tuple[subprocess.Popen, int]:
    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(then=then))
    owner = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    return owner, int(owner.stdout.readline())


OWNER = """import atexit, os, sys, time
from mistralkit.corrector.checkers import open_checker

def report():  # registered first, so atexit runs it last: after the checker's own exit hook
    print("alive" if os.path.exists(f"/proc/{{checker.pid}}") else "gone", flush=True)  # reaped

atexit.register(report)
checker = open_checker("grammalecte")
print(checker.pid, flush=True)
{then}
"""


def test_the_child_process_is_stopped_at_interpreter_exit(tmp_path):
    owner, pid = _spawn_owner(tmp_path, "sys.exit(0)  # without close()")
    assert owner.stdout.read().strip() == "gone"  # stopped by us before exit, not by the EOF after it
    assert owner.wait(timeout=30) == 0


def test_the_child_process_ends_when_its_owner_is_killed(tmp_path):
    owner, pid = _spawn_owner(tmp_path, "time.sleep(60)")
    assert not gone(pid)
    owner.kill()
    owner.wait(timeout=10)
    owner.stdout.close()
    assert wait_gone(pid), "the worker outlived the killed program"


def test_a_missing_python_is_a_one_line_error_naming_the_install():
    with pytest.raises(CheckerUnavailable) as caught:
        GrammalecteChecker(python="/nonexistent/python3")
    assert APT in str(caught.value) and "\n" not in str(caught.value)


def test_a_python_without_grammalecte_is_a_one_line_error_naming_the_install():
    with pytest.raises(CheckerUnavailable) as caught:
        GrammalecteChecker(python=sys.executable)  # our venv cannot import Debian's grammalecte
    message = str(caught.value)
    assert APT in message and "grammalecte" in message.split("(")[1] and "\n" not in message


def test_a_worker_that_never_answers_times_out_and_is_stopped(tmp_path):
    silent, pid_file = tmp_path / "silent-python", tmp_path / "pid"
    silent.write_text(f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 60\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    started = time.monotonic()
    with pytest.raises(CheckerUnavailable, match="did not answer within 0.5 s") as caught:
        GrammalecteChecker(python=str(silent), timeout_s=0.5)
    assert time.monotonic() - started < 10
    assert gone(int(pid_file.read_text()))  # stopped at once, not when the checker is collected
    del caught


def test_an_unknown_checker_is_an_invalid_parameter():
    with pytest.raises(InvalidParameter, match="grammalecte or languagetool"):
        open_checker("hunspell")


# --- LanguageTool ----------------------------------------------------------------------------------

class FakeLanguageTool:
    """A real HTTP server on 127.0.0.1 that stands in for LanguageTool, whose jar is not obtainable here.

    It answers ``GET /v2/languages`` and ``POST /v2/check`` (form-encoded ``text``, ``language``) with
    LanguageTool's JSON shape, from two fixed rules: "pomme" after "des " (grammar, -> "pommes") and
    "soeur" (misspelling, -> "sœur"); offsets and lengths in UTF-16 code units, as LanguageTool's are.
    ``status`` makes ``/v2/check`` answer that HTTP status instead.
    """

    RULES = [("des pomme", 4, "pommes", "GRAMMAR", "grammar", "ACCORD_NOMBRE", "Accord de nombre."),
             ("soeur", 0, "sœur", "TYPOS", "misspelling", "FR_SPELLING_RULE", "Faute de frappe possible.")]

    def __init__(self) -> None:
        fake = self
        self.status = 200
        self.requests: list[dict[str, list[str]]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v2/languages":
                    self._send(200, [{"name": "French", "code": "fr", "longCode": "fr"}])
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                form = parse_qs(body)
                fake.requests.append(form)
                if self.path != "/v2/check":
                    self._send(404, {"error": "not found"})
                elif fake.status != 200:
                    self._send(fake.status, {"error": "internal"})
                else:
                    matches = fake.matches(form["text"][0])
                    self._send(200, {"software": {"name": "LanguageTool"}, "matches": matches})

            def _send(self, status: int, payload) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def matches(self, text: str) -> list[dict]:
        def utf16(s: str) -> int:
            return len(s.encode("utf-16-le")) // 2

        found = []
        for pattern, skip, value, category, issue_type, rule, message in self.RULES:
            at = text.find(pattern)
            while at >= 0:
                start, word = at + skip, pattern[skip:]
                found.append({"message": message, "shortMessage": "", "offset": utf16(text[:start]),
                              "length": utf16(word), "replacements": [{"value": value}],
                              "rule": {"id": rule, "issueType": issue_type,
                                       "category": {"id": category, "name": category}}})
                at = text.find(pattern, at + 1)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_lt():
    server = FakeLanguageTool()
    yield server
    server.close()


def test_languagetool_spans_are_code_points_after_astral_characters(fake_lt):
    text = "😀🇫🇷 Ma soeur mange des pomme. 𝄞 Et des pomme."
    with open_checker("languagetool", url=fake_lt.url) as checker:
        issues = checker.check(text)
    assert flagged(text, issues) == ["soeur", "pomme", "pomme"]
    assert [i.start for i in issues] == [text.index("soeur"), text.index("pomme"), text.rindex("pomme")]
    raw = fake_lt.matches(text)
    assert raw[0]["offset"] != text.index("pomme")  # the mapping was needed
    assert [i.kind for i in issues] == ["spelling", "grammar", "grammar"]
    assert issues[1].suggestions == ("pommes",) and issues[1].rule == "ACCORD_NOMBRE"
    assert issues[1].message == "Accord de nombre." and issues[1].checker == "languagetool"
    sent = fake_lt.requests[-1]
    assert sent["language"] == ["fr"] and sent["text"] == [text] and sent["disabledCategories"] == ["TYPOGRAPHY"]


def test_languagetool_accepts_a_url_ending_in_v2(fake_lt):
    with LanguageToolChecker(fake_lt.url + "/v2/") as checker:
        assert checker.check("Il mange des pomme.")[0].start == 13
        assert checker.proper_nouns(["Lucas", "Paris"]) == set()  # no dictionary lookup in its API


def test_languagetool_error_status_is_a_one_line_error(fake_lt):
    with LanguageToolChecker(fake_lt.url) as checker:
        fake_lt.status = 500
        with pytest.raises(CheckerUnavailable) as caught:
            checker.check("Il mange des pomme.")
    assert "HTTP 500" in str(caught.value) and "\n" not in str(caught.value)
    assert "start your LanguageTool server or fix --languagetool-url" in str(caught.value)


def test_an_unreachable_languagetool_is_a_one_line_error():
    with socket.socket() as sock:  # a port nobody listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CheckerUnavailable) as caught:
        open_checker("languagetool", url=f"http://127.0.0.1:{port}", timeout_s=5)
    message = str(caught.value)
    assert "unreachable" in message and "fix --languagetool-url" in message and "\n" not in message


@pytest.mark.parametrize("url", [None, "", "127.0.0.1:8081"])
def test_languagetool_needs_an_http_url(url):
    with pytest.raises(InvalidParameter, match="URL"):
        open_checker("languagetool", url=url)


def test_utf16_table():
    text = "a😀b"
    table = utf16_to_code_points(text)
    assert table == [0, 1, 2, 2, 3]
    assert text[table[3]:table[4]] == "b"


def test_a_check_that_times_out_restarts_the_worker_without_stale_answers():
    with GrammalecteChecker() as checker:
        first = checker.pid
        checker.timeout_s = 0.001
        with pytest.raises(CheckerUnavailable, match="did not answer"):
            checker.check("Il mange des pomme. " * 2000)
        assert wait_gone(first)
        checker.timeout_s = 30
        text = "Elle a des chat."
        assert flagged(text, checker.check(text)) == ["chat"]  # this text's answer, not the long one's
        assert checker.pid != first


def test_unknown_grammalecte_options_are_an_invalid_parameter():
    with pytest.raises(InvalidParameter, match="unknown Grammalecte options: nosuchoption"):
        GrammalecteChecker(options={"nosuchoption": True})
