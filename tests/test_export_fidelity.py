"""The merged model keeps the chat format it was trained with.

A merge from an HF Mistral base records the run's Mistral tokenizer in the GGUF, so the registered
model prompts with ``[INST]`` whatever its folder is called; a GGUF base's metadata (its template)
is copied as it is.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_tune_mistral_gguf import run_dir, tiny  # noqa: F401  (the tiny HF Mistral and its 4-step run)

pytestmark = pytest.mark.slow
# A Mistral-style template the HF base folder carries; the merge must hand it on unchanged.
TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST]{{ m['content'] }}[/INST]" \
           "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"


def test_hf_merge_keeps_the_inst_format_it_was_trained_with(tiny, run_dir, cli, tmp_path):  # noqa: F811
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    from mistralkit.engines import load_engine
    from mistralkit.formats.mistral import GGUF_KEY, load_tokenizer
    from mistralkit.models import registry, resolve
    from mistralkit.models.gguf_info import read_info
    from mistralkit.tune.merge import merge_to_gguf

    base = tmp_path / "base"  # neither its name nor a template says "Mistral": only what the merge records
    shutil.copytree(tiny, base)
    done = cli("export", str(run_dir), "--merged", "--quant", "q8_0", "--base", str(base), "--name", "hf-q8",
               timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    info = read_info(Path(registry.get("hf-q8").path))
    assert "mistral" not in (info.name or "").lower() and info.chat_template is None
    assert info.metadata[GGUF_KEY] == "v3"
    engine = load_engine(resolve("hf-q8"), n_ctx=64)
    try:
        question = "Corrige : il a manger."
        expected = load_tokenizer("v3").encode_chat_completion(
            ChatCompletionRequest(messages=[UserMessage(content=question)])).tokens
        assert engine.format.name == "mistral-v3"
        assert engine.prompt_tokens([{"role": "user", "content": question}]) == expected  # [INST] ... [/INST]
    finally:
        engine.close()

    # A folder that carries its chat template hands it on, for llama.cpp's own tools.
    (base / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    templated = merge_to_gguf(run_dir, resolve(str(base)), tmp_path / "templated.gguf", "q8_0", tokenizer="v3")
    assert read_info(templated).chat_template == TEMPLATE


@pytest.mark.parametrize(("version", "vocab"), [("v1", 32000), ("v2", 32768), ("v3", 32768)])
def test_a_converted_gguf_names_the_tokenizer_it_was_written_with(version, vocab, tmp_path, mk_home):
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    from mistralkit.formats import mistral_tokenizer_of
    from mistralkit.models import resolve
    from mistralkit.tune.to_gguf import write_gguf

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    config._name_or_path = str(tmp_path / "base")
    model = MistralForCausalLM(config)
    path = write_gguf(model.state_dict(), config, version, tmp_path / "plain-name.gguf")
    assert mistral_tokenizer_of(resolve(str(path))) == version  # v2 too, which name and vocabulary cannot tell


def test_a_gguf_base_keeps_its_own_template(tmp_path, mk_home):
    """A merge into a GGUF base copies its metadata: the registered merge prompts as the base does."""
    import torch
    from safetensors.torch import save_file

    from mistralkit.engines import load_engine
    from mistralkit.models import resolve
    from mistralkit.tune.merge import merge_and_register

    base = resolve("smollm2-135m-instruct")
    peft = tmp_path / "peft"
    peft.mkdir()
    (peft / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    torch.manual_seed(0)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_{}.weight"
    save_file({key.format("A"): torch.randn(2, 576), key.format("B"): torch.randn(576, 2) * 0.01},
              str(peft / "adapter_model.safetensors"))
    merge_and_register(peft, base, "smol-merged", "q8_0")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello?"}]
    prompts = []
    for model in (base, resolve("smol-merged")):
        assert model.info.chat_template == base.info.chat_template
        engine = load_engine(model, n_ctx=128)
        try:
            prompts.append((engine.format.name, engine.prompt_tokens(messages)))
        finally:
            engine.close()
    assert prompts[0] == prompts[1] and prompts[0][0] == "jinja"
