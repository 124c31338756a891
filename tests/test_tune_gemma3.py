"""Gemma 3 4B+ checkpoints are text + vision (``Gemma3ForConditionalGeneration``): a tiny random one,
LoRA-wrapped by ``tune``. The architecture table that the transformers engine loads with is the one
training reads (engines/hf_arch.py), and its Gemma 3 row confines LoRA to the language model: a bare
``q_proj`` would also hit the SigLIP vision tower's attention, which must stay frozen.
"""

from __future__ import annotations

import re
from pathlib import Path

import peft  # noqa: F401  (the [test] extra installs it; missing = failure)
import pytest
import torch

from mistralkit.tune.config import TuneConfig

LM_LORA = re.compile(r"base_model\.model\.model\.language_model\.layers\.\d+\."
                     r"(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj)\.lora_[AB]\.weight")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(0)
    config = Gemma3Config(
        text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "head_dim": 16, "vocab_size": 300, "sliding_window": 8},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 28, "patch_size": 14}, mm_tokens_per_image=4)
    path = tmp_path_factory.mktemp("tiny") / "tiny-gemma3"
    Gemma3ForConditionalGeneration(config).save_pretrained(path)
    return path


def test_lora_goes_on_the_language_model_only_and_the_engine_loads_with_the_same_row(tiny, mk_home):
    from transformers import Gemma3ForConditionalGeneration

    from mistralkit.engines.hf_load import model_class
    from mistralkit.models import resolve
    from mistralkit.tune.base import load_base, wrap_lora

    config = TuneConfig(data="x", out="y", rank=4, dropout=0.0)
    base = load_base(resolve(str(tiny)), config, "cpu", "fp32")
    assert isinstance(base, Gemma3ForConditionalGeneration) and model_class("gemma3", tiny) is type(base)
    model = wrap_lora(base, config, "cpu", "fp32").model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 7 * 2  # 2 layers x q k v o gate up down x A and B
    assert all(LM_LORA.fullmatch(n.replace(".default.", ".")) for n in trainable), trainable
    vision = [n for n, _ in model.named_parameters() if ".vision_tower." in n or ".multi_modal_projector." in n]
    assert vision and not any("lora_" in n for n in vision)
    assert not any(model.get_parameter(n).requires_grad for n in vision)
