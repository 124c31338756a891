"""Document collections, speed: indexing chunks/s, and query latency as a collection grows.

1. Indexing: the evaluation corpus (bench/data/docs, built by its make_corpus.py) indexed into a
   fresh collection with the embedded all-MiniLM-L6-v2: files, chunks, seconds, chunks/s (extraction,
   chunking, embedding and SQLite writes together; the model load is timed apart).
2. Queries at 1k, 10k and 100k chunks (--sizes). Latency does not depend on what the vectors hold, so
   the big collections are filled with the corpus's own sentences, shuffled, and random unit vectors
   (384 dimensions, as MiniLM's), written through the same store. Timed per query, medians and p95
   over --queries questions of bench/data/docs_questions.jsonl:
   - ours: keyword (FTS5 BM25, 50 candidates), vector (sqlite-vec, 50), hybrid (both, fused, chunks
     read back: what ``Collection.search`` does after embedding the query), and embedding the query
     alone (MiniLM, one text);
   - a plain FTS5 query (one ``MATCH`` of the question's words, ``ORDER BY rank LIMIT 5``);
   - ``llm similar``'s brute force: the ``llm`` package's own ``Collection.similar_by_vector`` (a Python
     cosine over every stored vector) on an ``llm`` embeddings database holding the same vectors, in a
     venv of its own (--llm-python; made with ``python -m venv`` + ``pip install llm`` when missing).

Run:   MISTRALKIT_HOME=/tmp/mk-bench .venv/bin/python bench/docs_speed.py
Writes bench/results/docs_speed.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from report import table

from mistralkit.documents import Collection
from mistralkit.documents.collection import fuse
from mistralkit.documents.chunking import Chunk
from mistralkit.documents.sqlite_store import SqliteStore, connect, match_expression
from mistralkit.documents.store import FileRecord, IndexedFile
from mistralkit.errors import MistralkitError

HERE = Path(__file__).resolve().parent
DIMENSIONS = 384
LLM_CHILD = r"""
import json, random, sqlite3, sys, time
import llm
from llm.embeddings import Collection
path, n, dims, queries = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(7)
def unit():
    v = [rng.gauss(0, 1) for _ in range(dims)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]
import sqlite_utils
db = sqlite_utils.Database(path)
class Given(llm.EmbeddingModel):  # the vectors are written directly; this model never embeds
    model_id = "bench-given"
    def embed_batch(self, texts):
        raise NotImplementedError
collection = Collection("bench", db, model=Given())
db["embeddings"].insert_all(({"collection_id": collection.id, "id": str(i), "embedding": llm.encode(unit()),
                              "content": None, "content_hash": None, "metadata": None, "updated": 0}
                             for i in range(n)), batch_size=2000)
times = []
for _ in range(queries):
    vector = unit()
    start = time.perf_counter()
    found = collection.similar_by_vector(vector, 5)
    times.append(time.perf_counter() - start)
    assert len(found) == 5
print(json.dumps(times))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def build_corpus(out: Path) -> Path:
    subprocess.run([sys.executable, str(HERE / "data" / "docs" / "make_corpus.py"), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


def index_speed(corpus: Path) -> dict:
    from mistralkit.documents import remove_collection

    try:
        remove_collection("speed-corpus")  # a run stopped halfway left it
    except MistralkitError:
        pass
    with Collection.open("speed-corpus", create=True) as collection:
        collection.add_roots([corpus])
        started = time.perf_counter()
        collection.embedder()
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        report = collection.sync()
        seconds = time.perf_counter() - started
        counts = collection.store.counts()
    added = sum(item.chunks for item in report.files if item.status == "added")
    return {"files": counts["files"], "chunks": counts["chunks"], "model_load_s": loaded, "index_s": seconds,
            "chunks_per_s": added / seconds, "skipped": report.count("skipped")}


def unit_vector(rng: random.Random) -> list[float]:
    v = [rng.gauss(0, 1) for _ in range(DIMENSIONS)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def fill(store: SqliteStore, size: int, sentences: list[str], rng: random.Random) -> None:
    """``size`` chunks of 4-8 corpus sentences with random vectors, 1,000 per file, through the store."""
    for first in range(0, size, 1000):
        chunks, vectors = [], []
        for ordinal in range(min(1000, size - first)):
            text = " ".join(rng.sample(sentences, rng.randint(4, 8)))
            chunks.append(Chunk(ordinal, text, 0, len(text), ("Synthetic",), None, (1, 1)))
            vectors.append(unit_vector(rng))
        record = FileRecord(f"/synthetic/{first // 1000:04}.txt", "0" * 64, 1, 0.0, "text", None, len(chunks))
        store.write([IndexedFile(record, chunks, vectors)])


def query_speed(size: int, sentences: list[str], questions: list[str], collection: Collection,
                llm_python: str | None) -> dict:
    rng = random.Random(size)
    name = f"speed-{size}"
    with Collection.open(name, create=True) as synthetic:
        fill(synthetic.store, size, sentences, rng)
        store = synthetic.store
        times: dict[str, list[float]] = {k: [] for k in ("embed", "keyword", "vector", "hybrid", "fts5")}
        raw = connect(store.path)  # the plain FTS5 query: the same table, without our query building
        for question in questions:
            start = time.perf_counter()
            vector = collection.embed_query(question)
            times["embed"].append(time.perf_counter() - start)
            start = time.perf_counter()
            keyword = store.keyword(question, 50)
            times["keyword"].append(time.perf_counter() - start)
            start = time.perf_counter()
            nearest = store.nearest(vector, 50)
            times["vector"].append(time.perf_counter() - start)
            start = time.perf_counter()
            scores = fuse(store.keyword(question, 50), store.nearest(vector, 50))
            store.chunks(sorted(scores, key=lambda i: -scores[i])[:5])
            times["hybrid"].append(time.perf_counter() - start + times["embed"][-1])
            words = (match_expression(question) or '"the"').replace(" OR ", " ")  # FTS5's implicit AND
            start = time.perf_counter()
            raw.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank LIMIT 5",
                        (words,)).fetchall()
            times["fts5"].append(time.perf_counter() - start)
            assert nearest and keyword is not None
        raw.close()
    from mistralkit.documents import remove_collection

    remove_collection(name)
    result = {"chunks": size, **{k: {"p50_ms": median(v) * 1000, "p95_ms": percentile(v, 0.95) * 1000}
                                 for k, v in times.items()}}
    if llm_python:
        with tempfile.TemporaryDirectory() as folder:
            out = subprocess.run([llm_python, "-c", LLM_CHILD, str(Path(folder) / "llm.db"), str(size),
                                  str(DIMENSIONS), str(min(len(questions), 20 if size >= 100_000 else 50))],
                                 capture_output=True, text=True, check=True)
        llm_times = json.loads(out.stdout)
        result["llm_similar"] = {"p50_ms": median(llm_times) * 1000, "p95_ms": percentile(llm_times, 0.95) * 1000,
                                 "queries": len(llm_times)}
    return result


def llm_venv(path: Path) -> str | None:
    python = path / "bin" / "python"
    if not python.exists():
        print(f"making {path} with the llm package (the llm similar reference)…", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        if subprocess.run([str(python), "-m", "pip", "install", "-q", "llm"]).returncode != 0:
            print("could not install llm: its column is left out", file=sys.stderr)
            return None
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000", help="collection sizes in chunks")
    parser.add_argument("--queries", type=int, default=100, help="questions timed per size")
    parser.add_argument("--llm-python", default=None, help="python of a venv with llm (default: made in the cache)")
    parser.add_argument("--no-llm", action="store_true", help="leave the llm similar reference out")
    parser.add_argument("--out", default=str(HERE / "results" / "docs_speed.json"))
    args = parser.parse_args()
    from mistralkit import paths

    llm_python = None if args.no_llm else (args.llm_python or llm_venv(paths.cache_dir() / "bench-llm-venv"))
    lines = [json.loads(line) for line in (HERE / "data" / "docs_questions.jsonl").read_text().splitlines() if line]
    questions = [q["question"] for q in lines][: args.queries]
    with tempfile.TemporaryDirectory() as folder:
        corpus = build_corpus(Path(folder) / "corpus")
        indexing = index_speed(corpus)
        texts = [p.read_text(errors="ignore") for p in corpus.rglob("*") if p.suffix in (".md", ".txt")]
    sentences = [s.strip() for text in texts for s in text.replace("\n", " ").split(". ") if len(s.split()) > 4]
    print(table(["files", "chunks", "model load s", "index s", "chunks/s"],
                [[str(indexing["files"]), str(indexing["chunks"]), f"{indexing['model_load_s']:.1f}",
                  f"{indexing['index_s']:.1f}", f"{indexing['chunks_per_s']:.1f}"]]))
    results = []
    with Collection.open("speed-corpus") as collection:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"{size} chunks…", file=sys.stderr)
            results.append(query_speed(size, sentences, questions, collection, llm_python))
    from mistralkit.documents import remove_collection

    remove_collection("speed-corpus")
    columns = ["hybrid", "vector", "keyword", "embed", "fts5", "llm_similar"]
    rows = [[f"{r['chunks']:,}"] + [" / ".join(ms_pair(r.get(c))) for c in columns] for r in results]
    print(table(["chunks", "ours hybrid (incl. embed)", "ours vector", "ours keyword", "query embedding",
                 "plain FTS5", "llm similar"], rows))
    print("(p50 / p95 ms)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"indexing": indexing, "queries": results}, indent=1))
    print(f"wrote {args.out}")


def ms_pair(entry: dict | None) -> tuple[str, str]:
    if entry is None:
        return "–", "–"
    return f"{entry['p50_ms']:.1f}", f"{entry['p95_ms']:.1f}"


if __name__ == "__main__":
    main()
