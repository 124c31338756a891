"""``mistralkit docs``: extraction of each format, structured chunks, a real SQLite collection (FTS5 +
sqlite-vec) embedded with the embedded all-MiniLM-L6-v2, sync, bad input, kill -9 during indexing,
and answers whose citations are checked."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from mistralkit.documents import Collection
from mistralkit.documents.answer import Source, check_citations, ground
from mistralkit.documents.chunking import chunk
from mistralkit.documents.extract import Unreadable, extract
from mistralkit.documents.sqlite_store import SqliteStore
from mistralkit.documents.store import StoredChunk
from mistralkit.errors import InvalidParameter, ModelNotFound

pytestmark = pytest.mark.slow

NOTE = """# Discharge summary: Mr John Hartley

Admitted on 3 March 2026 for a right hip replacement.

## Medication

After surgery the insulin dose was lowered to 12 units at night. Paracetamol 1 g four times a day.

## Discharge

Mr Hartley was discharged on 9 March 2026, walking with a frame. Follow-up in six weeks.
"""
BAIL = ("Contrat de location\n\nLe délai de résiliation est de trois mois pour le locataire.\n\n"
        "Le loyer est payé le 5.\n")
PAGE = """<html><head><title>T</title><script>var tracking = "insulin";</script></head><body>
<nav><a href="/">Home</a> <a href="/faq">FAQ</a></nav>
<h1>Cycling club rules</h1><p>Helmets are <b>mandatory</b> on every ride.</p>
<ul><li>Rides start at 8:30 on Sundays.</li><li>Bring two spare tubes.</li></ul>
<footer>Copyright 2026 the club</footer></body></html>"""


def make_pdf(path: Path, pages: list[str], password: str | None = None) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    if password:
        pdf.set_encryption(owner_password="owner", user_password=password)
    pdf.output(str(path))


def make_docx(path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Employment contract", level=1)
    document.add_paragraph("The notice period is two months for the employee.")
    document.add_heading("Salary", level=2)
    document.add_paragraph("The gross monthly salary is 2,400 euros, paid on the last day of the month.")
    document.save(str(path))


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("records")
    (root / "hartley.md").write_text(NOTE)
    (root / "bail.txt").write_text(BAIL)
    (root / "club.html").write_text(PAGE)
    make_pdf(root / "protocol.pdf", ["Vancomycin protocol. The loading dose is 25 mg/kg.",
                                     "Trough levels are checked before the fourth dose."])
    make_docx(root / "contract.docx")
    (root / "notes.bin").write_bytes(b"\x00\x01")  # another type: ignored in a folder
    (root / "sub").mkdir()
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a symlink loop
    return root


@pytest.fixture(scope="module")
def notes(mk_home, folder):
    with Collection.open("notes", create=True) as collection:
        collection.add_roots([folder])
        report = collection.sync()
        assert report.count("added") == 5, report.files
        yield collection


# --- extraction and chunks ------------------------------------------------------------------

def test_each_format_is_read_with_its_structure_and_places(folder):
    md = extract(folder / "hartley.md")
    assert [(b.kind, b.lines) for b in md.blocks][:3] == [("heading", (1, 1)), ("text", (3, 3)), ("heading", (5, 5))]
    html = extract(folder / "club.html")
    assert html.blocks[0].kind == "heading" and html.blocks[0].text == "Cycling club rules"
    assert "Helmets are mandatory on every ride." in html.text
    assert "tracking" not in html.text and "FAQ" not in html.text and "Copyright" not in html.text
    pdf = extract(folder / "protocol.pdf")
    assert pdf.pages == 2 and {b.page for b in pdf.blocks} == {1, 2} and "25 mg/kg" in pdf.blocks[0].text
    word = extract(folder / "contract.docx")
    assert [b.kind for b in word.blocks] == ["heading", "text", "heading", "text"]
    assert word.blocks[2].level == 2
    for document in (md, html, pdf, word):  # every offset points at its own text
        assert all(document.text[b.start:b.end] == b.text for b in document.blocks)


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("empty.txt", b"  \n", "empty file"),
    ("binary.txt", b"\x7fELF\x00\x00\x01", "binary content"),
    ("latin1.md", "caf\xe9".encode("latin-1"), "not UTF-8"),
    ("fake.docx", b"this is not a zip", "not a readable DOCX"),
    ("fake.pdf", b"%PDF-1.4 garbage", "not a readable PDF"),
    ("image.png", b"\x89PNG", "not read"),
])
def test_a_file_that_cannot_be_read_says_why(tmp_path, name, data, reason):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(Unreadable, match=reason):
        extract(tmp_path / name)


def test_an_encrypted_pdf_is_refused_and_one_with_an_empty_password_is_read(tmp_path):
    make_pdf(tmp_path / "locked.pdf", ["Secret"], password="s3cret")
    with pytest.raises(Unreadable, match="encrypted PDF"):
        extract(tmp_path / "locked.pdf")
    make_pdf(tmp_path / "open.pdf", ["Readable text"], password="")
    assert "Readable text" in extract(tmp_path / "open.pdf").text


def test_chunks_follow_headings_overlap_on_a_cut_and_keep_offsets(tmp_path):
    long = " ".join(f"Sentence {i} of the long paragraph says a thing." for i in range(60))
    (tmp_path / "a.md").write_text(f"# Title\n\nIntro.\n\n## Part\n\n{long}\n\nTail line.\n")
    document = extract(tmp_path / "a.md")
    chunks = chunk(document, size=400, overlap=120)
    assert chunks[0].text == "Intro." and chunks[0].headings == ("Title",)
    assert all(c.headings == ("Title", "Part") for c in chunks[1:])
    assert all(document.text[c.start:c.end] == c.text and len(c.text) <= 400 for c in chunks)
    assert all(b.start < a.end for a, b in zip(chunks[1:], chunks[2:]))  # consecutive cuts overlap
    assert chunks[-1].text.endswith("Tail line.") and chunks[-1].lines == (7, 9)
    pdf = tmp_path / "p.pdf"
    make_pdf(pdf, ["One page. " * 20, "Two page. " * 20])
    assert [c.page for c in chunk(extract(pdf), size=2000)] == [1, 2]  # a chunk stays on its page


# --- a collection -----------------------------------------------------------------------------

def test_search_finds_each_format_in_every_mode(notes):
    for query, path in [("insulin dose after surgery", "hartley.md"), ("délai de résiliation", "bail.txt"),
                        ("helmet rule for rides", "club.html"), ("vancomycin loading dose", "protocol.pdf"),
                        ("notice period employee", "contract.docx")]:
        for mode in ("hybrid", "keyword", "vector"):
            hits = notes.search(query, k=2, mode=mode)
            assert hits and hits[0].chunk.path.endswith(path), (query, mode, [h.chunk.path for h in hits])
    best = notes.search("vancomycin trough levels", k=1)[0]
    assert best.chunk.place == "page 2" and best.keyword_rank == 1
    assert notes.search("salary", k=1)[0].chunk.heading == "Employment contract > Salary"


def test_the_store_holds_one_row_per_chunk_in_every_index(notes):
    counts = notes.store.counts()
    assert counts["chunks"] == counts["keyword_rows"] == counts["vectors"] == sum(r.chunks for r in notes.store.files())


def test_sync_reindexes_only_what_changed_and_reports_each_file(notes, folder):
    (folder / "bail.txt").write_text(BAIL + "\nLe dépôt de garantie est de 800 euros.\n")
    (folder / "new.md").write_text("# New\n\nThe parking code is 4417.\n")
    assert {p.rsplit("/", 1)[-1] for p in notes.status()["stale"]} == {"bail.txt"}
    report = notes.sync()
    by_status = {(item.status, Path(item.path).name) for item in report.files}
    assert ("updated", "bail.txt") in by_status and ("added", "new.md") in by_status
    assert ("unchanged", "hartley.md") in by_status and report.ignored == 1  # notes.bin
    assert notes.search("dépôt de garantie", k=1)[0].chunk.path.endswith("bail.txt")
    (folder / "new.md").unlink()
    report = notes.sync()
    assert [(i.status, Path(i.path).name) for i in report.files if i.status != "unchanged"] == [("removed", "new.md")]
    assert not notes.search("parking code 4417", k=5, mode="keyword")
    assert notes.status()["stale"] == []


def test_another_embedding_model_is_refused_naming_reembed(notes, tmp_path):
    from mistralkit.models import resolve

    gguf = resolve("gemma-3-270m").path  # a GGUF: another model, other vectors
    with pytest.raises(InvalidParameter, match="docs reembed notes") as caught:
        Collection.open("notes", embed_model=str(gguf))
    assert "all-minilm" in caught.value.message


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".hidden", "x" * 65, ""])
def test_a_bad_collection_name_is_refused(mk_home, name):
    with pytest.raises(InvalidParameter, match="invalid collection name"):
        Collection.open(name, create=True)
    assert not list((mk_home / "data").glob("**/x.sqlite"))


def test_an_unknown_collection_is_an_error_not_a_new_one(mk_home):
    with pytest.raises(ModelNotFound, match="no collection named 'nope'"):
        Collection.open("nope")


def test_cli_bad_input_one_line_each_and_the_rest_indexed(mk_home, tmp_path):
    box = tmp_path / "box"
    box.mkdir()
    (box / "good.md").write_text("The boiler is serviced every October.\n")
    (box / "binary.txt").write_bytes(b"\x00\x00\x00")
    (box / "empty.md").write_text("")
    with open(box / "huge.txt", "wb") as big:  # 200 MB, sparse: refused before it is read
        big.truncate(200 * 2**20)
    result = run_cli("docs", "add", "box", str(box), "--json", home=mk_home)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    reasons = {Path(f["path"]).name: f["reason"] for f in report["files"] if f["status"] == "skipped"}
    assert reasons["binary.txt"] == "binary content, not text" and reasons["empty.md"] == "empty file"
    assert "over the 64 MiB limit" in reasons["huge.txt"]
    assert report["totals"]["files"] == 1 and "3 file(s) could not be read" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_cli("docs", "add", "box", str(tmp_path / "nowhere"), home=mk_home)
    assert missing.returncode == 2 and "no such file or folder" in missing.stderr
    assert run_cli("docs", "search", "box", "boiler", "--mode", "fuzzy", home=mk_home).returncode == 2


def test_a_folder_of_ten_thousand_files_is_walked_and_reported(mk_home, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for i in range(10_000):
        (many / f"{i:05}.txt").write_text("" if i else "The only file with text: the gate code is 1234.\n")
    with Collection.open("many", create=True) as collection:
        collection.add_roots([many])
        assert collection.count_files() == 10_000
        report = collection.sync()
    assert report.count("added") == 1 and report.count("skipped") == 9_999


# --- kill -9 while indexing -------------------------------------------------------------------

def test_kill_9_during_add_then_add_again_loses_and_duplicates_nothing(mk_home, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):  # ~6 chunks each: several batches of 64
        body = "\n\n".join(f"File {i} paragraph {j}: " + "words about topic %d " % (i * 7 + j) * 30 for j in range(6))
        (corpus / f"doc{i:02}.md").write_text(f"# Document {i}\n\n{body}\n")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISTRALKIT_")} | {"MISTRALKIT_HOME": str(home)}
    db = home / "data" / "docs" / "crash.sqlite"
    process = subprocess.Popen([sys.executable, "-m", "mistralkit", "docs", "add", "crash", str(corpus)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # killed once the first batches are in, the rest not
        if db.exists():
            with sqlite3.connect(db, timeout=5) as con:
                try:
                    if con.execute("SELECT count(*) FROM files").fetchone()[0] >= 8:
                        break
                except sqlite3.OperationalError:  # the file is there, its tables not yet
                    pass
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    with sqlite3.connect(db) as con:
        partial = con.execute("SELECT count(*) FROM files").fetchone()[0]
    assert 8 <= partial < 40
    again = run_cli("docs", "add", "crash", str(corpus), "--json", home=home, timeout=300)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert sum(f["status"] == "unchanged" for f in report["files"]) == partial
    store = SqliteStore(db)  # the collection in the subprocess's home
    counts, files = store.counts(), store.files()
    store.close()
    expected = sum(len(chunk(extract(p))) for p in corpus.iterdir())
    assert len(files) == 40 and counts["chunks"] == counts["keyword_rows"] == counts["vectors"] == expected
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM (SELECT DISTINCT path, ordinal FROM chunks)").fetchone()[0] == expected


# --- answers and citations --------------------------------------------------------------------

def _source(number: int, text: str) -> Source:
    return Source(number, StoredChunk(number, "/r/a.md", 0, text, "Head", None, (1, 2), 0, len(text)))


def test_citations_are_checked_against_the_sources_given():
    sources = [_source(1, "Mr Hartley was discharged on 9 March 2026."), _source(2, "The dose is 12 units.")]
    text = ('He left on 9 March [1]. The dose was "12 units" [2]. He was "discharged on 10 March" [1]. '
            'See also [3] and [1, 2].')
    citations = check_citations(text, sources)
    assert [(c.number, c.problem) for c in citations] == [
        (1, None), (2, None), (1, "the quote is not in source 1"),
        (3, "cites source 3, which was not given (sources 1-2)"), (1, None), (2, None)]
    assert citations[1].quote == "12 units" and citations[3].quote is None
    assert text[citations[0].start:citations[0].end] == "[1]"


def test_sources_that_do_not_fit_the_context_are_named_not_cut(engine, notes):
    hits = notes.search("Hartley discharge insulin", k=5)
    roomy = ground("When was he discharged?", hits, engine.count_tokens, 2048, 100)
    assert len(roomy.sources) == len(hits) and not roomy.left_out
    tight = ground("When was he discharged?", hits, engine.count_tokens, engine.count_tokens(
        roomy.messages[:1] + roomy.messages[-1:]) - 40, 0)
    assert tight.left_out and len(tight.sources) + len(tight.left_out) == len(hits)
    assert all(s.chunk.text in tight.messages[0]["content"] for s in tight.sources)
    assert all(h.chunk.text not in tight.messages[0]["content"] for h in tight.left_out)


def test_run_docs_answers_with_sources_and_checked_citations(mk_home, notes):
    result = run_cli("run", "--docs", "notes", "--greedy", "--max-tokens", "24", "--json",
                     "When was Mr Hartley discharged?", home=mk_home, timeout=300)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["sources"][0]["path"].endswith("hartley.md") and answer["sources"][0]["lines"]
    assert all(c["valid"] == (c["problem"] is None) for c in answer["citations"])
    shown = run_cli("run", "--docs", "notes", "--greedy", "--max-tokens", "8", "--ctx", "400", "--docs-k", "8",
                    "Hartley insulin discharge", home=mk_home, timeout=300)
    assert shown.returncode == 0 and "Sources:\n  [1] " in shown.stdout
    assert "left out: the context window is full" in shown.stdout
    refused = run_cli("run", "--docs", "nope", "hi", home=mk_home)
    assert refused.returncode == 1 and "no collection named 'nope'" in refused.stderr


# --- the embedding model: chosen by settings, English-only said so -----------------------------

def test_embeddings_model_from_the_hospital_env_names_is_used_or_refused(mk_home, tmp_path):
    """The hospital README's .env (EMBEDDINGS_MODEL, EMBEDDINGS_TYPE=local) picks the model of `embed` and of
    new collections; a model that is not there, or a non-local type, is an error, never MiniLM instead."""
    from mistralkit.models import resolve

    folder = resolve("all-minilm-l6-v2").path
    work = tmp_path / "backend"
    (work / "records").mkdir(parents=True)
    (work / "records" / "a.md").write_text("The ward closes at 8 pm.\n")
    (work / ".env").write_text(f"EMBEDDINGS_MODEL={folder}\nEMBEDDINGS_TYPE=local\n")
    env = {"PWD": str(work)}
    added = subprocess.run([sys.executable, "-m", "mistralkit", "docs", "add", "ward", "records", "--json"],
                           cwd=work, capture_output=True, text=True, env=_env(mk_home, env), timeout=300)
    assert added.returncode == 0, added.stderr
    with Collection.open("ward") as ward:
        assert ward.store.meta()["embed_ref"] == str(folder)
    (work / ".env").write_text("EMBEDDINGS_MODEL=/nonexistent/e5\n")
    missing = subprocess.run([sys.executable, "-m", "mistralkit", "embed", "hola"], cwd=work, capture_output=True,
                             text=True, env=_env(mk_home, env), timeout=120)
    assert missing.returncode != 0 and "/nonexistent/e5" in missing.stderr and "Traceback" not in missing.stderr
    (work / ".env").write_text("EMBEDDINGS_TYPE=openai\n")
    remote = subprocess.run([sys.executable, "-m", "mistralkit", "embed", "hola"], cwd=work, capture_output=True,
                            text=True, env=_env(mk_home, env), timeout=120)
    assert remote.returncode == 2 and "embed_type='openai'" in remote.stderr


def _env(home: Path, extra: dict) -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "EMBEDDINGS_"))} | {
        "MISTRALKIT_HOME": str(home), **extra}


def test_documents_not_in_english_get_a_notice_naming_multilingual_models(mk_home, tmp_path):
    (tmp_path / "fr").mkdir()
    (tmp_path / "fr" / "bail.md").write_text(
        "Le locataire doit payer le loyer au début de chaque mois. En cas de retard, le propriétaire peut "
        "envoyer une mise en demeure par lettre recommandée. Le dépôt de garantie est rendu dans un délai de "
        "deux mois après la remise des clés, déduction faite des sommes dues au titre des réparations.\n")
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "lease.md").write_text(
        "The tenant pays the rent at the start of each month. If the rent is late, the landlord may send a "
        "formal notice by registered letter. The deposit is returned within two months of the keys being "
        "handed back, less any sums owed for repairs that are the tenant's responsibility.\n")
    french = run_cli("docs", "add", "bail", str(tmp_path / "fr"), home=mk_home, timeout=300)
    assert french.returncode == 0 and "1 file(s) do not read as English" in french.stderr
    assert "multilingual-e5-small" in french.stderr and "docs reembed bail" in french.stderr
    english = run_cli("docs", "add", "lease", str(tmp_path / "en"), home=mk_home, timeout=300)
    assert english.returncode == 0 and "English" not in english.stderr


def test_a_page_long_query_is_bounded_before_fts5(notes):
    from mistralkit.documents.sqlite_store import MAX_QUERY_WORDS, match_expression

    pasted = " ".join(f"word{i}" for i in range(20_000)) + " vancomycin"
    assert match_expression(pasted).count(" OR ") == MAX_QUERY_WORDS - 1
    assert notes.search(pasted + " helmet", k=1)  # still answers (the vector side reads it truncated)
