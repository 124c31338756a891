"""``mistralkit correct``: thin over ``mistralkit.corrector``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

CHECK, OUTPUT = "Checker", "Output"


def _opt(*names: str, help: str, panel: str | None = None, **kw):
    return typer.Option(*names, help=help, rich_help_panel=panel, show_default=False, **kw)


def correct(
    text: Annotated[
        str | None, typer.Argument(help="French text; '-' or nothing reads standard input.", show_default=False)
    ] = None,
    file: Annotated[
        Path | None, _opt("--file", "-f", help="Correct this UTF-8 text file, paragraph by paragraph.")
    ] = None,
    out: Annotated[
        Path | None,
        _opt(
            "--out",
            "-o",
            help="Write the corrected text here (whole, or FILE.partial with the finished paragraphs if interrupted).",
            panel=OUTPUT,
        ),
    ] = None,
    mode: Annotated[
        str | None,
        _opt(
            "--mode",
            help="rules (checker only, fast), rank (a model chooses among the rules' candidates by their "
            "likelihood) or hybrid (an LLM rewrites each sentence, kept only when every guard passes) "
            "[rules; rank with --model].",
        ),
    ] = None,
    model: Annotated[
        str | None, _opt("--model", "-m", help="Model for rank or hybrid mode [rank: the embedded Gemma 3 270M].")
    ] = None,
    adapter: Annotated[str | None, _opt("--adapter", help="GGUF LoRA adapter on top of the model.")] = None,
    checker: Annotated[
        str | None, _opt("--checker", help="grammalecte or languagetool [grammalecte].", panel=CHECK)
    ] = None,
    languagetool_url: Annotated[
        str | None,
        _opt("--languagetool-url", help="Your LanguageTool server, e.g. http://127.0.0.1:8081.", panel=CHECK),
    ] = None,
    protect: Annotated[
        list[str] | None, _opt("--protect", help="A word never to change (repeatable).", panel=CHECK)
    ] = None,
    protect_file: Annotated[
        Path | None, _opt("--protect-file", help="Words never to change, one per line (# comments).", panel=CHECK)
    ] = None,
    apply_unsure: Annotated[
        bool, _opt("--apply-unsure", help="rank mode: apply the changes the model is unsure of too.")
    ] = False,
    diff: Annotated[
        bool, _opt("--diff", help="Show the changes inline: [-old-]{+new+}, unsure ones old{?new?}.", panel=OUTPUT)
    ] = False,
    as_json: Annotated[bool, _opt("--json", help="Print the whole result as JSON.", panel=OUTPUT)] = False,
    explain: Annotated[
        bool,
        _opt(
            "--explain", help="List every change with its source and reason, and every refused rewrite.", panel=OUTPUT
        ),
    ] = False,
    lang: Annotated[str, _opt("--lang", help="Language of the messages: fr or en [en].", panel=OUTPUT)] = "en",
    temperature: Annotated[float | None, _opt("--temperature", help="LLM temperature [0].")] = None,
    max_tokens: Annotated[int | None, _opt("--max-tokens", help="Most tokens of one sentence's rewrite [256].")] = None,
) -> None:
    """Correct French text (spelling, grammar, agreement) without ever changing a name, a place, a
    number, a date, a time, an amount, an e-mail or a URL. Prints the corrected text alone.

    Examples:

      mistralkit correct "Hier, Lucas et sa soeur son allé au cinéma avec 3 amis."

      echo "il a manger a 14h30" | mistralkit correct --explain

      mistralkit correct -f devoir.txt -o devoir.corrige.txt --mode hybrid -m ministral-3b-instruct

      mistralkit correct --diff --protect Leblanc "M. Leblanc et sa femme son partit."

      mistralkit correct --mode rank --diff --lang fr "Mes cousins on gagné le tournoi a Brest."

      mistralkit correct --checker languagetool --languagetool-url http://127.0.0.1:8081 "Sa va ?"
    """
    from ..corrector import Corrector
    from ..corrector.protect import read_protect_file
    from ..logs import setup
    from ..corrector.pipeline import validate
    from ..errors import InvalidParameter
    from ..settings import load_section

    setup("warning")
    if lang not in MESSAGES:
        raise InvalidParameter(f"--lang must be fr or en, got {lang!r}")
    source = _read_input(text, file)
    validate(source)  # before anything loads or is written
    words = [*(protect or []), *(read_protect_file(protect_file) if protect_file else [])]
    if mode is None and model is not None:
        mode = "rank"  # a model is there: let it choose among the rules' candidates
    settings = load_section("correct", {"mode": mode, "model": model, "adapter": adapter, "checker": checker,
                                        "languagetool_url": languagetool_url, "temperature": temperature,
                                        "max_tokens": max_tokens, "apply_unsure": apply_unsure or None}).settings
    if settings.mode == "hybrid":
        _memory_note(settings.model)
    with Corrector(settings) as corrector:
        result = _run(corrector, source, words, out, quiet=as_json or out is None and not sys.stderr.isatty())
    if as_json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    elif diff:
        print(_inline_diff(result))
    elif out is None:
        sys.stdout.write(result.corrected + ("" if result.corrected.endswith("\n") else "\n"))
    if explain and not as_json:
        sys.stdout.flush()
        print(_explanation(result, MESSAGES[lang]), file=sys.stderr if out is None and not diff else sys.stdout)


def _read_input(text: str | None, file: Path | None) -> str:
    from ..errors import InvalidParameter
    from ..text import decode, read_bounded, read_stdin

    if file is not None and text not in (None, "-"):
        raise InvalidParameter("give the text or --file, not both")
    if file is not None:
        data = read_bounded(file, 256 << 20, "text to correct")
        if b"\0" in data[:8192]:
            raise InvalidParameter(f"{file} looks like a binary file, not text", hint="pass a UTF-8 text file")
        return decode(data, str(file))
    if text is None or text == "-":
        if sys.stdin.isatty() and text is None:
            raise InvalidParameter("no text given", hint="pass it as an argument, with --file, or on standard input")
        return read_stdin()
    return text


def _run(corrector, text: str, words: list[str], out: Path | None, quiet: bool):
    """Paragraph by paragraph with a progress bar; ``out`` gets each finished paragraph in order."""
    from rich.progress import Progress

    from ..corrector.pipeline import PIECE, join
    from ..corrector.sentences import correction_spans

    total = len(correction_spans(text, PIECE))
    partial = out.with_name(out.name + ".partial") if out else None
    pieces, written = [], 0
    sink = _open(partial) if partial else None
    try:
        with Progress(transient=True, disable=quiet or total < 2) as bar:
            task = bar.add_task("correcting", total=total)
            for offset, piece in corrector.paragraphs(text, protect=words):
                pieces.append((offset, piece))
                if sink is not None:
                    sink.write(text[written:offset] + piece.corrected)
                    sink.flush()
                    written = offset + len(piece.text)
                bar.advance(task)
    except KeyboardInterrupt:
        if sink is not None:
            sink.close()
            print(f"interrupted after {len(pieces)} of {total} paragraphs: they are in {partial}", file=sys.stderr)
        raise
    except BaseException:
        if sink is not None:  # an error, not the user: no half-written file is left behind
            sink.close()
            partial.unlink(missing_ok=True)
        raise
    result = join(text, pieces, corrector.settings.mode, corrector.checker.name, corrector.model_name)
    if sink is not None:
        sink.write(text[written:])
        sink.close()
        os.replace(partial, out)
    return result


def _open(path: Path):
    from ..errors import InvalidParameter

    try:
        return path.open("w", encoding="utf-8")
    except OSError as exc:
        raise InvalidParameter(f"cannot write {path}: {exc.strerror}") from exc


def _inline_diff(result) -> str:
    """Applied edits as ``[-old-]{+new+}``; an unsure one (proposed, not applied) as ``old{?new?}``."""
    out, at = [], 0
    changes = [(e, True) for e in result.edits] + [(e, False) for e in result.proposed]
    for edit, applied in sorted(changes, key=lambda c: (c[0].start, c[0].end)):
        if edit.start < at:
            continue
        out.append(result.text[at:edit.start])
        if applied:
            out.append((f"[-{edit.before}-]" if edit.before else "") + (f"{{+{edit.after}+}}" if edit.after else ""))
        else:
            out.append(f"{edit.before}{{?{edit.after}?}}")
        at = edit.end
    return "".join(out) + result.text[at:]


MESSAGES = {
    "en": {"kept": "kept the rules result for {span!r}: {reason}", "left": "left  {span!r}: {message}",
           "unsure": "unsure {before!r} -> {after!r} ({percent}%), not applied (--apply-unsure applies it){why}",
           "none": "no change", "sure": "{percent}%"},
    "fr": {"kept": "résultat des règles gardé pour {span!r} : {reason}", "left": "reste {span!r} : {message}",
           "unsure": "incertain {before!r} -> {after!r} ({percent} %), non appliqué (--apply-unsure l'applique){why}",
           "none": "aucune modification", "sure": "{percent} %"},
}


def _explanation(result, words: dict[str, str]) -> str:
    lines = []
    for edit in result.edits:
        why = f": {edit.message}" if edit.message else ""
        sure = f" ({words['sure'].format(percent=round(edit.confidence * 100))})" if edit.source == "lm" else ""
        lines.append(f"{edit.source:4} {edit.before!r} -> {edit.after!r}{sure}{why}")
    for edit in result.proposed:
        lines.append(words["unsure"].format(before=edit.before, after=edit.after, percent=round(edit.confidence * 100),
                                            why=f": {edit.message}" if edit.message else ""))
    for refusal in result.refused:
        lines.append(words["kept"].format(span=result.corrected[refusal.start:refusal.end], reason=refusal.reason))
    for issue in result.issues_left:
        lines.append(words["left"].format(span=result.corrected[issue.start:issue.end], message=issue.message))
    return "\n".join(lines) or words["none"]


def _memory_note(model: str | None) -> None:
    """Hybrid with a model a 4 GB laptop cannot hold: say so, and name French models that fit."""
    from ..errors import MistralkitError
    from ..models.fitting import fit_report, language_models_that_fit

    if model is None:
        return
    try:
        report = fit_report(model, 4 << 30)
    except MistralkitError:
        return  # the model's own loading gives the error that matters
    if not report.fits:
        others = ", ".join(language_models_that_fit(4 << 30, "fr")) or "none in the catalog"
        print(f"note: {report.title} needs more than a 4 GB machine has; French-capable models that fit in "
              f"4 GB: {others}", file=sys.stderr)
