"""Training: a tiny random Mistral (real v3 tokenizer from mistral-common) trains a few LoRA steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistralkit.errors import InvalidParameter
from mistralkit.tune.config import TuneConfig, load_config

import torch
import transformers  # noqa: F401  (the [test] extra installs it; missing = failure)
import peft  # noqa: F401  (the [test] extra installs it; missing = failure)

from mistralkit.tune.train import last_checkpoint, train  # noqa: E402

QA = [("What is the capital of France?", "Paris."), ("Two plus two?", "Four."),
      ("Colour of the sky?", "Blue."), ("Opposite of hot?", "Cold."), ("First letter?", "A."),
      ("Say hi.", "Hi!")]


@pytest.fixture(scope="module")
def tiny_mistral(tmp_path_factory) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32768, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    path = tmp_path_factory.mktemp("tiny") / "tiny-mistral"
    MistralForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train_file, valid_file = folder / "train.jsonl", folder / "valid.jsonl"
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
             for q, a in QA]
    train_file.write_text("\n".join(lines) + "\n")
    valid_file.write_text(lines[0] + "\n" + lines[1] + "\n")
    return train_file, valid_file


def _config(base: Path, data, out: Path, **kw) -> TuneConfig:
    settings = dict(base=str(base), data=str(data[0]), valid=str(data[1]), out=str(out), tokenizer="v3",
                    rank=4, alpha=8, lr=1e-2, batch_size=2, grad_accum=1, max_steps=8, warmup_ratio=0.1,
                    seed=3)
    settings.update(kw)
    return TuneConfig(**settings)


def test_trains_lora_only_and_writes_summary(tiny_mistral, data, tmp_path, mk_home):
    result = train(_config(tiny_mistral, data, tmp_path / "run", eval_every=4), progress=False)
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    losses = [item["loss"] for item in summary["train_loss"]]
    assert len(losses) == 8
    assert sum(losses[-2:]) < sum(losses[:2])
    evals = [item["loss"] for item in summary["eval_loss"]]
    assert [item["step"] for item in summary["eval_loss"]] == [4, 8] and evals[-1] < evals[0] + 1e-6
    for key in ("base", "data", "hyperparameters", "trainable_params", "trainable_percent", "train_loss",
                "eval_loss", "tokens_per_second", "duration_seconds", "peak_memory_bytes", "versions"):
        assert key in summary, key
    assert summary["data"]["train"]["samples"] == 6 and summary["data"]["train"]["trained_tokens"] > 6
    assert summary["hyperparameters"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"]
    assert 0 < summary["trainable_percent"] < 100
    assert (result.adapter / "adapter_model.safetensors").is_file()
    assert (result.adapter / "adapter_config.json").is_file()
    with pytest.raises(InvalidParameter, match="already holds a run"):
        train(_config(tiny_mistral, data, tmp_path / "run"), progress=False)


def test_only_lora_parameters_are_trainable(tiny_mistral, mk_home):
    from transformers import AutoModelForCausalLM

    from mistralkit.tune.base import wrap_lora

    config = TuneConfig(data="x", out="y", rank=4)
    loaded = wrap_lora(AutoModelForCausalLM.from_pretrained(tiny_mistral), config, "cpu", "fp32")
    names = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    # 2 layers x 7 projections x (A + B)
    assert len(names) == 28 and loaded.trainable == sum(p.numel() for n, p in loaded.model.named_parameters()
                                                         if "lora_" in n)


def test_interrupted_run_resumes_to_the_same_end(tiny_mistral, data, tmp_path, mk_home):
    straight = train(_config(tiny_mistral, data, tmp_path / "straight", dropout=0.1), progress=False)

    def ctrl_c(step: int, loss: float) -> None:
        if step == 3:
            raise KeyboardInterrupt

    broken = _config(tiny_mistral, data, tmp_path / "broken", dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(broken, on_step=ctrl_c, progress=False)
    assert last_checkpoint(tmp_path / "broken").name == "step-000003"
    with pytest.raises(InvalidParameter, match="--resume"):
        train(broken, progress=False)
    with pytest.raises(InvalidParameter, match="lr"):
        train(_config(tiny_mistral, data, tmp_path / "broken", dropout=0.1, lr=1e-3, resume=True), progress=False)
    resumed = train(_config(tiny_mistral, data, tmp_path / "broken", dropout=0.1, resume=True), progress=False)
    a = [item["loss"] for item in straight.summary["train_loss"]]
    b = [item["loss"] for item in resumed.summary["train_loss"]]
    assert len(b) == 8
    assert b == pytest.approx(a, rel=1e-5)
    assert resumed.summary["eval_loss"][-1]["loss"] == pytest.approx(straight.summary["eval_loss"][-1]["loss"],
                                                                     rel=1e-5)


def test_qlora_on_cpu_fails_clearly(tiny_mistral, data, tmp_path, mk_home):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the refusal is for CPUs")
    with pytest.raises(InvalidParameter, match="--qlora needs a CUDA GPU") as info:
        train(_config(tiny_mistral, data, tmp_path / "q", qlora=True), progress=False)
    assert "drop --qlora" in info.value.hint
    assert not (tmp_path / "q").exists()


def test_config_yaml_flags_override(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data: a.jsonl\nout: runs/a\nrank: 8\ngrad-accum: 4\n")
    config = load_config(path, {"rank": 32, "lr": None})
    assert (config.rank, config.grad_accum, config.lr, config.data) == (32, 4, 2e-4, "a.jsonl")
    smoke = load_config("cpu-smoke", {"data": "t.jsonl", "out": "o"})
    assert smoke.max_steps and smoke.precision == "fp32"
    qlora = load_config("mistral-7b-qlora", {"data": "t.jsonl", "out": "o"})
    assert (qlora.rank, qlora.alpha, qlora.batch_size * qlora.grad_accum, qlora.epochs) == (64, 128, 32, 3)
    path.write_text("data: a.jsonl\nout: o\nranks: 8\n")
    with pytest.raises(InvalidParameter, match="unknown key 'ranks'"):
        load_config(path)
    with pytest.raises(InvalidParameter, match="dropout"):
        TuneConfig(data="a", out="b", dropout=1.5)
    with pytest.raises(InvalidParameter, match="no such file or preset"):
        load_config("nope")


def test_cli_tune_with_a_yaml_config(tiny_mistral, data, tmp_path, mk_home):
    import typer
    from typer.testing import CliRunner

    from mistralkit.cli.tune import tune

    app = typer.Typer()
    app.command()(tune)
    app.command("other")(lambda: None)  # two commands: `tune` is a subcommand, as in mistralkit
    config = tmp_path / "run.yaml"
    config.write_text(f"base: {tiny_mistral}\ntokenizer: v3\nrank: 4\nalpha: 8\nlr: 1.0e-2\n"
                      f"batch-size: 2\nmax-steps: 4\nout: {tmp_path / 'ignored'}\n")
    result = CliRunner().invoke(app, ["tune", "--config", str(config), "--data", str(data[0]),
                                      "--out", str(tmp_path / "cli"), "--max-steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert len(summary["train_loss"]) == 2 and summary["hyperparameters"]["rank"] == 4
    assert (tmp_path / "cli" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "ignored").exists()


@pytest.mark.slow
def test_embedded_gemma_gguf_trains_one_step(model, tmp_path):
    """The embedded Gemma 3 270M GGUF, dequantized by transformers, takes a LoRA step on this CPU.

    Slow (about a minute): transformers parses the GGUF's 262k-token vocabulary twice while loading.
    """
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt": "What is the capital of France?",
                                "response": "The capital of France is Paris."}) + "\n")
    result = train(load_config("cpu-smoke", {"data": str(data), "out": str(tmp_path / "run"), "max_steps": 1,
                                             "grad_accum": 1}), progress=False)
    summary = result.summary
    assert summary["base"]["format"] == "gguf" and summary["base"]["model_type"] == "gemma3_text"
    assert summary["hyperparameters"]["target_modules"][0] == "q_proj"
    # A model that knows the answer: far below the loss of guessing among 262k tokens (~12.5).
    assert 0 < summary["final_train_loss"] < 5
    assert (result.adapter / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize("arch", ["mistral", "gemma3"])
def test_packed_rows_give_the_padded_loss(arch):
    """Packing lays samples end to end; no token may attend across a boundary (Gemma: sliding window 4)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM

    from mistralkit.tune.batches import loss_sum, packed, to_tensors, trained_tokens
    from mistralkit.formats.layout import IGNORE, Encoded

    torch.manual_seed(0)
    small = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2)
    model = (MistralForCausalLM(MistralConfig(**small)) if arch == "mistral" else
             Gemma3ForCausalLM(Gemma3TextConfig(**small, head_dim=8, sliding_window=4))).eval()
    batch = []
    for n in (5, 9, 13):
        ids = torch.randint(3, 300, (n,)).tolist()
        batch.append(Encoded(ids, ids[:]))  # every label trained: a leak across samples would show
    row = packed(batch)
    assert row["position_ids"] == [list(range(5)) + list(range(9)) + list(range(13))]
    assert [row["labels"][0][i] for i in (0, 5, 14)] == [IGNORE] * 3
    with torch.no_grad():
        one_by_one = sum(float(loss_sum(model, to_tensors([e], 0, "cpu", False), False)) for e in batch)
        padded = float(loss_sum(model, to_tensors(batch, 0, "cpu", False), True))
        packed_loss = float(loss_sum(model, to_tensors(batch, 0, "cpu", True), True))
    assert packed_loss == pytest.approx(one_by_one, rel=1e-4)
    assert padded == pytest.approx(one_by_one, rel=1e-4)
    assert trained_tokens(batch) == 4 + 8 + 12


def test_early_stopping_ends_when_eval_loss_stops_improving(tiny_mistral, data, tmp_path, mk_home):
    from mistralkit.tune.train import _no_progress

    assert _no_progress([[1, 3.0], [2, 2.0], [3, 2.5], [4, 2.1]], 2)
    assert not _no_progress([[1, 3.0], [2, 2.0], [3, 2.5], [4, 1.9]], 2)
    assert not _no_progress([[1, 3.0], [2, 3.5]], 2)
    # lr so high that eval loss diverges at once: patience 1 stops at the second evaluation
    result = train(_config(tiny_mistral, data, tmp_path / "es", lr=5.0, max_steps=20, eval_every=1,
                           early_stopping=1, warmup_ratio=0.0), progress=False)
    assert result.summary["stopped_early"] and result.summary["steps"] < 20
    assert (result.adapter / "adapter_model.safetensors").is_file()
    with pytest.raises(InvalidParameter, match="early-stopping"):
        TuneConfig(data="a", out="b", early_stopping=2)


def test_killed_run_resumes_from_its_last_checkpoint(tiny_mistral, data, tmp_path, mk_home):
    """kill -9 in the middle of a CLI run: --resume redoes the lost steps and ends as a straight run."""
    import signal
    import subprocess
    import sys
    import time

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "mistralkit", "tune", "--base", str(tiny_mistral), "--tokenizer", "v3",
                "--data", str(data[0]), "--valid", str(data[1]), "--out", str(out), "--rank", "4", "--alpha", "8",
                "--lr", "1e-2", "--batch-size", "2", "--max-steps", "40", "--save-every", "5", "--dropout", "0.1",
                "--seed", "3", "--json", *extra]

    env = {**__import__("os").environ, "MISTRALKIT_HOME": str(mk_home)}
    straight = subprocess.run(command(tmp_path / "straight"), capture_output=True, text=True, env=env, timeout=300)
    assert straight.returncode == 0, straight.stderr[-2000:]
    victim = subprocess.Popen(command(tmp_path / "killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=env)
    deadline = time.monotonic() + 240
    while not (tmp_path / "killed" / "checkpoints" / "step-000010").exists():
        assert victim.poll() is None and time.monotonic() < deadline, "the run ended before its 2nd checkpoint"
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)
    assert not (tmp_path / "killed" / "training_summary.json").exists()
    resumed = subprocess.run(command(tmp_path / "killed", "--resume"), capture_output=True, text=True, env=env,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = json.loads(straight.stdout), json.loads(resumed.stdout)
    assert len(b["train_loss"]) == 40
    assert b["final_train_loss"] == pytest.approx(a["final_train_loss"], rel=0.01)
    assert b["eval_loss"][-1]["loss"] == pytest.approx(a["eval_loss"][-1]["loss"], rel=0.01)


def test_distributed_entry_point_trains_with_the_same_yaml(tiny_mistral, data, tmp_path, mk_home):
    """The accelerate/Trainer path, as one CPU process: same YAML keys, same masks, adapter in OUT/adapter."""
    from mistralkit.tune.distributed import build_trainer, main

    config = tmp_path / "run.yaml"
    config.write_text(f"base: {tiny_mistral}\ntokenizer: v3\nrank: 4\nalpha: 8\nlr: 1.0e-2\nbatch-size: 2\n"
                      f"max-steps: 3\nwarmup-ratio: 0.0\n")
    out = tmp_path / "dist"
    main(["--config", str(config), "--data", str(data[0]), "--out", str(out), "--max-steps", "2", "--no-qlora"])
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    trainer = build_trainer(load_config(config, {"data": str(data[0]), "out": str(tmp_path / "t")}))
    assert trainer.args.max_steps == 3 and trainer.args.gradient_accumulation_steps == 1
    assert trainer.args.learning_rate == 1e-2 and trainer.args.per_device_train_batch_size == 2
    row = trainer.train_dataset[0]
    assert row["labels"][0] == -100 and row["labels"][-1] == row["input_ids"][-1]  # prompt masked, EOS trained
