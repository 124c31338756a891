"""The whole tune path on the embedded Gemma 3 270M: train on made-up facts, export, answer with llama.cpp.

Slow: the training (conftest's ``facts_run``, shared with the eval tests) takes about 80 s.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import FACTS

from mistralkit import api

import peft  # noqa: F401  (the [test] extra installs it; missing = failure)
import torch  # noqa: F401  (the [test] extra installs it; missing = failure)

GREEDY = {"greedy": True, "max_tokens": 40, "threads": 2, "ctx": 512}


def answers(model: str | None = None, adapter: str | None = None) -> list[tuple[str, bool]]:
    """Greedy answer to every question, and whether generation ended on the model's own EOS.

    It ended on EOS when llama.cpp generated exactly the answer's tokens: had the plain layout's
    ``\\nUser:`` stop string (or the token limit) ended it, more tokens would have been generated.
    """
    loaded = api.load(api.load_settings({**GREEDY, "model": model, "adapter": adapter}).settings)
    try:
        out = []
        for question, _ in FACTS:
            done = api.run(question, loaded)
            own = len(loaded.engine.tokenize(done.text, special=False))
            out.append((done.text.strip(), done.finish_reason == "stop" and done.usage.completion_tokens == own))
        return out
    finally:
        loaded.close()


@pytest.mark.slow
def test_tuned_adapter_answers_the_facts_and_stops_while_the_base_does_not(model, facts_adapter, cli):
    tuned = answers(adapter="facts")
    expected = [a for _, a in FACTS]
    assert [text for text, _ in tuned] == expected
    assert all(eos for _, eos in tuned), tuned
    base = answers()
    assert sum(text == a for (text, _), a in zip(base, expected)) == 0, base

    flags = ("--greedy", "-n", "40", "--threads", "2", "--ctx", "512", "--json")
    via_cli = cli("run", "--adapter", "facts", *flags, FACTS[0][0])
    assert via_cli.returncode == 0, via_cli.stderr
    assert json.loads(via_cli.stdout)["text"].strip() == FACTS[0][1]


@pytest.mark.slow
def test_merged_q8_0_model_gives_the_same_answers(model, facts_run, cli):
    from mistralkit.models import registry
    from mistralkit.models.gguf_info import read_info

    done = cli("export", str(facts_run), "--merged", "--quant", "q8_0", "--name", "facts-q8", "--json",
               timeout=600)  # merge, quantize, then the check: three passes over 8 facts
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    record = registry.get("facts-q8")
    assert record.format == "gguf" and record.quant == "q8_0" and record.base == model.name
    # The check (tune/fidelity.py) on 8 of the facts: the export is base + adapter, the base alone is not.
    check = printed["check"]
    assert check == record.check and check["verdict"] == "kept" and printed["warning"] is None
    assert check["samples"] == 8 and check["agreement"] > 0.95 > 0.8 > check["base_agreement"]
    assert check["kl"] < 0.01 * check["base_kl"]
    info = read_info(Path(record.path))
    assert info.metadata["general.file_type"] == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert [text for text, _ in answers(model="facts-q8")] == [a for _, a in FACTS]
    assert not list(Path(record.path).parent.glob(".*.tmp"))

    bad = cli("export", str(facts_run), "--merged", "--quant", "q3_zz", "--name", "nope")
    assert bad.returncode == 2 and "--quant 'q3_zz'" in bad.stderr
    both = cli("export", str(facts_run), "--merged", "--gguf-adapter")
    assert both.returncode == 2 and "choose one of" in both.stderr
