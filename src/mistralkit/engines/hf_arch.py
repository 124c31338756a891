r"""Architectures the transformers side of mistralkit knows, by a checkpoint's ``model_type``: the class
that loads it (the transformers engine and ``tune`` alike) and where LoRA goes when training.

Most checkpoints are causal LMs: ``AutoModelForCausalLM`` loads them and LoRA goes on the
projections by name (peft matches a name as a module-path suffix). A vision-language checkpoint
such as Mistral 3 (``Mistral3ForConditionalGeneration``: a Pixtral vision tower, a projector and
the language model; Ministral 3, Mistral Small 3.1) or Gemma 3 4B+ needs its own class, and a bare
``q_proj`` would also hit the vision tower's attention, so its LoRA targets become a regex that peft
matches against whole module paths, confined to the language model's decoder layers
(``model\.language_model\.layers\.\d+\.(?:\w+\.)*(?:q_proj|k_proj|...)``), and the vision
parts stay frozen. Adding an architecture is adding a row to ``ARCHS``; the engine runs only those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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
    # Gemma 3 4B+ (text + vision): the same scoping as Mistral 3 (a bare q_proj is also the vision tower's).
    "gemma3": Arch(loader="Gemma3ForConditionalGeneration", language_model="model.language_model",
                   frozen=("model.vision_tower", "model.multi_modal_projector")),
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

