"""Grammalecte, the French spelling and grammar checker, behind a process boundary.

Grammalecte is GPL-3 and Debian installs it for Debian's own Python (``/usr/bin/python3``), not for
our virtual environment, so it never runs in our process. We start one small worker of our own,
``grammalecte_worker.py``, under that Python and talk JSON lines over its stdin/stdout. We chose this
over ``grammalecte-server`` because:

- the server has no morphology endpoint, and ``proper_nouns`` needs the dictionary's tags, so the
  server route would need this worker anyway: two processes instead of one;
- the server forks a pool of ``cpu_count - 1`` processes and listens on a TCP port (a free port to
  pick, a race, readiness polling, a socket any local user can reach); the worker is one process
  that exits by itself when its stdin closes, so it cannot outlive us even if we are killed;
- the server splits paragraphs itself after rewriting ``\\r\\n`` to ``\\n``, which shifts offsets;
  we split lines ourselves and add each line's offset, so every span indexes the original text.

Spans: Grammalecte is Python too, so its offsets are code points of the line we send. We never run
its text formatter (the server's ``tf`` flag): that is what rewrites "soeur" to "sœur" and moves
offsets.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from ..errors import CheckerUnavailable, InvalidParameter
from .types import Issue

GRAMMALECTE_PYTHON = "/usr/bin/python3"  # the Python Debian's python3-grammalecte installs for
WORKER = Path(__file__).with_name("grammalecte_worker.py")
INSTALL_HINT = "install it: apt-get install python3-grammalecte grammalecte-cli"
SPELLING_MESSAGE = "Mot inconnu du dictionnaire."

# Merged into Grammalecte's defaults (its engine replaces, not merges, a partial dict: we send only
# these and the worker updates the defaults). We want spelling and grammar; these rewrite layout,
# checked one by one on real sentences:
OPTIONS_OFF = {
    "typo": False,  # typographic signs: "etc..." -> "etc.", spaces around punctuation
    "apos": False,  # straight apostrophe ' -> typographic ’ on every elision
    "esp": False,  # double spaces, spaces at line start/end
    "tab": False,  # tabulations (already off by default)
    "nbsp": False,  # non-breaking spaces before : ; ! ? and inside « »
    "num": False,  # "58213" -> "58 213" (a protected number), letter O inside numbers
    "unit": False,  # "12,50 €" -> "12,50\u00a0€", "25 km" -> "25\u00a0km"
    "eepi": False,  # normalising inclusive writing with middle dots
    "nf": False,  # French typographic norms (AFNOR abbreviations)
    "liga": False,  # typographic ligatures fi, fl...
    "chim": False,  # "H2O" -> "H₂O"
    "date": False,  # "31 février" -> "28 février": dates are protected, never corrected
    "virg": False,  # "commas are advisable before mais/car": punctuation style, not grammar
    "minis": False,  # capitals in ministry names: an editorial convention
}
# Kept on: "maj" (sentence-initial capitals, "Lundi" -> "lundi": orthography dyslexic writers need),
# "tu" (hyphens: "peut être" -> "peut-être"), and every grammar option.

_KIND_BY_TYPE = {
    **{option: "typography" for option in (*OPTIONS_OFF, "mapos", "ocr", "poncfin")},
    **{option: "style" for option in ("bs", "pleo", "redon1", "redon2", "neg")},
}
_LINE = re.compile(r"[^\r\n]+")
_REQUEST_CHARS = 20_000  # lines per request add up to about this, so each answers within timeout_s
_PROPER_TAGS = {"M1", "M2", "MP"}  # first name, surname, place (also Dieu, Internet)


class GrammalecteChecker:
    """Grammalecte in a child process, started once and reused; ``close()`` stops it.

    >>> with GrammalecteChecker() as checker:  # doctest: +SKIP
    ...     [text[i.start:i.end] for i in checker.check(text := "Il mange des pomme.")]
    ['pomme']
    """

    name = "grammalecte"

    def __init__(self, *, python: str = GRAMMALECTE_PYTHON, timeout_s: float = 30,
                 options: dict[str, bool] | None = None) -> None:
        if not timeout_s > 0:
            raise InvalidParameter(f"timeout_s must be positive, not {timeout_s!r}")
        self.python, self.timeout_s = python, float(timeout_s)
        self._wanted = {**OPTIONS_OFF, **(options or {})}
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._stop = None
        self._buffer = bytearray()
        self.options: dict[str, bool] = {}  # every option as the worker now has it
        self.version = ""
        self.pid = 0
        self._start()

    def check(self, text: str) -> list[Issue]:
        lines = [(m.start(), m.group()) for m in _LINE.finditer(text) if m.group().strip()]
        issues: list[Issue] = []
        for batch in _batches(lines):
            answer = self._request({"op": "check", "paragraphs": [line for _, line in batch]})
            for (offset, line), found in zip(batch, answer["paragraphs"]):
                issues += [self._grammar_issue(e, offset) for e in found["grammar"]]
                issues += filter(None, (self._spelling_issue(e, line, offset) for e in found["spelling"]))
        return sorted(issues, key=lambda i: (i.start, i.end, i.rule))

    def proper_nouns(self, words: list[str]) -> set[str]:
        """The words one of whose dictionary readings is a proper noun: ``:M1`` first name, ``:M2``
        surname, ``:MP`` place, or a noun whose lemma is capitalised (France, Bretagne, Loire).

        The lookup keeps case as given: "Marie" is a first name, "marie" only a verb.
        """
        morph = self.morph(words)
        return {word for word, readings in morph.items() if any(map(_is_proper_noun, readings))}

    def morph(self, words: list[str]) -> dict[str, list[str]]:
        """Each word's dictionary readings, ``>lemma/:tag:tag.../*`` (none for an unknown word).

        >>> checker.morph(["allé"])  # doctest: +SKIP
        {'allé': ['>aller/:V1_i__e_e_:Q:m:s/*']}
        """
        unique = sorted({w for w in words if w and w.strip()})
        if not unique:
            return {}
        return self._request({"op": "morph", "words": unique})["morph"]

    def close(self) -> None:
        with self._lock:
            if self._stop is not None:
                self._stop()
            self._proc, self._stop = None, None

    def __enter__(self) -> GrammalecteChecker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the worker ---------------------------------------------------------------------------

    def _start(self) -> None:
        stderr = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen([self.python, "-I", str(WORKER)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr, bufsize=0,
                                    start_new_session=True)  # a Ctrl-C in the terminal is ours to handle
        except OSError as exc:
            stderr.close()
            raise CheckerUnavailable(f"Grammalecte is not available: cannot run {self.python} "
                                     f"({exc.strerror or exc})", INSTALL_HINT) from None
        # Stops the worker on close(), on garbage collection and at interpreter exit.
        self._stop = weakref.finalize(self, _stop_worker, proc, stderr, os.getpid())
        self._proc, self._stderr, self.pid, self._buffer = proc, stderr, proc.pid, bytearray()
        try:
            hello = self._receive(time.monotonic() + self.timeout_s)
            if not hello.get("ok"):
                raise CheckerUnavailable(f"Grammalecte is not available: {self.python} cannot load it "
                                         f"({hello.get('error', '?')})", INSTALL_HINT)
            self.version = hello.get("version", "")
            unknown = sorted(set(self._wanted) - set(self._exchange({"op": "options"})["options"]))
            if unknown:
                raise InvalidParameter(f"unknown Grammalecte options: {', '.join(unknown)}",
                                       "see Grammalecte's option names in mistralkit.corrector.grammalecte")
            self.options = self._exchange({"op": "options", "set": self._wanted})["options"]
        except BaseException:
            self._stop()
            raise

    def _request(self, payload: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._proc is None:
                raise CheckerUnavailable("Grammalecte checker is closed", "open a new one with open_checker()")
            if self._proc.poll() is not None:  # died since the last request: one fresh start
                self._stop()
                self._start()
            return self._exchange(payload)

    def _exchange(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(payload, ensure_ascii=True).encode("ascii") + b"\n")
            self._proc.stdin.flush()
        except OSError:
            pass  # it died: _receive reads its last words
        answer = self._receive(time.monotonic() + self.timeout_s)
        if not answer.get("ok"):
            raise CheckerUnavailable(f"Grammalecte failed: {answer.get('error', '?')}",
                                     "report the text that makes it fail")
        return answer

    def _receive(self, deadline: float) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while (end := self._buffer.find(b"\n")) < 0:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                self._stop()
                raise CheckerUnavailable(f"Grammalecte did not answer within {self.timeout_s:g} s",
                                         "retry with a longer timeout or a shorter text")
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                reason = _last_words(self._proc, self._stderr)
                self._stop()
                raise CheckerUnavailable(f"Grammalecte stopped unexpectedly ({reason})", INSTALL_HINT)
            self._buffer += chunk
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 1]
        return json.loads(line)

    # --- answers to Issues --------------------------------------------------------------------

    def _grammar_issue(self, error: dict[str, Any], offset: int) -> Issue:
        return Issue(offset + error["nStart"], offset + error["nEnd"], error.get("sMessage", ""),
                     tuple(error.get("aSuggestions") or ()), error.get("sRuleId", ""),
                     _KIND_BY_TYPE.get(error.get("sType", ""), "grammar"), self.name)

    def _spelling_issue(self, error: dict[str, Any], line: str, offset: int) -> Issue | None:
        word, start = error.get("sValue", ""), error["nStart"]
        if line[start:start + len(word)] != word:  # never seen; a wrong span is worse than none
            return None
        return Issue(offset + start, offset + start + len(word), SPELLING_MESSAGE,
                     tuple(error.get("aSuggestions") or ()), "spelling", "spelling", self.name)


def _batches(lines: list[tuple[int, str]]):
    batch: list[tuple[int, str]] = []
    size = 0
    for offset, line in lines:
        if batch and size + len(line) > _REQUEST_CHARS:
            yield batch
            batch, size = [], 0
        batch.append((offset, line))
        size += len(line)
    if batch:
        yield batch


def _is_proper_noun(reading: str) -> bool:
    """``reading`` is one morphology, ``>lemma/:tag:tag.../*``. A capital letter alone is the name of
    a letter ("C" in "C'est"), not a proper noun."""
    lemma, _, tags = reading.lstrip(">").partition("/")
    parts = set(tags.split("/")[0].split(":"))
    return bool(parts & _PROPER_TAGS) or ("N" in parts and lemma[:1].isupper() and len(lemma) > 1)


def _last_words(proc: subprocess.Popen, stderr) -> str:
    """The last line the dead worker wrote to stderr, or its exit status."""
    try:
        proc.wait(timeout=2)
        stderr.seek(0)
        lines = [line.strip() for line in stderr.read().decode("utf-8", "replace").splitlines()]
    except (OSError, subprocess.TimeoutExpired):
        lines = []
    last = next((line for line in reversed(lines) if line), "")
    return last[:200] or f"exit status {proc.returncode}"


def _stop_worker(proc: subprocess.Popen, stderr, owner_pid: int) -> None:
    """Close its stdin (it exits on EOF), then terminate, then kill; never leave it behind."""
    if os.getpid() != owner_pid:  # a forked child inherited this finaliser: not its worker
        return
    for step in (proc.stdin.close, proc.terminate, proc.kill):
        try:
            step()
            proc.wait(timeout=2)
            break
        except (OSError, subprocess.TimeoutExpired):
            continue
    for stream in (proc.stdout, stderr):
        stream.close()
