"""Files, vector stores and the ``file_search`` tool of a real ``mistralkit serve``, through the official
``openai`` client: uploads, stores that are docs collections (both ways), OpenAI's search shape,
``/v1/responses`` with ``file_search_call`` items and ``file_citation`` annotations, and bad input
(too large, unknown ids, ``../`` names, paths outside the allowed folders, binary text, empty files,
a client that leaves mid-indexing)."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from test_server_api import KEY, MODEL, ONE_THREAD, Serve

from mistralkit.documents import Collection, list_collections

pytestmark = pytest.mark.slow

LIMIT = 512 * 1024
ZORBANIA = b"# Zorbania\n\nThe capital of Zorbania is Quelmont. It lies on the Silverkeld river.\n"
FRIMPS = b"# Frimps\n\nFrimps eat only copper leaves, and they sleep in the winter.\n"


@pytest.fixture(scope="module")
def server(model, mk_home, tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed-docs")
    serve = Serve(mk_home, tmp_path_factory.mktemp("serve") / "docs.log", "--api-key", KEY, "--max-body", "512K",
                  "--allow-docs-paths", str(allowed), *ONE_THREAD)
    serve.allowed = allowed
    yield serve
    serve.stop()


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return server.client()


@pytest.fixture(scope="module")
def facts(client):
    """A store of two uploaded notes."""
    ids = [client.files.create(file=(name, data), purpose="assistants").id
           for name, data in (("zorbania.md", ZORBANIA), ("frimps.md", FRIMPS))]
    store = client.vector_stores.create(name="facts", file_ids=ids)
    return store, ids


def _post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=120)


def test_files_upload_list_content_and_delete(client):
    data = b"line one\r\nline two\n\xc3\xa9t\xc3\xa9\rend"
    made = client.files.create(file=("notes.txt", data), purpose="user_data")
    assert made.id.startswith("file-") and made.filename == "notes.txt" and made.bytes == len(data)
    assert made.purpose == "user_data" and made.object == "file"
    assert made.id in [f.id for f in client.files.list()]
    assert made.id not in [f.id for f in client.files.list(purpose="assistants")]
    assert client.files.retrieve(made.id).filename == "notes.txt"
    assert client.files.content(made.id).read() == data  # byte for byte, line endings included
    assert client.files.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)


def test_a_store_made_of_uploads_is_searchable_and_is_a_collection(client, facts):
    store, ids = facts
    assert store.id == "vs_facts" and store.name == "facts"
    assert store.file_counts.completed == 2 and store.file_counts.failed == 0
    files = client.vector_stores.files.list(store.id).data
    assert sorted(f.id for f in files) == sorted(ids) and {f.status for f in files} == {"completed"}
    page = client.vector_stores.search(store.id, query="What is the capital of Zorbania?", max_num_results=2)
    best = page.data[0]
    assert best.file_id == ids[0] and best.filename == "zorbania.md" and "Quelmont" in best.content[0].text
    assert best.content[0].type == "text" and 0 < best.score <= 1 and len(page.data) <= 2
    assert page.data[0].score >= page.data[-1].score
    assert "facts" in [c["name"] for c in list_collections()]  # what `mistralkit docs list` shows
    assert store.id in [s.id for s in client.vector_stores.list()]


def test_a_collection_made_outside_the_server_is_a_vector_store(client, tmp_path):
    (tmp_path / "moons.md").write_text("# Veltrax\n\nVeltrax has seven moons.\n")
    with Collection.open("made-by-docs-add", create=True) as collection:  # as `mistralkit docs add` does
        collection.add_roots([tmp_path])
        collection.sync()
    listed = {s.id: s for s in client.vector_stores.list()}
    assert listed["vs_made-by-docs-add"].file_counts.completed == 1
    (hit,) = client.vector_stores.search("vs_made-by-docs-add", query="moons of Veltrax", max_num_results=1).data
    assert hit.filename == "moons.md" and hit.file_id.startswith("file-local-") and "seven" in hit.content[0].text
    assert client.vector_stores.delete("vs_made-by-docs-add").deleted
    assert "made-by-docs-add" not in [c["name"] for c in list_collections()]


def test_file_lifecycle_in_a_store(client):
    store = client.vector_stores.create(name="lifecycle")
    upload = client.files.create(file=("frimps.md", FRIMPS), purpose="assistants")
    added = client.vector_stores.files.create(store.id, file_id=upload.id)
    assert added.status == "completed" and added.last_error is None and added.vector_store_id == store.id
    assert client.vector_stores.files.retrieve(upload.id, vector_store_id=store.id).status == "completed"
    assert client.vector_stores.files.delete(upload.id, vector_store_id=store.id).deleted
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 0
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(upload.id, vector_store_id=store.id)
    client.vector_stores.files.create(store.id, file_id=upload.id)
    client.files.delete(upload.id)  # deleting the upload takes it out of the store too
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0
    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_unreadable_files_are_failed_files_with_their_error(client):
    store = client.vector_stores.create(name="unreadable")
    binary = client.files.create(file=("blob.txt", bytes(range(256)) * 8), purpose="assistants")
    failed = client.vector_stores.files.create(store.id, file_id=binary.id)
    assert failed.status == "failed" and failed.last_error.code == "invalid_file"
    assert "binary" in failed.last_error.message
    sheet = client.files.create(file=("table.csv", b"a,b\n1,2\n"), purpose="assistants")
    other = client.vector_stores.files.create(store.id, file_id=sheet.id)
    assert other.status == "failed" and other.last_error.code == "unsupported_file"
    counts = client.vector_stores.retrieve(store.id).file_counts
    assert (counts.failed, counts.completed) == (2, 0)
    assert client.vector_stores.files.delete(binary.id, vector_store_id=store.id).deleted
    assert client.vector_stores.retrieve(store.id).file_counts.failed == 1


def test_bad_uploads(client, server):
    with pytest.raises(openai.APIStatusError) as too_large:
        client.files.create(file=("big.txt", b"x" * (LIMIT + 1)), purpose="assistants")
    assert too_large.value.status_code == 413 and str(LIMIT) in too_large.value.message
    with pytest.raises(openai.BadRequestError) as empty:
        client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert empty.value.body["param"] == "file" and "empty" in empty.value.message
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.txt", b"hello"), purpose="fine-tune")
    assert purpose.value.body["param"] == "purpose"
    answer = httpx.post(f"{server.url}/v1/files", content=b"{}", timeout=10,
                        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "file"


def test_unknown_ids_are_404_and_make_nothing(client):
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-0123456789abcdef01234567")
    with pytest.raises(openai.NotFoundError):
        client.files.content("../../etc/passwd")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.vector_stores.create(name="never-made", file_ids=["file-0123456789abcdef01234567"])
    assert unknown.value.body["param"] == "file_id"
    assert "never-made" not in [c["name"] for c in list_collections()]
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.search("vs_nothing-here", query="x")
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.create("vs_facts", file_id="file-nope")


def test_bad_collection_names_are_400_naming_the_field(client, mk_home):
    before = sorted((mk_home / "data").rglob("*"))
    for name in ("../evil", "a/b", "..", ".hidden"):
        with pytest.raises(openai.BadRequestError) as refused:
            client.vector_stores.create(name=name)
        assert refused.value.body["param"] == "name", name
    with pytest.raises(openai.BadRequestError) as bad_id:
        client.vector_stores.retrieve("vs_..evil")
    assert bad_id.value.body["param"] == "vector_store_id"
    assert sorted((mk_home / "data").rglob("*")) == before


def test_paths_only_under_the_allowed_folders(client, server, tmp_path):
    store = client.vector_stores.create(name="by-path")
    outside = tmp_path / "secret.md"
    outside.write_text("# Secret\n\nThe launch code is 1234.\n")
    inside = server.allowed / "moons.md"
    inside.write_text("# Veltrax\n\nVeltrax has seven moons.\n")
    refusals = [_post(server, f"/v1/vector_stores/{store.id}/files", {"path": str(where)})
                for where in (outside, server.allowed / "missing.md", server.allowed / ".." / outside.name, "/etc")]
    assert [r.status_code for r in refusals] == [403] * 4
    assert all(r.json()["error"]["param"] == "path" for r in refusals)
    assert len({r.json()["error"]["message"].split("'")[-1] for r in refusals}) == 1  # says nothing of what exists
    added = _post(server, f"/v1/vector_stores/{store.id}/files", {"path": str(inside)})
    assert added.status_code == 200 and added.json()["status"] == "completed"
    folder = _post(server, f"/v1/vector_stores/{store.id}/files", {"path": str(server.allowed)})
    assert folder.json()["object"] == "vector_store.file_batch" and folder.json()["file_counts"]["completed"] == 1
    hits = client.vector_stores.search(store.id, query="launch code", max_num_results=5).data
    assert all("1234" not in h.content[0].text for h in hits)


def test_a_client_that_leaves_mid_indexing_leaves_nothing(client, server):
    store = client.vector_stores.create(name="left")
    text = "".join(f"Paragraph {i} tells of the harbour of Port Kessling and its {i} ships.\n\n" for i in range(6000))
    big = client.files.create(file=("harbour.txt", text.encode()[:LIMIT - 4096]), purpose="assistants")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/vector_stores/{store.id}/files", json={"file_id": big.id}, timeout=1.0,
                   headers={"Authorization": f"Bearer {KEY}"})
    small = client.files.create(file=("frimps.md", FRIMPS), purpose="assistants")
    started = time.monotonic()
    client.vector_stores.files.create(store.id, file_id=small.id)  # waits for the store's lock: the first is over
    assert time.monotonic() - started < 60
    files = client.vector_stores.files.list(store.id).data
    assert [f.id for f in files] == [small.id]
    with Collection.open("left") as collection:
        assert [r.split("/")[-1] for r in collection.roots()] == ["frimps.md"]
        assert collection.store.counts()["files"] == 1


# -- /v1/responses with file_search -------------------------------------------------------------------

def test_responses_with_file_search(client, facts):
    store, ids = facts
    reply = client.responses.create(
        model=MODEL, input="What is the capital of Zorbania?", temperature=0, max_output_tokens=24,
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}],
        include=["file_search_call.results"])
    search, message = reply.output
    assert search.type == "file_search_call" and search.status == "completed"
    assert search.queries == ["What is the capital of Zorbania?"]
    assert search.results[0].file_id == ids[0] and "Quelmont" in search.results[0].text
    assert [r.attributes["source"] for r in search.results] == list(range(1, len(search.results) + 1))
    assert message.type == "message" and reply.output_text
    part = message.content[0]
    for note in part.annotations:
        assert note.type == "file_citation" and note.file_id in ids and part.text[note.index] == "["
    assert isinstance(part.model_extra["invalid_citations"], list)
    bare = client.responses.create(model=MODEL, input="What is the capital of Zorbania?", temperature=0,
                                   max_output_tokens=24, tools=[{"type": "file_search",
                                                                 "vector_store_ids": [store.id]}])
    assert bare.output[0].results is None  # only when include asks for them
    plain = client.responses.create(model=MODEL, input="What is the capital of Zorbania?", temperature=0,
                                    max_output_tokens=24)
    assert bare.usage.input_tokens > plain.usage.input_tokens + 20  # the sources were in the prompt


def test_responses_file_search_streamed(client, facts):
    store, ids = facts
    events = list(client.responses.create(
        model=MODEL, input="What do frimps eat?", temperature=0, max_output_tokens=16, stream=True,
        tools=[{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 1}],
        include=["file_search_call.results"]))
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added" and events[2].item.type == "file_search_call"
    assert "response.file_search_call.completed" in kinds
    final = events[-1].response
    assert kinds[-1] in ("response.completed", "response.incomplete")
    search, message = final.output
    assert search.results[0].file_id == ids[1] and "copper" in search.results[0].text
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert message.content[0].text == text and isinstance(message.content[0].annotations, list)


def test_file_search_bad_input(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=MODEL, input="x", max_output_tokens=4,
                                tools=[{"type": "file_search", "vector_store_ids": ["vs_nowhere"]}])
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model=MODEL, input="x", max_output_tokens=4,
                                tools=[{"type": "file_search", "vector_store_ids": []}])
    assert bad.value.body["param"] == "tools.0"
    with pytest.raises(openai.BadRequestError) as web:
        client.responses.create(model=MODEL, input="x", max_output_tokens=4, tools=[{"type": "web_search"}])
    assert web.value.body["param"] == "tools.0"


def test_citations_become_file_citation_annotations(mk_home, tmp_path):
    """The annotation of an answer's ``[n]``, on a real collection's chunks (no model involved)."""
    from mistralkit.documents.answer import Source
    from mistralkit.server.file_search import Grounding

    (tmp_path / "zorbania.md").write_bytes(ZORBANIA)
    with Collection.open("annotations", create=True) as collection:
        collection.add_roots([tmp_path])
        collection.sync()
        (hit,) = collection.search("capital of Zorbania", k=1)
    text = 'The capital is "Quelmont" [1]. It has "nine bridges" [1], see also [4].'
    valid, invalid = Grounding({}, [Source(1, hit.chunk)]).annotate(text)
    assert valid == [{"type": "file_citation", "file_id": valid[0]["file_id"], "filename": "zorbania.md",
                      "index": text.index("[1]")}]
    assert valid[0]["file_id"].startswith("file-local-")
    assert [(c["number"], "quote" in c["problem"]) for c in invalid] == [(1, True), (4, False)]
