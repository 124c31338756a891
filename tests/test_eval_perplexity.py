"""Perplexity on the embedded Gemma 3 270M, checked against a log-softmax computed here by hand."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mistralkit.errors import InvalidParameter
from mistralkit.evaluate.perplexity import perplexity

ENGLISH = (
    "The old lighthouse stood at the edge of the cliff for more than a hundred years. Every night "
    "the keeper climbed the narrow stairs, lit the lamp, and watched the ships pass safely into the "
    "harbor. When the storms came, he stayed awake until morning."
)
LONG = " ".join([ENGLISH] * 5)


def by_hand(model, text: str) -> float:
    """Mean NLL of ``text`` after BOS, from one llama.cpp eval and a float64 log-softmax."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(model.path), n_ctx=256, n_batch=256, logits_all=True,
                          n_threads=2, verbose=False)
    try:
        tokens = [llm.token_bos(), *llm.tokenize(text.encode(), add_bos=False, special=False)]
        llm.eval(tokens)
        logits = llm.scores[: len(tokens) - 1].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -float(logp[np.arange(len(tokens) - 1), tokens[1:]].mean())
    finally:
        llm.close()


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_matches_a_direct_computation(model, tmp_path):
    seen = []
    result = perplexity(model, write(tmp_path / "a.txt", ENGLISH), threads=2,
                        progress=lambda done, total: seen.append((done, total)))
    assert result.windows == 1 and seen == [(1, 1)]
    assert 40 <= result.tokens_scored <= 80
    assert result.nll == pytest.approx(by_hand(model, ENGLISH), rel=1e-4)
    assert result.perplexity == pytest.approx(np.exp(result.nll))
    data = result.to_dict()
    assert data["model"] == model.name and data["adapter"] is None and data["window"] == 512
    json.dumps(data)


def test_natural_text_beats_shuffled_and_long_text_spans_windows(model, tmp_path):
    words = LONG.split()
    random.Random(0).shuffle(words)
    natural = perplexity(model, write(tmp_path / "natural.txt", LONG), window=64, threads=2)
    shuffled = perplexity(model, write(tmp_path / "shuffled.txt", " ".join(words)), window=64, threads=2)
    assert shuffled.perplexity > 3 * natural.perplexity

    import llama_cpp

    tokenizer = llama_cpp.Llama(model_path=str(model.path), vocab_only=True, verbose=False)
    n_tokens = len(tokenizer.tokenize(LONG.encode(), add_bos=False, special=False))
    tokenizer.close()
    assert n_tokens > 200 and natural.tokens_scored == n_tokens
    assert natural.windows == -(-n_tokens // 63)

    lines = tmp_path / "natural.jsonl"
    lines.write_text(json.dumps({"text": LONG}) + "\n\n", encoding="utf-8")
    same = perplexity(model, lines, window=64, threads=2)
    assert (same.tokens_scored, same.windows) == (natural.tokens_scored, natural.windows)
    assert same.nll == pytest.approx(natural.nll, rel=1e-9)


@pytest.mark.parametrize("bad, message", [
    ('{"text": oops}', "invalid JSON"),
    ('["a list"]', "must be a JSON object"),
    ('{"prompt": "no text"}', "text: must be a string, got missing"),
    ('{"text": 3}', "text: must be a string, got a int"),
    ('{"text": "  "}', "text: empty text"),
])
def test_a_bad_jsonl_line_is_named(model, tmp_path, bad, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "one"}\n\n' + bad + "\n", encoding="utf-8")
    with pytest.raises(InvalidParameter) as caught:
        perplexity(model, path)
    assert caught.value.message.startswith(f"{path}:3: ") and message in caught.value.message


def test_missing_files_empty_text_and_bad_windows_are_refused(model, tmp_path):
    with pytest.raises(InvalidParameter, match="no such file"):
        perplexity(model, tmp_path / "missing.txt")
    with pytest.raises(InvalidParameter, match="no text to score"):
        perplexity(model, write(tmp_path / "empty.txt", " \n\n"))
    with pytest.raises(InvalidParameter, match="cannot read .csv"):
        perplexity(model, write(tmp_path / "data.csv", "a,b"))
    text = write(tmp_path / "a.txt", ENGLISH)
    with pytest.raises(InvalidParameter, match="window 8 is too small") as caught:
        perplexity(model, text, window=8)
    assert caught.value.hint
    with pytest.raises(InvalidParameter, match="larger than .* context length"):
        perplexity(model, text, window=10**6)


def test_an_adapter_changes_the_perplexity(model, tmp_path):
    import peft  # noqa: F401  (the [test] extra installs it; missing = failure)
    from test_tune_export import peft_adapter

    from mistralkit.tune.export import export_gguf_adapter

    big = export_gguf_adapter(peft_adapter(tmp_path / "big", model, 2.0), model, tmp_path / "big.gguf", "f32")
    text = write(tmp_path / "a.txt", ENGLISH)
    base = perplexity(model, text, threads=2)
    tuned = perplexity(model, text, adapter=str(big), threads=2)
    assert tuned.adapter == str(big) and tuned.tokens_scored == base.tokens_scored
    assert abs(tuned.nll - base.nll) > 0.1
