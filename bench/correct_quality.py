"""Correction quality: naive Grammalecte, rules mode and hybrid mode on a French set of our own.

The set (bench/data/correct_fr.jsonl, or any file of the same shape given with ``--data``, such as
bench/data/correct_fr_heldout.jsonl, written before the rules were tuned and never tuned on) holds sentences
as a pupil with dyslexia might type them,
each with its minimal correction and the names, places, numbers, dates, times, amounts, phones,
e-mails and URLs it contains (which no system may alter). Systems, each over the whole set:

- ``naive``: Grammalecte alone, the first suggestion of every finding applied (right to left,
  overlapping findings skipped): what the corrector improves on;
- ``rules``: ``mistralkit.correct(text, mode="rules")``;
- ``rank``: ``mode="rank"``: the embedded Gemma 3 270M (a base model) chooses among the rules'
  candidates by log-probability; ``rank:MODEL`` with another model (``rank:smollm2`` the instruct one);
- ``hybrid``: ``mistralkit.correct(text, mode="hybrid")`` with the embedded model;
- ``hybrid:MODEL``: the same with ``model=MODEL`` (``--model MODEL``, repeatable).

Rank mode's unsure changes (proposed, not applied) are counted, and judged one by one: right when
applying it alone fixes more word errors than the output had fixed and introduces none.

Each system runs in a fresh child process, so its peak RSS is its own; the checker's process (and
any other child) is reported apart. ``rules`` and ``hybrid`` use one
``mistralkit.corrector.Corrector`` for the whole set, as ``mistralkit.correct`` does for one text,
so that loading Grammalecte, spaCy and the model is not timed per sentence; one untimed warm-up
sentence comes first. Metrics (bench/correct_metrics.py): exact matches; word errors fixed and
introduced (% of the word errors in the text); edit precision, recall and F0.5; protected strings
altered; guard reverts by reason; latency per sentence p50/p95; peak RSS; and the wall time of one
``mistralkit correct "SENTENCE"`` command in rules mode (median of 3, a fresh process each).

Run:   .venv/bin/python bench/correct_quality.py --modes naive,rules [--data FILE]
       (--modes is --systems; the held-out set: --data bench/data/correct_fr_heldout.jsonl)
Writes bench/results/correct_quality.json (scores, per-tag scores, every output, machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from correct_metrics import TAGS, load_rows, percentile, problems, revert_reasons, score, word_errors
from report import table  # bench/report.py; a script's own folder is on sys.path
from mistralkit.measure import peak_rss, reset_peak_rss

HERE = Path(__file__).parent
DATA = HERE / "data" / "correct_fr.jsonl"
MIB = 2**20
WARM_UP = "Il a manger une pomme a la cantine."


def apply_first_suggestions(text: str, issues: Sequence) -> str:
    """``text`` with the first suggestion of every issue, right to left; an issue overlapping one
    already applied (to its right) is skipped."""
    out, limit = text, len(text)
    for issue in sorted(issues, key=lambda i: (i.start, i.end), reverse=True):
        if issue.suggestions and issue.end <= limit:
            out = out[:issue.start] + issue.suggestions[0] + out[issue.end:]
            limit = issue.start
    return out


class Naive:
    """Grammalecte alone, first suggestion everywhere."""

    def __init__(self) -> None:
        from mistralkit.corrector.checkers import open_checker

        self.checker = open_checker("grammalecte")

    def __call__(self, text: str) -> tuple[str, list[str], list[str]]:
        return apply_first_suggestions(text, self.checker.check(text)), [], []

    def close(self) -> None:
        self.checker.close()


class Pipeline:
    """``mistralkit.correct`` in ``mode``; checker, NER and model loaded once for the whole set."""

    def __init__(self, mode: str, model: str | None) -> None:
        self.corrector = None
        try:
            from mistralkit.corrector import Corrector
            from mistralkit.settings import CorrectSettings
        except ImportError:  # no reusable corrector: each call loads everything again
            import mistralkit

            self.correct = lambda text: mistralkit.correct(text, mode=mode, model=model)
        else:
            self.corrector = Corrector(CorrectSettings(mode=mode, model=model))
            self.correct = self.corrector.correct

    def __call__(self, text: str) -> tuple[str, list[str], list[str]]:
        """(output, refusal reasons, the output with each unsure proposal applied alone)."""
        from dataclasses import replace

        done = self.correct(text)
        unsure = [replace(done, proposed=[edit]).with_unsure() for edit in getattr(done, "proposed", ())]
        return done.corrected, [r.reason for r in done.refused], unsure

    def close(self) -> None:
        if self.corrector is not None:
            self.corrector.close()


def open_system(name: str):
    """The system called ``name``: naive, rules, rank, rank:MODEL, hybrid or hybrid:MODEL."""
    mode, _, model = name.partition(":")
    if mode == "naive" and not model:
        return Naive()
    if mode in ("rules", "rank", "hybrid") and (mode != "rules" or not model):
        return Pipeline(mode, model or None)
    raise SystemExit(f"unknown system {name!r}: choose naive, rules, rank[:MODEL] or hybrid[:MODEL]")


def run_system(system, rows: Sequence[dict]) -> dict:
    """Every row through ``system`` (a callable: text -> (output, refusal reasons)), each timed."""
    system(WARM_UP)
    sentences = []
    for row in rows:
        started = time.perf_counter()
        output, reasons, unsure = system(row["text"])
        seconds = time.perf_counter() - started
        sentences.append({"id": row["id"], "output": output, "seconds": seconds,
                          "refused": list(reasons), "unsure": unsure})
    return {"sentences": sentences}


def cli_wall_s(runs: int = 3) -> float:
    """Median wall seconds of ``mistralkit correct SENTENCE`` (rules mode), a fresh process each time."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mistralkit", "correct", WARM_UP], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def children_peak_rss() -> int:
    """Sum of the peak RSS (VmHWM) of this process's live descendants, e.g. the checker's worker."""
    total, pending = 0, [os.getpid()]
    while pending:
        pid = pending.pop()
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                continue
            for kid in kids:
                pending.append(kid)
                try:
                    for line in Path(f"/proc/{kid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            total += int(line.split()[1]) * 1024
                except OSError:
                    pass
    return total


def child(name: str, data: Path, limit: int | None, out: Path) -> None:
    """Runs in the fresh process: one system over the set, raw results to ``out`` as JSON."""
    rows = load_rows(data)[:limit]
    reset_peak_rss()
    started = time.perf_counter()
    system = open_system(name)
    load_s = time.perf_counter() - started
    try:
        result = run_system(system, rows)
        result["children_peak_rss"] = children_peak_rss()
    finally:
        system.close()
    result.update(load_s=load_s, peak_rss=peak_rss())
    out.write_text(json.dumps(result, ensure_ascii=False))


def run_child(name: str, args: argparse.Namespace) -> dict:
    """``name`` in a fresh child process; its raw results, or {"error": its last stderr line}."""
    env = dict(os.environ)
    if args.threads:
        env["MISTRALKIT_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", name, str(out), "--data", str(args.data)]
        command += ["--limit", str(args.limit)] if args.limit else []
        with tempfile.TemporaryFile("w+") as errors:  # a file, not a pipe: no deadlock on long logs
            code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=errors, env=env,
                                  check=False).returncode
            errors.seek(0)
            log = errors.read()
        if code or not out.exists():
            lines = [line.strip() for line in log.splitlines() if line.strip()]
            return {"error": lines[-1] if lines else f"exit code {code}"}
        return json.loads(out.read_text())


def summarize(rows: Sequence[dict], raw: dict) -> dict:
    """Scores of one system's raw results, over the whole set and per tag."""
    outputs = [s["output"] for s in raw["sentences"]]
    seconds = [s["seconds"] for s in raw["sentences"]]
    reverts = revert_reasons(r for s in raw["sentences"] for r in s["refused"])
    by_tag = {}
    for tag in TAGS:
        picked = [i for i, row in enumerate(rows) if tag in row["tags"]]
        if picked:
            tagged = score([rows[i] for i in picked], [outputs[i] for i in picked])
            by_tag[tag] = {k: tagged[k] for k in ("sentences", "exact", "word_errors", "fixed_pct",
                                                  "introduced_pct", "protected_altered")}
    unsure = right = 0
    for row, s in zip(rows, raw["sentences"]):
        base = word_errors(row["text"], row["reference"], s["output"])
        for applied in s.get("unsure", ()):
            alone = word_errors(row["text"], row["reference"], applied)
            unsure += 1
            right += alone.fixed > base.fixed and alone.introduced <= base.introduced
    return {**score(rows, outputs), "reverts": sum(reverts.values()), "unsure": unsure, "unsure_right": right,
            "reverts_by_reason": dict(reverts), "latency_p50_s": percentile(seconds, 50),
            "latency_p95_s": percentile(seconds, 95),
            "peak_rss": raw["peak_rss"], "children_peak_rss": raw["children_peak_rss"],
            "load_s": raw["load_s"], "by_tag": by_tag}


def row_of(name: str, s: dict) -> list[str]:
    if "error" in s:
        return [name, "failed"] + [""] * 12
    reverts = ", ".join(f"{k} {v}" for k, v in sorted(s["reverts_by_reason"].items()))
    return [name, f"{s['exact']}/{s['sentences']}", f"{s['fixed_pct']:.1f}",
            f"{s['introduced_pct']:.1f}", f"{s['precision']:.3f}", f"{s['recall']:.3f}",
            f"{s['f05']:.3f}", f"{s['unsure_right']}/{s['unsure']}", str(s["protected_altered"]),
            f"{s['reverts']}" + (f" ({reverts})" if reverts else ""), f"{s['latency_p50_s']:.3f}",
            f"{s['latency_p95_s']:.3f}", f"{s['peak_rss'] / MIB:.0f}",
            f"{s['children_peak_rss'] / MIB:.0f}"]


def tag_cell(tag: str, s: dict) -> str:
    if tag == "correct":
        return f"{s['exact']}/{s['sentences']}"
    return f"{s['fixed_pct']:.1f} ({s['exact']}/{s['sentences']})"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  .venv/bin/python bench/correct_quality.py --systems rules,hybrid"
               " --model ministral-3b --limit 40 --json /tmp/cq.json")
    ap.add_argument("--data", type=Path, default=DATA,
                    help="evaluation set, JSON lines (default: %(default)s)")
    ap.add_argument("--systems", "--modes", dest="systems", default="naive,rules,hybrid",
                    help="comma-separated: naive, rules, rank, rank:MODEL, hybrid, hybrid:MODEL"
                         " (default: %(default)s)")
    ap.add_argument("--model", action="append", default=[], metavar="NAME",
                    help="also run hybrid with this model (repeatable)")
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help="only the first N sentences")
    ap.add_argument("--json", type=Path, default=HERE / "results" / "correct_quality.json",
                    metavar="PATH")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of the model (default: all cores)")
    ap.add_argument("--no-cli", action="store_true", help="skip timing the one-sentence CLI command")
    ap.add_argument("--child", nargs=2, metavar=("SYSTEM", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        ap.error("--limit must be >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args.child[0], args.data, args.limit, Path(args.child[1]))
        return
    rows = load_rows(args.data)
    if found := problems(rows):
        raise SystemExit(f"{args.data}: " + "; ".join(found[:5]))
    rows = rows[:args.limit]
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    names += [f"hybrid:{m}" for m in args.model if f"hybrid:{m}" not in names]
    results, raw = {}, {}
    for name in names:
        print(f"running {name} on {len(rows)} sentences ...", file=sys.stderr, flush=True)
        raw[name] = run_child(name, args)
        results[name] = raw[name] if "error" in raw[name] else summarize(rows, raw[name])
    tags = Counter(t for row in rows for t in row["tags"])
    wrong = sum(r["text"] != r["reference"] for r in rows)
    print(f"\n{args.data.name}: {len(rows)} sentences, {wrong} with errors,"
          f" {sum(len(r['protected']) for r in rows)} protected strings | latency per sentence"
          f" (medians and p95) | peak RSS in MiB, this process + child processes\n")
    print(table(["system", "exact", "fixed %", "introduced %", "P", "R", "F0.5", "unsure right",
                 "protected altered", "reverts", "p50 s", "p95 s", "peak RSS", "+children"],
                [row_of(name, results[name]) for name in names]))
    cli = cli_wall_s() if not args.no_cli else None
    if cli is not None:
        print(f"\nmistralkit correct \"{WARM_UP}\" (rules, a fresh process): {cli:.2f} s wall, median of 3")
    for name in names:
        if "error" in results[name]:
            print(f"{name} failed: {results[name]['error']}")
    scored = [n for n in names if "error" not in results[n]]
    if scored:
        print("\nby tag: fixed % of word errors (exact sentences);"
              " 'correct': sentences left as they were\n")
        print(table(["tag", "sentences", *scored], [
            [tag, str(tags[tag]), *(tag_cell(tag, results[n]["by_tag"][tag]) for n in scored)]
            for tag in TAGS if tag in tags]))
    for name in scored:
        for item in results[name]["protected_altered_list"]:
            print(f"{name}: {item['id']} protected {item['value']!r} occurs {item['output']}x"
                  f" in the output, {item['text']}x in the text", file=sys.stderr)
    outputs = {name: raw[name].get("sentences") for name in names}
    result = {
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "processor": platform.processor(), "python": sys.version.split()[0]},
        "data": str(args.data), "sentences": len(rows), "tags": dict(tags), "threads": args.threads,
        "systems": results, "outputs": outputs, "cli_wall_s": cli,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
