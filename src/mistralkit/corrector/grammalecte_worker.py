"""Grammalecte in its own process: JSON requests on stdin, one JSON answer per line on stdout.

Run only as ``/usr/bin/python3 -I grammalecte_worker.py`` by ``mistralkit.corrector.grammalecte``;
never imported by mistralkit (Grammalecte is GPL-3 and lives in Debian's Python, not in our venv).
It exits when its stdin closes, so it cannot outlive the program that started it.

Requests and answers (one line each)::

    {"op": "options", "set": {"typo": false}}  -> {"ok": true, "options": {...all of them...}}
                                                   (without "set": only read them)
    {"op": "check", "paragraphs": ["...", ...]} -> {"ok": true, "paragraphs": [{"grammar": [...],
                                                    "spelling": [...]}, ...]}
    {"op": "morph", "words": ["Lucas"]}         -> {"ok": true, "morph": {"Lucas": [">Lucas/:M1:m:i/*"]}}
    anything that fails                         -> {"ok": false, "error": "..."}
"""

import json
import os
import sys

# The protocol owns the real stdout (a private copy of fd 1); anything else that prints, from Python
# or below it, lands on stderr.
_PROTOCOL_OUT = os.fdopen(os.dup(1), "w", encoding="ascii")
os.dup2(2, 1)
sys.stdout = sys.stderr
# Defensive, in case this file is run without -I: its folder holds a module named grammalecte.py.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]


def _answer(payload):
    _PROTOCOL_OUT.write(json.dumps(payload, ensure_ascii=True) + "\n")
    _PROTOCOL_OUT.flush()


def _load():
    import grammalecte

    checker = grammalecte.GrammarChecker("fr", "Python")
    engine = checker.getGCEngine()
    speller = checker.getSpellChecker()
    if speller is None:  # load() prints its exception and carries on with nothing loaded
        raise RuntimeError("Grammalecte's French dictionary failed to load")
    return engine, speller


def _set_options(engine, wanted):
    # setOptions updates the engine's own dictionary, loaded with the defaults: the merge we need.
    engine.setOptions({key: bool(value) for key, value in wanted.items()})
    return engine.getOptions()


def _error_fields(error):
    keep = ("nStart", "nEnd", "sRuleId", "sType", "sMessage", "aSuggestions", "sValue")
    return {key: error[key] for key in keep if key in error}


def _check(engine, speller, paragraphs):
    results = []
    for paragraph in paragraphs:
        grammar = [_error_fields(e) for e in engine.parse(paragraph, "FR")]
        spelling = [_error_fields(e) for e in speller.parseParagraph(paragraph, True)]
        results.append({"grammar": grammar, "spelling": spelling})
    return results


def _serve(engine, speller, lines):
    for line in lines:
        try:
            request = json.loads(line)
            op = request.get("op")
            if op == "check":
                _answer({"ok": True, "paragraphs": _check(engine, speller, request["paragraphs"])})
            elif op == "morph":
                _answer({"ok": True, "morph": {w: speller.getMorph(w) for w in request["words"]}})
            elif op == "options":
                _answer({"ok": True, "options": _set_options(engine, request.get("set", {}))})
            else:
                _answer({"ok": False, "error": "unknown op: %r" % (op,)})
        except Exception as exc:  # one bad request must not kill the worker
            _answer({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc)})


def main():
    try:
        engine, speller = _load()
    except Exception as exc:
        _answer({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc), "fatal": True})
        return 3
    _answer({"ok": True, "ready": True, "version": engine.version, "python": sys.executable})
    lines = (raw.decode("utf-8") for raw in sys.stdin.buffer)
    _serve(engine, speller, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
