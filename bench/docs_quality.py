"""Document collections, quality: retrieval recall and MRR per mode, and the citations of answers.

The corpus (bench/data/docs: 36 documents, English and French, .md .txt .html and generated .pdf
.docx) is indexed once per chunk size (--chunk-chars); each question of bench/data/docs_questions.jsonl
names its file and an evidence phrase. A retrieved chunk is relevant when its text holds the evidence
(case and spacing aside) and it comes from that file. Per mode (keyword, vector, hybrid): recall@1,
recall@5 and MRR@10, overall and per language.

Answers (--answers N questions, spread over the set): ``documents.answer.ask`` with the embedded
instruct model (or --model), greedy. Reported: answers that cite at all; citations that hold (the
number was given, a quote is in its source); citation precision (the cited source holds the evidence)
among citations that hold; and the share of answers citing a source that holds the evidence.

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/docs_quality.py
Writes bench/results/docs_quality.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import table

from mistralkit.documents import Collection, remove_collection
from mistralkit.errors import MistralkitError

HERE = Path(__file__).resolve().parent
MODES = ("keyword", "vector", "hybrid")


def normal(text: str) -> str:
    return " ".join(text.replace("’", "'").lower().split())


def relevant(chunk, question: dict) -> bool:
    return chunk.path.endswith("/" + question["file"]) and normal(question["evidence"]) in normal(chunk.text)


def retrieval(collection: Collection, questions: list[dict]) -> dict:
    found: dict = {}
    for mode in MODES:
        ranks = []
        for question in questions:
            hits = collection.search(question["question"], k=10, mode=mode)
            rank = next((i for i, hit in enumerate(hits, 1) if relevant(hit.chunk, question)), None)
            ranks.append((question["lang"], rank))
        found[mode] = {scope: summary([r for lang, r in ranks if scope in ("all", lang)])
                       for scope in ("all", "en", "fr")}
    return found


def summary(ranks: list[int | None]) -> dict:
    n = len(ranks)
    return {"n": n, "recall@1": sum(r == 1 for r in ranks) / n, "recall@5": sum(r is not None and r <= 5
                                                                               for r in ranks) / n,
            "mrr@10": sum(1 / r for r in ranks if r) / n}


def answers(collection: Collection, questions: list[dict], count: int, model: str | None) -> dict:
    from mistralkit.api import load, load_settings
    from mistralkit.documents.answer import ask

    overrides = {"greedy": True, "max_tokens": 160, **({"model": model} if model else {})}
    loaded = load(load_settings(overrides).settings)
    step = max(1, len(questions) // count)
    chosen = questions[::step][:count]
    rows = []
    try:
        for question in chosen:
            started = time.perf_counter()
            answer = ask(collection, question["question"], loaded, k=5)
            holding = [c for c in answer.citations if c.problem is None]
            by_number = {s.number: s for s in answer.sources}
            right = [c for c in holding if relevant(by_number[c.number].chunk, question)]
            rows.append({"id": question["id"], "text": answer.text, "citations": len(answer.citations),
                         "holding": len(holding), "right": len(right), "seconds": time.perf_counter() - started,
                         "evidence_given": any(relevant(s.chunk, question) for s in answer.sources)})
    finally:
        loaded.close()
    total = sum(r["citations"] for r in rows)
    holding = sum(r["holding"] for r in rows)
    return {"model": loaded.model.name, "answers": len(rows),
            "citing": sum(r["citations"] > 0 for r in rows) / len(rows),
            "citations": total, "holding": holding / total if total else None,
            "precision": sum(r["right"] for r in rows) / holding if holding else None,
            "right_answers": sum(r["right"] > 0 for r in rows) / len(rows),
            "evidence_given": sum(r["evidence_given"] for r in rows) / len(rows), "rows": rows}


def index(corpus: Path, name: str, chunk_chars: int, overlap: int) -> Collection:
    try:
        remove_collection(name)
    except MistralkitError:
        pass
    collection = Collection.open(name, create=True)
    collection.store.set_meta({"chunk_chars": str(chunk_chars), "overlap_chars": str(overlap)})
    collection.add_roots([corpus])
    report = collection.sync()
    assert not report.count("skipped"), [f for f in report.files if f.status == "skipped"]
    return collection


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunk-chars", default="400,800,1200", help="chunk sizes to compare (the first of "
                        "the default is the shipped size when only one is given)")
    parser.add_argument("--answers", type=int, default=40, help="questions answered by the model (0: none)")
    parser.add_argument("--model", default=None, help="chat model for the answers (default: the embedded one)")
    parser.add_argument("--out", default=str(HERE / "results" / "docs_quality.json"))
    args = parser.parse_args()
    questions = [json.loads(line) for line in (HERE / "data" / "docs_questions.jsonl").read_text().splitlines()
                 if line.strip()]
    results: dict = {"questions": len(questions), "by_chunk_size": {}}
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus"
        subprocess.run([sys.executable, str(HERE / "data" / "docs" / "make_corpus.py"), str(corpus)], check=True,
                       stdout=subprocess.DEVNULL)
        sizes = [int(s) for s in args.chunk_chars.split(",")]
        rows = []
        for size in sizes:
            print(f"indexing with {size}-character chunks…", file=sys.stderr)
            with index(corpus, f"quality-{size}", size, size // 5) as collection:
                found = retrieval(collection, questions)
                chunks = collection.store.counts()["chunks"]
                results["by_chunk_size"][size] = {"chunks": chunks, **found}
                for mode in MODES:
                    a, en, fr = found[mode]["all"], found[mode]["en"], found[mode]["fr"]
                    rows.append([str(size), str(chunks), mode, f"{a['recall@1']:.3f}", f"{a['recall@5']:.3f}",
                                 f"{a['mrr@10']:.3f}", f"{en['recall@5']:.3f}", f"{fr['recall@5']:.3f}"])
                if args.answers and size == 800 or (args.answers and len(sizes) == 1):
                    print(f"answering {args.answers} questions…", file=sys.stderr)
                    results["answers"] = answers(collection, questions, args.answers, args.model)
            remove_collection(f"quality-{size}")
    print(table(["chunk chars", "chunks", "mode", "recall@1", "recall@5", "MRR@10", "recall@5 en", "recall@5 fr"],
                rows))
    if "answers" in results:
        a = results["answers"]
        print(table(["model", "answers", "citing", "citations", "holding", "precision", "right source cited",
                     "evidence given"],
                    [[a["model"], str(a["answers"]), pct(a["citing"]), str(a["citations"]), pct(a["holding"]),
                      pct(a["precision"]), pct(a["right_answers"]), pct(a["evidence_given"])]]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
