"""PEFT LoRA adapter -> GGUF adapter, applied by llama.cpp on the embedded Gemma 3 270M.

The adapters are real PEFT adapters (get_peft_model + save_pretrained) on a random Gemma 3 with the
embedded GGUF's layer shapes: an adapter depends on the shapes of the weights it adapts, not on their
values, so the 40 s dequantizing load of the real weights is not needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mistralkit import api
from mistralkit.errors import InvalidParameter, ModelNotFound

import peft  # noqa: F401  (the [test] extra installs it; missing = failure)
import torch

PROMPT = "The capital of France is"
LAYERS = 2  # adapters on the first layers only: llama.cpp leaves the others alone


def peft_adapter(path, base, scale: float | None, targets=("q_proj", "k_proj", "v_proj", "o_proj")):
    """Save a PEFT LoRA (r=4) for ``base``'s shapes; ``scale`` None keeps PEFT's B = 0 init."""
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    meta = base.info.metadata
    config = Gemma3TextConfig(
        vocab_size=16, hidden_size=meta["gemma3.embedding_length"], num_hidden_layers=LAYERS,
        intermediate_size=meta["gemma3.feed_forward_length"], num_attention_heads=meta["gemma3.attention.head_count"],
        num_key_value_heads=meta["gemma3.attention.head_count_kv"], head_dim=meta["gemma3.attention.key_length"])
    torch.manual_seed(0)
    model = get_peft_model(Gemma3ForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules=list(targets)))
    if scale is not None:
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.data = scale * torch.randn_like(param)
    model.save_pretrained(str(path))
    return path


def greedy_text(model, adapter=None) -> str:
    settings = api.load_settings({"greedy": True, "max_tokens": 12, "threads": 1, "ctx": 256,
                                  "model": model, "adapter": adapter}).settings
    loaded = api.load(settings)
    try:
        return api.run(PROMPT, loaded).text
    finally:
        loaded.close()


@pytest.fixture(scope="module")
def base_text(model):
    return greedy_text(model.name)


def test_zero_lora_b_keeps_the_base_text_and_a_large_one_changes_it(model, base_text, tmp_path):
    from mistralkit.models.gguf_info import read_info
    from mistralkit.tune.export import export_gguf_adapter

    zero = export_gguf_adapter(peft_adapter(tmp_path / "zero", model, None), model, tmp_path / "zero.gguf")
    info = read_info(zero)
    assert info.metadata["general.type"] == "adapter" and info.metadata["adapter.type"] == "lora"
    assert info.metadata["general.architecture"] == "gemma3" and info.metadata["adapter.lora.alpha"] == 8.0
    shapes = {t.name: t.shape for t in info.tensors}
    assert len(shapes) == LAYERS * 4 * 2
    assert shapes["blk.1.attn_q.weight.lora_a"] == (640, 4) and shapes["blk.1.attn_q.weight.lora_b"] == (4, 1024)
    assert greedy_text(model.name, str(zero)) == base_text

    big = export_gguf_adapter(peft_adapter(tmp_path / "big", model, 2.0), model, tmp_path / "big.gguf", "f32")
    assert greedy_text(model.name, str(big)) != base_text


def test_unknown_modules_and_wrong_bases_are_refused(model, tmp_path):
    from mistralkit.tune.export import export_gguf_adapter, rope_permute_rows

    embed = peft_adapter(tmp_path / "embed", model, None, targets=("q_proj", "embed_tokens"))
    with pytest.raises(InvalidParameter, match="cannot map the LoRA tensor .*embed_tokens"):
        export_gguf_adapter(embed, model, tmp_path / "embed.gguf")
    assert not (tmp_path / "embed.gguf").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameter, match="no PEFT adapter"):
        export_gguf_adapter((tmp_path / "empty").resolve(), model, tmp_path / "none.gguf")

    # llama GGUFs store Q/K with each head's rotary halves interleaved: rows 0..3 of a 1-head block -> 0,2,1,3
    rows = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert rope_permute_rows(rows, 2)[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


def test_export_registers_a_name_for_run_and_chat(model, base_text, mk_home, tmp_path):
    from conftest import run_cli

    from mistralkit.models import registry

    run_dir = tmp_path / "run"
    peft_adapter(run_dir / "adapter", model, 2.0)
    done = subprocess.run([sys.executable, "-m", "mistralkit.cli.export", str(run_dir), "--gguf-adapter",
                           "--name", "big-tune"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mistralkit run --adapter big-tune" in done.stdout
    record = registry.get("big-tune")
    assert record.format == "gguf-adapter" and record.managed and record.base == model.name
    assert Path(record.path).is_file() and Path(record.path).parent.name == "big-tune"

    tuned = greedy_text(None, "big-tune")  # the base recorded at export is the default model
    assert tuned != base_text
    flags = ("--greedy", "-n", "12", "--threads", "1", "--ctx", "256", "--json")
    cli = run_cli("run", "--adapter", "big-tune", *flags, PROMPT, home=mk_home)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["text"] == tuned

    missing = run_cli("run", "--adapter", "no-such-tune", PROMPT, home=mk_home)
    assert missing.returncode != 0 and "adapter 'no-such-tune' not found" in missing.stderr
    with pytest.raises(InvalidParameter, match="is a LoRA adapter"):
        greedy_text("big-tune")
    with pytest.raises(ModelNotFound):
        greedy_text(None, str(tmp_path / "missing.gguf"))
