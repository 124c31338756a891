r"""What training needs to know about an architecture, looked up by the checkpoint's ``model_type``.

Most checkpoints are causal LMs: ``AutoModelForCausalLM`` loads them and LoRA goes on the
projections by name (peft matches a name as a module-path suffix). A vision-language checkpoint
such as Mistral 3 (``Mistral3ForConditionalGeneration``: a Pixtral vision tower, a projector and
the language model; Ministral 3, Mistral Small 3.1) needs its own class, and a bare ``q_proj``
would also hit the vision tower's attention, so its LoRA targets become a regex that peft
matches against whole module paths, confined to the language model's decoder layers
(``model\.language_model\.layers\.\d+\.(?:\w+\.)*(?:q_proj|k_proj|...)``), and the vision
parts stay frozen. Adding an architecture is adding a row to ``ARCHS``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
NAME = re.compile(r"[\w.]+")  # a module name or dotted suffix; anything else is taken as a regex


@dataclass(frozen=True)
class Arch:
    """How to load and LoRA-wrap one architecture.

    ``language_model``: module path of the decoder inside a multimodal wrapper; LoRA stays below it.
    ``frozen``: submodules that never train (and must carry no LoRA). ``tokenizer``: the
    mistral-common tokenizer its HF checkpoints encode prompts with, when ``--tokenizer`` is not given.
    """

    loader: str = "AutoModelForCausalLM"  # the transformers class that loads its checkpoints
    projections: tuple[str, ...] = ATTENTION + MLP  # default LoRA targets: never lm_head
    language_model: str | None = None
    frozen: tuple[str, ...] = ()
    tokenizer: str | None = None

    def targets(self, names: list[str] | None = None) -> list[str] | str:
        """peft ``target_modules``: ``names`` (default: the projections), scoped to the language model."""
        names = list(names or self.projections)
        if not all(NAME.fullmatch(n) for n in names):
            return names[0] if len(names) == 1 else names  # a regex (or peft patterns), used as given
        if self.language_model is None:
            return names
        alternatives = "|".join(re.escape(n) for n in names)
        return rf"{re.escape(self.language_model)}\.layers\.\d+\.(?:\w+\.)*(?:{alternatives})"

    def is_frozen(self, module: str) -> bool:
        return any(module == f or module.startswith(f + ".") for f in self.frozen)


PLAIN = Arch()
ARCHS: dict[str, Arch] = {
    "llama": PLAIN,
    "mistral": PLAIN,
    "ministral": PLAIN,
    "ministral3": PLAIN,  # a Ministral 3 language model saved on its own (Ministral3ForCausalLM)
    "mixtral": Arch(projections=ATTENTION + ("w1", "w2", "w3")),
    "gemma": PLAIN,
    "gemma2": PLAIN,
    "gemma3": PLAIN,
    "gemma3_text": PLAIN,
    "qwen2": PLAIN,
    "qwen3": PLAIN,
    # Ministral 3 (3B/8B/14B), Mistral Small 3.1/3.2: tekken vocabulary, [SYSTEM_PROMPT] block.
    "mistral3": Arch(loader="Mistral3ForConditionalGeneration", language_model="model.language_model",
                     frozen=("model.vision_tower", "model.multi_modal_projector"), tokenizer="tekken-v7"),
}
# Unknown architectures: a causal LM with LoRA on every linear layer (peft's "all-linear").
FALLBACK = Arch(projections=())


def arch_of(model_type: str | None) -> Arch:
    return ARCHS.get(model_type or "", FALLBACK)


def lora_targets(arch: Arch, names: list[str] | None) -> list[str] | str:
    """``target_modules`` for peft: ``names`` as given (scoped for multimodal models), else the defaults."""
    if names is None and not arch.projections:
        return "all-linear"
    return arch.targets(names)


def checkpoint_model_type(path: Path) -> str | None:
    """``model_type`` of an HF model directory's ``config.json`` (None when unreadable)."""
    try:
        data = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("model_type") if isinstance(data, dict) else None


def arch_of_base(local) -> tuple[str | None, Arch]:
    """(model_type, Arch) of a ``LocalModel`` base; a GGUF is read by transformers as a causal LM."""
    model_type = checkpoint_model_type(local.path) if local.format == "hf" else None
    return model_type, arch_of(model_type)


def default_tokenizer(local) -> str | None:
    """The Mistral tokenizer an HF base encodes prompts with: its catalog entry's, else its architecture's."""
    if local.format != "hf":
        return None  # a GGUF's metadata says (formats.mistral_tokenizer_of)
    return local.mistral_tokenizer or arch_of_base(local)[1].tokenizer
