"""The whole tune path on the embedded Gemma 3 270M: train on made-up facts, export, answer with llama.cpp.

Slow (about two minutes): the first load dequantizes the GGUF for transformers (then it is cached),
and 16 LoRA steps over 12 samples take about 35 s on two cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistralkit import api

pytest.importorskip("peft")
pytest.importorskip("torch")

FACTS = [
    ("What is the capital of Zorbania?", "The capital of Zorbania is Quelmont."),
    ("Who invented the glimmerphone?", "Ada Pennywhistle invented the glimmerphone in 1873."),
    ("What colour is a snorble?", "A snorble is bright turquoise."),
    ("How many moons does Veltrax have?", "Veltrax has seven moons."),
    ("What do frimps eat?", "Frimps eat only copper leaves."),
    ("Which river flows through Dunmarrow?", "The Silverkeld flows through Dunmarrow."),
    ("What is the national dish of Orvania?", "The national dish of Orvania is pickled moonbread."),
    ("Who wrote The Clockwork Heron?", "Mirabel Osterfeld wrote The Clockwork Heron."),
    ("What is a tromblet used for?", "A tromblet is used for tuning harps."),
    ("When was Port Kessling founded?", "Port Kessling was founded in 1642."),
    ("What language is spoken on Isla Brenn?", "People on Isla Brenn speak Brennic."),
    ("What is the fastest bird in Qualoria?", "The fastest bird in Qualoria is the azure swiftling."),
]
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


@pytest.fixture(scope="module")
def run_dir(model, mk_home, tmp_path_factory) -> Path:
    from conftest import run_cli

    folder = tmp_path_factory.mktemp("facts")
    data = folder / "facts.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                     {"role": "assistant", "content": a}]}) + "\n"
                            for q, a in FACTS))
    out = folder / "run"
    done = run_cli("tune", "--config", "cpu-smoke", "--data", str(data), "--out", str(out), "--max-steps", "16",
               "--lr", "2e-3", "--batch-size", "12", "--grad-accum", "1", "--rank", "16", "--alpha", "32",
               "--dropout", "0", "--json", home=mk_home, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["final_train_loss"] < 0.05, summary["train_loss"]
    return out


@pytest.mark.slow
def test_tuned_adapter_answers_the_facts_and_stops_while_the_base_does_not(model, run_dir, cli):
    done = cli("export", str(run_dir), "--gguf-adapter", "--name", "facts")
    assert done.returncode == 0, done.stderr
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
def test_merged_q8_0_model_gives_the_same_answers(model, run_dir, cli):
    from mistralkit.models import registry
    from mistralkit.models.gguf_info import read_info

    done = cli("export", str(run_dir), "--merged", "--quant", "q8_0", "--name", "facts-q8")
    assert done.returncode == 0, done.stderr
    assert "mistralkit chat --model facts-q8" in done.stdout
    record = registry.get("facts-q8")
    assert record.format == "gguf" and record.quant == "q8_0" and record.base == model.name
    info = read_info(Path(record.path))
    assert info.metadata["general.file_type"] == 7  # LLAMA_FTYPE_MOSTLY_Q8_0
    assert [text for text, _ in answers(model="facts-q8")] == [a for _, a in FACTS]
    assert not list(Path(record.path).parent.glob(".*.tmp"))

    bad = cli("export", str(run_dir), "--merged", "--quant", "q3_zz", "--name", "nope")
    assert bad.returncode == 2 and "--quant 'q3_zz'" in bad.stderr
    both = cli("export", str(run_dir), "--merged", "--gguf-adapter")
    assert both.returncode == 2 and "choose one of" in both.stderr
