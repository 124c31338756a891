"""Ministral 3: a tiny random Mistral3ForConditionalGeneration (Ministral 3 text model, Pixtral
vision tower) with the real tekken tokenizer from mistral-common, tuned by ``train``.

It is the ``arch.ARCHS`` row that makes this work: ``AutoModelForCausalLM`` refuses the checkpoint.
LoRA goes on the language model only (the vision tower has q_proj/.../down_proj too), the vision
side stays frozen, the adapter's keys are those vLLM's Mistral3 LoRA loader maps, and the GGUF
adapter and merged GGUF run in llama.cpp (arch ``mistral3``) with PEFT's logits.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import peft  # noqa: F401  (the [test] extra installs it; missing = failure)
import pytest
import torch

from mistralkit.errors import InvalidParameter
from mistralkit.tune.config import TuneConfig

CONVERSATIONS = [
    ("You are a contracts lawyer. Answer in one sentence.", "Define consideration.",
     "Something of value each party gives in exchange."),
    (None, "What is a lien?", "A security interest in another's property."),
    ("Be brief.", "Define estoppel.", "A bar to asserting what contradicts one's earlier stand."),
]
ATOL = 0.02  # logits reach about 3; f32 GGUF vs torch differ by ~1e-3
LAYERS = 2
LM_LORA = re.compile(r"base_model\.model\.model\.language_model\.layers\.\d+\."
                     r"(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_[AB]\.weight")


def messages(system: str | None, user: str, answer: str | None = None) -> list[dict[str, str]]:
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": user})
    return turns + ([{"role": "assistant", "content": answer}] if answer else [])


def vllm_module(key: str) -> str:
    """The module vLLM's LoRA loader files a PEFT tensor under, for Mistral3ForConditionalGeneration.

    A stand-in for vLLM, which is not installed here and needs a GPU: its ``parse_fine_tuned_lora_name``
    strips ``base_model.model.``, applies the model's ``hf_to_vllm_mapper`` (first matching prefix of
    ``model.language_model.`` -> ``language_model.model.``, ``model.vision_tower.`` -> ``vision_tower.``,
    ..., vllm/model_executor/models/mistral3.py) and drops ``.lora_A.weight``/``.lora_B.weight``.
    """
    name = key.removeprefix("base_model.model.")
    for old, new in (("model.language_model.", "language_model.model."), ("model.vision_tower.", "vision_tower."),
                     ("model.multi_modal_projector.", "multi_modal_projector."), ("model.", "language_model.model.")):
        if name.startswith(old):
            name = new + name[len(old):]
            break
    return name.rsplit(".lora_", 1)[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from transformers import (
        Ministral3Config,
        Mistral3Config,
        Mistral3ForConditionalGeneration,
        PixtralVisionConfig,
    )

    torch.manual_seed(0)
    rope = {"rope_type": "yarn", "rope_theta": 1e6, "factor": 16.0, "original_max_position_embeddings": 16384,
            "max_position_embeddings": 262144, "beta_fast": 32.0, "beta_slow": 1.0, "mscale_all_dim": 1.0,
            "mscale": 1.0, "llama_4_scaling_beta": 0.1}  # Ministral 3's own RoPE
    text = Ministral3Config(vocab_size=131072, hidden_size=32, intermediate_size=64, num_hidden_layers=LAYERS,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                            max_position_embeddings=262144, rope_parameters=rope, tie_word_embeddings=True)
    vision = PixtralVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                 head_dim=8, image_size=32, patch_size=8)
    model = Mistral3ForConditionalGeneration(Mistral3Config(text_config=text, vision_config=vision,
                                                            tie_word_embeddings=True))
    with torch.no_grad():  # larger weights than the init, so that logits tell layouts apart
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(5)
    path = tmp_path_factory.mktemp("tiny") / "tiny-ministral3"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("m3data") / "legal.jsonl"
    path.write_text("".join(json.dumps({"messages": messages(*c)}) + "\n" for c in CONVERSATIONS))
    return path


@pytest.fixture(scope="module")
def run_dir(tiny, data, tmp_path_factory, mk_home) -> Path:
    """``mistralkit tune`` as the ministral-3b-lora preset runs it (gradient checkpointing), no --tokenizer."""
    from mistralkit.tune.train import train

    out = tmp_path_factory.mktemp("m3run") / "run"
    train(TuneConfig(base=str(tiny), data=str(data), out=str(out), rank=4, alpha=8, lr=5e-2, batch_size=3,
                     max_steps=3, warmup_ratio=0.0, dropout=0.0, gradient_checkpointing=True), progress=False)
    return out


@pytest.fixture(scope="module")
def base_gguf(tiny, tmp_path_factory, mk_home) -> Path:
    from transformers import Mistral3ForConditionalGeneration

    from mistralkit.tune.to_gguf import write_gguf

    model = Mistral3ForConditionalGeneration.from_pretrained(tiny)
    return write_gguf(model.state_dict(), model.config, "tekken-v7",
                      tmp_path_factory.mktemp("m3gguf") / "tiny-ministral3-f32.gguf", "f32")


@pytest.fixture(scope="module")
def ids(mk_home) -> list[int]:
    """An inference prompt with a system prompt, tokenized as the chat path does."""
    from mistralkit.formats.mistral import MistralFormat

    return MistralFormat("tekken-v7").encode(messages("Answer as a judge.", "Is a verbal contract binding?"))


def hf_logits(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([ids])).logits[0].float().numpy()


def llama_logits(path: Path, ids: list[int], adapter: Path | None = None) -> np.ndarray:
    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=64, logits_all=True, verbose=False, n_threads=2,
                          lora_path=str(adapter) if adapter else None)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def test_the_arch_table_loads_what_auto_model_for_causal_lm_refuses(tiny, mk_home, monkeypatch):
    from transformers import AutoModelForCausalLM, Mistral3ForConditionalGeneration

    from mistralkit.models import resolve
    from mistralkit.tune import arch
    from mistralkit.tune.base import load_base

    with pytest.raises(ValueError, match="Unrecognized configuration class"):
        AutoModelForCausalLM.from_pretrained(tiny)
    config = TuneConfig(data="x", out="y")
    assert isinstance(load_base(resolve(str(tiny)), config, "cpu", "fp32"), Mistral3ForConditionalGeneration)
    monkeypatch.delitem(arch.ARCHS, "mistral3")  # without its row: AutoModelForCausalLM, which refuses
    with pytest.raises(InvalidParameter, match="transformers cannot load"):
        load_base(resolve(str(tiny)), config, "cpu", "fp32")


def test_one_step_trains_language_model_lora_only(tiny, data, mk_home):
    from mistralkit.models import resolve
    from mistralkit.tune.base import load_base, wrap_lora
    from mistralkit.tune.batches import loss_sum, to_tensors
    from mistralkit.tune.data import read_samples
    from mistralkit.formats.layout import encode, open_encoder

    config = TuneConfig(data="x", out="y", rank=4, dropout=0.0)
    loaded = wrap_lora(load_base(resolve(str(tiny)), config, "cpu", "fp32"), config, "cpu", "fp32")
    model = loaded.model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == LAYERS * 7 * 2  # q k v o gate up down, A and B
    assert all(LM_LORA.fullmatch(n.replace(".default.", ".")) for n in trainable)  # peft's adapter name
    vision = {n: p.detach().clone() for n, p in model.named_parameters()
              if ".vision_tower." in n or ".multi_modal_projector." in n}
    assert vision and not any(model.get_parameter(n).requires_grad for n in vision)
    assert not any("lora_" in n for n in vision)  # bare q_proj would have hit the Pixtral attention
    assert loaded.targets == (r"model\.language_model\.layers\.\d+\.(?:\w+\.)*"
                              r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")

    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    with open_encoder(None, "tekken-v7") as encoder:
        sample = encode(read_samples(str(data))[0], encoder)
    model.train()
    loss = loss_sum(model, to_tensors([sample], encoder.pad_id, "cpu", True), True) / sample.trainable
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == set(trainable)
    optimizer.step()
    assert all(torch.equal(model.get_parameter(n), before) for n, before in vision.items())  # frozen, bit for bit
    assert any(not torch.equal(model.get_parameter(n), before) for n, before in lora_b.items())


def test_target_modules_stay_in_the_language_model(tiny, mk_home):
    from mistralkit.models import resolve
    from mistralkit.tune.base import load_base, wrap_lora

    base = load_base(resolve(str(tiny)), TuneConfig(data="x", out="y"), "cpu", "fp32")
    attention = TuneConfig(data="x", out="y", rank=4, target_modules=["q_proj", "v_proj"])
    loaded = wrap_lora(base, attention, "cpu", "fp32")
    names = [n for n, p in loaded.model.named_parameters() if p.requires_grad]
    assert len(names) == LAYERS * 2 * 2 and all(".language_model.layers." in n for n in names)
    fresh = load_base(resolve(str(tiny)), TuneConfig(data="x", out="y"), "cpu", "fp32")
    vision = TuneConfig(data="x", out="y", target_modules=[r".*vision_tower.*\.q_proj"])
    with pytest.raises(InvalidParameter, match="outside the language model"):
        wrap_lora(fresh, vision, "cpu", "fp32")


def test_packed_rows_keep_samples_apart(tiny, mk_home):
    """Packing goes through the multimodal wrapper: positions restart per sample, no attention across."""
    from transformers import Mistral3ForConditionalGeneration

    from mistralkit.tune.batches import loss_sum, to_tensors
    from mistralkit.formats.layout import Encoded

    model = Mistral3ForConditionalGeneration.from_pretrained(tiny).eval()
    torch.manual_seed(1)
    batch = [Encoded(ids, ids[:]) for ids in (torch.randint(1000, 131072, (n,)).tolist() for n in (5, 9, 13))]
    with torch.no_grad():
        one_by_one = sum(float(loss_sum(model, to_tensors([e], 11, "cpu", False), False)) for e in batch)
        packed = float(loss_sum(model, to_tensors(batch, 11, "cpu", True), True))
    assert packed == pytest.approx(one_by_one, rel=1e-4)


def test_tune_writes_an_adapter_vllm_maps(run_dir, tiny, data, ids, mk_home):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import Mistral3ForConditionalGeneration

    from mistralkit.formats.mistral import MistralFormat
    from mistralkit.tune.data import read_samples
    from mistralkit.formats.layout import encode, open_encoder

    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["base"]["model_type"] == "mistral3" and summary["steps"] == 3
    assert all(math.isfinite(step["loss"]) for step in summary["train_loss"])
    assert summary["hyperparameters"]["tokenizer"] == "tekken-v7"  # from the table: no --tokenizer given
    keys = set(load_file(str(run_dir / "adapter" / "adapter_model.safetensors")))
    assert len(keys) == LAYERS * 7 * 2 and all(LM_LORA.fullmatch(k) for k in keys)
    modules = {vllm_module(k) for k in keys}
    assert all(re.fullmatch(r"language_model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj", m) for m in modules)
    assert {m.rsplit(".", 1)[1] for m in modules} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
    # The prompt part of a training sample is the inference prompt: [SYSTEM_PROMPT] block included.
    conversation = read_samples(str(data))[0]
    with open_encoder(None, summary["hyperparameters"]["tokenizer"]) as encoder:
        sample = encode(conversation, encoder)
    prompt = MistralFormat("tekken-v7").encode(conversation.messages[:-1])
    assert sample.input_ids[: len(prompt)] == prompt and 17 in prompt  # 17: [SYSTEM_PROMPT]
    assert all(label == -100 for label in sample.labels[: len(prompt)]) and sample.labels[-1] == encoder.eos_id
    # The saved keys load back onto the module tree and change the model.
    base = hf_logits(Mistral3ForConditionalGeneration.from_pretrained(tiny), ids)
    tuned = hf_logits(PeftModel.from_pretrained(Mistral3ForConditionalGeneration.from_pretrained(tiny),
                                                str(run_dir / "adapter")), ids)
    assert np.abs(tuned - base).max() > 10 * ATOL


def test_gguf_adapter_has_llama_cpp_names_and_peft_logits(run_dir, tiny, base_gguf, ids, tmp_path):
    import gguf
    from peft import PeftModel
    from transformers import Mistral3ForConditionalGeneration

    from mistralkit.models import resolve
    from mistralkit.tune.export import export_gguf_adapter

    assert gguf.GGUFReader(str(base_gguf)).fields["general.architecture"].contents() == "mistral3"
    base = hf_logits(Mistral3ForConditionalGeneration.from_pretrained(tiny), ids)
    assert np.abs(llama_logits(base_gguf, ids) - base).max() < ATOL  # our mistral3 GGUF is the model

    adapter = export_gguf_adapter(run_dir, resolve(str(base_gguf)), tmp_path / "lora.gguf", "f32")
    reader = gguf.GGUFReader(str(adapter))
    stems = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
    assert {t.name for t in reader.tensors} == {f"blk.{i}.{s}.weight.lora_{ab}" for i in range(LAYERS)
                                                for s in stems for ab in "ab"}
    assert reader.fields["general.architecture"].contents() == "mistral3"
    assert reader.fields["adapter.type"].contents() == "lora"
    tuned = hf_logits(PeftModel.from_pretrained(Mistral3ForConditionalGeneration.from_pretrained(tiny),
                                                str(run_dir / "adapter")), ids)
    assert np.abs(llama_logits(base_gguf, ids, adapter) - tuned).max() < ATOL


def test_merged_gguf_runs_with_peft_logits(run_dir, tiny, base_gguf, ids, tmp_path):
    from peft import PeftModel
    from transformers import Mistral3ForConditionalGeneration

    from mistralkit.models import resolve
    from mistralkit.tune.merge import merge_to_gguf

    out = merge_to_gguf(run_dir, resolve(str(base_gguf)), tmp_path / "merged.gguf", "q8_0")
    tuned = hf_logits(PeftModel.from_pretrained(Mistral3ForConditionalGeneration.from_pretrained(tiny),
                                                str(run_dir / "adapter")), ids)
    error = np.abs(llama_logits(out, ids) - tuned).max()
    assert error < 0.1 * np.abs(tuned).max()  # q8_0 rounding, not a wrong layout


def test_a_vision_lora_is_refused_by_the_exporter(tiny, base_gguf, tmp_path, mk_home):
    """An adapter from elsewhere with LoRA on the vision tower: an error, not tensors dropped."""
    from peft import LoraConfig, get_peft_model
    from transformers import Mistral3ForConditionalGeneration

    from mistralkit.models import resolve
    from mistralkit.tune.export import export_gguf_adapter

    model = Mistral3ForConditionalGeneration.from_pretrained(tiny)
    targets = r"model\.(vision_tower\.transformer|language_model)\.layers\.\d+\.\w+\.q_proj"
    get_peft_model(model, LoraConfig(r=2, target_modules=targets)).save_pretrained(str(tmp_path / "peft"))
    with pytest.raises(InvalidParameter, match="adapts the vision_tower, outside the language model"):
        export_gguf_adapter(tmp_path / "peft", resolve(str(base_gguf)), tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()
