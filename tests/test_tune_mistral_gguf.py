"""A tiny random Mistral with the real v3 tokenizer: trained, converted to GGUF, run by llama.cpp.

llama.cpp's logits are compared with transformers' for the same tokens: for the base written by
``to_gguf``, for the base plus the exported LoRA adapter, and for the merged model. The Q/K row
permutation of the ``llama`` architecture is what these comparisons check (without it the base's
logits differ by more than half their range).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import torch
import peft  # noqa: F401  (the [test] extra installs it; missing = failure)

from mistralkit.errors import InvalidParameter  # noqa: E402
from mistralkit.tune.config import TuneConfig  # noqa: E402

TEXT = "Bonjour ! Corrige cette phrase, s'il te plaît."
ATOL = 0.02  # logits reach about 4; f32 GGUF vs torch differ by ~2e-3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=32768, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = MistralForCausalLM(config)
    with torch.no_grad():  # larger weights than the init, so that logits tell layouts apart
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(5)
    path = tmp_path_factory.mktemp("tiny") / "tiny-mistral"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ids() -> list[int]:
    from mistralkit.formats.mistral import load_tokenizer

    return load_tokenizer("v3").instruct_tokenizer.tokenizer.encode(TEXT, bos=True, eos=False)


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.tensor([ids])).logits[0].float().numpy()


def llama_logits(path: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2,
                          lora_path=str(adapter) if adapter else None)
    try:
        assert llm.tokenize(TEXT.encode(), add_bos=True) == ids  # llama.cpp tokenizes as mistral-common
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


@pytest.fixture(scope="module")
def base_gguf(tiny, tmp_path_factory) -> Path:
    from transformers import AutoModelForCausalLM

    from mistralkit.tune.to_gguf import write_llama_gguf

    model = AutoModelForCausalLM.from_pretrained(tiny)
    return write_llama_gguf(model.state_dict(), model.config, "v3",
                            tmp_path_factory.mktemp("gguf") / "tiny-f32.gguf", "f32")


@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory, mk_home) -> Path:
    from mistralkit.tune.train import train

    folder = tmp_path_factory.mktemp("mrun")
    data = folder / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": q, "response": a}) + "\n"
            for q, a in [
                ("Corrige : il a manger.", "Il a mangé."),
                ("Corrige : ils sont aller.", "Ils sont allés."),
                ("Corrige : je suis aller.", "Je suis allé."),
            ]
        )
    )
    train(TuneConfig(base=str(tiny), tokenizer="v3", data=str(data), out=str(folder / "run"), rank=4, alpha=8,
                     lr=5e-2, batch_size=3, max_steps=4, warmup_ratio=0.0, dropout=0.0), progress=False)
    return folder / "run"


def test_written_gguf_runs_in_llama_cpp_with_transformers_logits(tiny, base_gguf, ids):
    from transformers import AutoModelForCausalLM

    from mistralkit.models.gguf_info import read_info

    meta = read_info(base_gguf).metadata
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "llama"
    assert meta["llama.attention.head_count_kv"] == 2 and meta["llama.block_count"] == 2
    expected = hf_logits(AutoModelForCausalLM.from_pretrained(tiny), ids)
    assert np.abs(llama_logits(base_gguf, ids) - expected).max() < ATOL


def test_trained_adapter_loads_in_llama_cpp_and_matches_peft(tiny, base_gguf, run_dir, ids, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mistralkit.models import resolve
    from mistralkit.tune.export import export_gguf_adapter

    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["base"]["model_type"] == "mistral" and summary["steps"] == 4
    adapter = export_gguf_adapter(run_dir, resolve(str(base_gguf)), tmp_path / "lora.gguf", "f32")
    base = hf_logits(AutoModelForCausalLM.from_pretrained(tiny), ids)
    tuned = hf_logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), str(run_dir / "adapter")),
                      ids)
    assert np.abs(tuned - base).max() > 10 * ATOL  # the adapter changes the model
    assert np.abs(llama_logits(base_gguf, ids, adapter) - tuned).max() < ATOL


def test_merged_hf_base_becomes_a_quantized_gguf(tiny, run_dir, ids, tmp_path, mk_home):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from mistralkit.models import resolve
    from mistralkit.models.gguf_info import read_info
    from mistralkit.models.runs import trained_tokenizer
    from mistralkit.tune.merge import merge_to_gguf

    assert trained_tokenizer(run_dir) == "v3"
    out = merge_to_gguf(run_dir, resolve(str(tiny)), tmp_path / "merged.gguf", "q8_0", tokenizer="v3")
    assert read_info(out).metadata["general.file_type"] == 7
    tuned = hf_logits(PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), str(run_dir / "adapter")),
                      ids)
    error = np.abs(llama_logits(out, ids) - tuned).max()
    assert error < 0.1 * np.abs(tuned).max()  # q8_0 rounding, not a wrong layout
    with pytest.raises(InvalidParameter, match="needs its Mistral tokenizer"):
        merge_to_gguf(run_dir, resolve(str(tiny)), tmp_path / "none.gguf", "q8_0")
    with pytest.raises(InvalidParameter, match="not 'tekken'"):
        merge_to_gguf(run_dir, resolve(str(tiny)), tmp_path / "tekken.gguf", "q8_0", tokenizer="tekken")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged.gguf"]  # no temporary file left
