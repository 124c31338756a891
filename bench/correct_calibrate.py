"""Calibrate the LM ranker's margins (``corrector/ranking.py``: SURE, SURE_UNFLAGGED, UNSURE).

Runs rank mode on a set with nothing applied (so every spot is decided on the sentence as written,
independently), and judges each choice against the reference: right when the change alone fixes a
word error and introduces none (bench/correct_metrics.word_errors). Prints, for flagged spots (a rule
flagged them) and free ones, the precision and the count of right choices at each margin threshold,
so the thresholds can be read off: applied edits must be >= 95% precise.

Run:   .venv/bin/python bench/correct_calibrate.py [--data bench/data/correct_fr.jsonl] [--model NAME]
Writes bench/results/correct_calibrate.json (every choice: margin, flagged, right).
Calibrate on the development set only; the held-out sets judge the result.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from correct_metrics import load_rows, word_errors
from report import table

HERE = Path(__file__).parent
THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE / "data" / "correct_fr.jsonl")
    parser.add_argument("--model", default=None, help="model to score with [the embedded Gemma 3 270M]")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "correct_calibrate.json")
    args = parser.parse_args(argv)

    from mistralkit.corrector import Corrector, ranking
    from mistralkit.settings import CorrectSettings

    ranking.SURE = ranking.SURE_UNFLAGGED = float("inf")  # decide every spot on the text as written
    ranking.UNSURE = -float("inf")
    seen: list[dict] = []
    rows = load_rows(args.data)
    with Corrector(CorrectSettings(mode="rank", model=args.model)) as corrector:
        decide = ranking.decide

        def recording(text, found, scorer, cancelled=None, apply_unsure=False):
            choices = decide(text, found, scorer, cancelled, apply_unsure)
            for c in choices:
                after = text[:c.start] + c.after + text[c.end:]
                judged = word_errors(text, row["reference"], after)
                seen.append({"id": row["id"], "before": c.before, "after": c.after, "margin": round(c.margin, 3),
                             "flagged": c.flagged, "right": judged.fixed > 0 and judged.introduced == 0})
            return choices

        ranking.decide = recording
        for n, row in enumerate(rows, 1):
            corrector.correct(row["text"])
            print(f"\r{n}/{len(rows)} sentences, {len(seen)} choices", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    out = []
    for flagged in (True, False):
        group = [c for c in seen if c["flagged"] == flagged]
        for threshold in THRESHOLDS:
            taken = [c for c in group if c["margin"] >= threshold]
            right = sum(c["right"] for c in taken)
            out.append({"spots": "flagged" if flagged else "free", "margin >=": threshold, "taken": len(taken),
                        "right": right, "precision": round(right / len(taken), 3) if taken else None})
    header = list(out[0])
    print(table(header, [[row[h] for h in header] for row in out]))
    print("\nwrong choices, surest first:")
    for c in sorted((c for c in seen if not c["right"]), key=lambda c: -c["margin"])[:25]:
        kind = "flagged" if c["flagged"] else "free   "
        print(f"  {c['id']} {kind} {c['margin']:6.2f} {c['before']!r} -> {c['after']!r}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": str(args.data), "model": args.model, "choices": seen, "table": out},
                                   ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
