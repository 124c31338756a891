"""The legal-tech team's fine-tuning scaffold README (issue 35), replayed against ``mistralkit tune``.

Its training command uses Hugging Face script flags (``--train-file``, ``--output-dir``,
``--gradient-accumulation-steps``...) and its data has prompts already laid out as
``USER: ...\\nASSISTANT:``. Runs use a tiny random Mistral with the real v3 tokenizer and the
``cpu-smoke`` preset cut to 4 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

SCAFFOLD = [  # the README's three example lines
    {"prompt": "USER: Corrige ce résumé.\nASSISTANT:", "response": "Voici une version corrigée."},
    {"messages": [{"role": "system", "content": "Réponds en français."}, {"role": "user", "content": "Fais un titre."},
                  {"role": "assistant", "content": "Titre proposé"}]},
    {"text": "Texte complet déjà prêt à apprendre tel quel."},
]
SMALL = ("--config", "cpu-smoke", "--base", "./tiny-mistral", "--tokenizer", "v3", "--max-steps", "4",
         "--save-every", "2")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder laid out as the scaffold's: data/examples/{train,valid}.jsonl, and a tiny base."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    root = tmp_path_factory.mktemp("scaffold")
    examples = root / "data" / "examples"
    examples.mkdir(parents=True)
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in SCAFFOLD]
    (examples / "train.jsonl").write_text("".join(lines), encoding="utf-8")
    (examples / "valid.jsonl").write_text(lines[0], encoding="utf-8")
    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    MistralForCausalLM(config).save_pretrained(root / "tiny-mistral")
    return root


def tune(work: Path, mk_home: Path, *args: str) -> subprocess.CompletedProcess:
    """``mistralkit tune ARGS`` run in ``work``, as the README's user would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MISTRALKIT_", "LLM_"))}
    env["MISTRALKIT_HOME"] = str(mk_home)
    return subprocess.run([sys.executable, "-m", "mistralkit", "tune", *args], cwd=work, capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def scaffold_run(work, mk_home) -> tuple[Path, object]:
    """The README's training command as written, plus the flags that keep it small and local."""
    done = tune(work, mk_home, "--train-file", "data/examples/train.jsonl", "--eval-file", "data/examples/valid.jsonl",
                "--output-dir", "runs/ministral-3b-lora", "--no-4bit", "--max-length", "256",
                "--per-device-batch-size", "1", "--gradient-accumulation-steps", "2", *SMALL)
    assert done.returncode == 0, done.stderr[-3000:]
    return work / "runs" / "ministral-3b-lora", done


def test_the_scaffold_command_trains_with_its_own_flags(scaffold_run):
    out, done = scaffold_run
    summary = json.loads((out / "training_summary.json").read_text())
    settings = summary["hyperparameters"]
    assert settings["data"] == "data/examples/train.jsonl" and settings["valid"] == "data/examples/valid.jsonl"
    assert (settings["batch_size"], settings["grad_accum"], settings["max_length"]) == (1, 2, 256)
    assert settings["qlora"] is False and summary["steps"] == 4 and summary["eval_loss"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert "adapter   runs/ministral-3b-lora/adapter" in done.stdout


def test_progress_is_said_from_the_first_step(scaffold_run):
    _, done = scaffold_run
    said = [line for line in done.stderr.splitlines() if line.startswith("tune: ")]
    assert said[0].startswith("tune: encoding data/examples/train.jsonl and data/examples/valid.jsonl")
    assert any(line.startswith("tune: loading the base tiny-mistral (hf, fp32)") for line in said), said
    steps = [line for line in said if line.startswith("tune: step ")]
    assert [line.split()[2] for line in steps] == ["1/4", "2/4", "3/4", "4/4"], said
    assert all(" loss " in line and " tok/s" in line for line in steps)


def test_resume_from_latest_and_from_a_chosen_checkpoint_end_where_the_run_did(scaffold_run, work, monkeypatch):
    from mistralkit.errors import InvalidParameter
    from mistralkit.tune.config import load_config
    from mistralkit.tune.train import train

    out, _ = scaffold_run
    first = json.loads((out / "training_summary.json").read_text())
    step2 = out / "checkpoints" / "step-000002"
    assert step2.is_dir()
    flags = {k: first["hyperparameters"][k] for k in ("data", "valid", "base", "tokenizer", "batch_size",
                                                       "grad_accum", "max_length", "max_steps", "save_every")}
    monkeypatch.chdir(work)  # the run's paths are relative, as the README's user typed them

    def losses(result) -> list[float]:
        return [round(item["loss"], 5) for item in result.summary["train_loss"]]

    straight = [round(item["loss"], 5) for item in first["train_loss"]]
    # the chosen checkpoint continues into a folder of its own; latest is the scaffold run's step 2
    again = "runs/again"
    chosen = train(load_config("cpu-smoke", {**flags, "out": again, "resume_from_checkpoint": str(step2)}),
                   progress=False)
    assert losses(chosen) == straight  # steps 1-2 from the checkpoint's history, 3-4 trained again
    latest = train(load_config("cpu-smoke", {**flags, "out": str(out.relative_to(work)),
                                             "resume_from_checkpoint": "latest"}), progress=False)
    assert losses(latest) == straight
    with pytest.raises(InvalidParameter, match="not a checkpoint folder"):
        train(load_config("cpu-smoke", {**flags, "out": str(work / "runs" / "x"),
                                        "resume_from_checkpoint": str(out / "checkpoints")}), progress=False)
    with pytest.raises(InvalidParameter, match="both choose"):
        load_config("cpu-smoke", {**flags, "out": "x", "resume": True, "resume_from_checkpoint": str(step2)})


@pytest.mark.parametrize("argv, ours", [
    (["tune", "--learning-rate", "1e-4"], "calls it --lr"),
    (["tune", "--num-train-epochs", "2"], "calls it --epochs"),
    (["tune", "--lora-r", "8", "--lora-alpha", "16"], "calls it --rank"),
    (["tune", "--load-in-4bit"], "calls it --qlora"),
    (["eval", "--resume-from-checkpoint", "x"], "mistralkit eval calls it --resume"),
])
def test_another_tools_flag_is_answered_with_ours(argv, ours, mk_home, tmp_path):
    done = run_cli(*argv, home=mk_home)
    assert done.returncode == 2 and f"error: no such option: {argv[1]}" in done.stderr, done.stderr
    assert ours in done.stderr and "Traceback" not in done.stderr


def test_scaffold_flags_are_aliases_in_the_help(mk_home):
    shown = run_cli("tune", "-h", home=mk_home, env={"COLUMNS": "200"}).stdout
    for alias in ("--data,--train-file", "--valid,--eval-file", "--out,--output-dir", "--no-qlora,--no-4bit",
                  "--batch-size,--per-device-batch-size", "--grad-accum,--gradient-accumulation-steps",
                  "--resume-from-checkpoint"):
        assert alias in shown, alias


def test_prompts_with_a_chat_layout_are_reported_and_can_be_stripped(work, scaffold_run, mk_home):
    train_file = "data/examples/train.jsonl"
    shown = run_cli("data", "validate", str(work / train_file), "--tokenizer", "v3", home=mk_home)
    assert shown.returncode == 0, shown.stderr
    assert "note: 1 prompt(s) already carry a chat layout" in shown.stdout
    assert f"{work / train_file}:1: 'USER: Corrige ce résumé.'" in shown.stdout and "--strip-layout" in shown.stdout
    as_json = run_cli("data", "validate", str(work / train_file), "--tokenizer", "v3", "--json", home=mk_home)
    assert "1 prompt(s)" in json.loads(as_json.stdout)["files"][0]["layout"]

    _, done = scaffold_run  # tune says it too, before training and in the summary's notes
    assert "tune: 1 prompt(s) already carry a chat layout" in done.stderr
    assert "note: 1 prompt(s) already carry a chat layout" in done.stdout

    converted = run_cli("data", "convert", str(work / "data/examples/valid.jsonl"), "--to", "messages",
                        "--strip-layout", "-o", "-", home=mk_home)
    assert converted.returncode == 0, converted.stderr
    first = json.loads(converted.stdout.splitlines()[0])["messages"]
    assert first[0] == {"role": "user", "content": "Corrige ce résumé."}


@pytest.mark.parametrize("prompt, clean", [
    ("USER: Corrige ce résumé.\nASSISTANT:", "Corrige ce résumé."),
    ("[INST] Fais un titre. [/INST]", "Fais un titre."),
    ("<s>[INST] Fais un titre. [/INST]", "Fais un titre."),
    ("Human: Bonjour\n\nAssistant: ", "Bonjour"),
])
def test_layouts_found_and_stripped(prompt, clean):
    from mistralkit.tune.data import parse_line
    from mistralkit.tune.layouts import laid_out, strip

    sample = parse_line(json.dumps({"prompt": prompt, "response": "ok"}))
    assert laid_out(sample)
    assert strip(sample).messages[0]["content"] == clean
    plain = parse_line(json.dumps({"prompt": "The user said: ASSISTANT duties include filing.", "response": "ok"}))
    assert not laid_out(plain)


def test_a_preset_tokenizer_that_is_not_the_bases_is_refused_and_auto_unsets_it(mk_home, tmp_path):
    """The QLoRA plan's CPU trial: the mistral-7b-qlora preset (tokenizer v3) on the embedded Gemma base
    encoded the data with Mistral's ids (first loss 11.9). Refused now, as `data stats` refuses the pairing."""
    from mistralkit.tune.config import load_config

    data = tmp_path / "train.jsonl"
    data.write_text('{"prompt": "Hi", "response": "Hello"}\n' * 4)
    refused = run_cli("tune", "--config", "mistral-7b-qlora", "--no-4bit", "--precision", "auto",
                      "--base", "gemma-3-270m", "--data", str(data), "--out", str(tmp_path / "run"), home=mk_home)
    assert refused.returncode == 2, refused.stderr
    assert "tokenizer v3 (32,768 tokens) does not belong to gemma-3-270m" in refused.stderr
    assert "--tokenizer auto" in refused.stderr and not (tmp_path / "run" / "checkpoints").exists()
    unset = load_config("mistral-7b-qlora", {"tokenizer": "auto", "data": str(data), "out": str(tmp_path)})
    assert unset.tokenizer is None
