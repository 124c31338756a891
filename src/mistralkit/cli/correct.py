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
            help="rules (checker only, fast) or hybrid (then an LLM per "
            "sentence, kept only when every guard passes) [rules].",
        ),
    ] = None,
    model: Annotated[str | None, _opt("--model", "-m", help="Model for hybrid mode [the embedded one].")] = None,
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
    diff: Annotated[bool, _opt("--diff", help="Show the changes inline: [-old-]{+new+}.", panel=OUTPUT)] = False,
    as_json: Annotated[bool, _opt("--json", help="Print the whole result as JSON.", panel=OUTPUT)] = False,
    explain: Annotated[
        bool,
        _opt(
            "--explain", help="List every change with its source and reason, and every refused rewrite.", panel=OUTPUT
        ),
    ] = False,
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

      mistralkit correct --checker languagetool --languagetool-url http://127.0.0.1:8081 "Sa va ?"
    """
    from ..corrector import Corrector
    from ..corrector.protect import read_protect_file
    from ..logs import setup
    from ..settings import load_section

    from ..corrector.pipeline import validate

    setup("warning")
    source = _read_input(text, file)
    validate(source)  # before anything loads or is written
    words = [*(protect or []), *(read_protect_file(protect_file) if protect_file else [])]
    settings = load_section("correct", {"mode": mode, "model": model, "adapter": adapter, "checker": checker,
                                        "languagetool_url": languagetool_url, "temperature": temperature,
                                        "max_tokens": max_tokens}).settings
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
        print(_explanation(result), file=sys.stderr if out is None and not diff else sys.stdout)


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
    out, at = [], 0
    for edit in result.edits:
        out.append(result.text[at:edit.start])
        out.append((f"[-{edit.before}-]" if edit.before else "") + (f"{{+{edit.after}+}}" if edit.after else ""))
        at = edit.end
    return "".join(out) + result.text[at:]


def _explanation(result) -> str:
    lines = []
    for edit in result.edits:
        why = f": {edit.message}" if edit.message else ""
        lines.append(f"{edit.source:4} {edit.before!r} -> {edit.after!r}{why}")
    for refusal in result.refused:
        lines.append(f"kept the rules result for {result.corrected[refusal.start:refusal.end]!r}: {refusal.reason}")
    for issue in result.issues_left:
        lines.append(f"left  {result.corrected[issue.start:issue.end]!r}: {issue.message}")
    return "\n".join(lines) or "no change"


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
