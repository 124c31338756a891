"""The base model for training: resolve, check the hardware, load with transformers, wrap in LoRA.

A GGUF is dequantized by transformers (``from_pretrained(dir, gguf_file=name)``) and, when small,
cached as safetensors under ``$CACHE/tune-bases``; an HF directory loads with the class its
``model_type`` names in ``arch.ARCHS`` (``AutoModelForCausalLM`` for most). LoRA targets come from
the same row, else every linear layer. torch, transformers and peft are imported here only,
inside functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..engines.gguf_hf import load_gguf
from ..errors import InvalidParameter, MissingDependency
from .arch import Arch, arch_of, arch_of_base, lora_targets
from .config import TuneConfig

TUNE_HINT = "pip install 'mistralkit[tune]'"


@dataclass
class Wrapped:
    model: Any  # a peft PeftModel
    model_type: str
    targets: list[str] | str
    device: str
    dtype: str
    trainable: int
    total: int


def require_torch():
    try:
        import peft  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"training needs torch, transformers and peft ({exc.name} is missing)",
                                hint=TUNE_HINT) from exc
    return torch


def resolve_base(ref: str | None):
    """The base as a ``LocalModel``; a hub id (``OWNER/REPO``) not here yet is pulled into the store first.
    None: the embedded Gemma 3 270M (a base model; the chat default is an instruct one)."""
    from ..models.catalog import BASE_MODEL
    from ..models.snapshot import resolve_or_pull
    from ..models.store import resolve

    return resolve_or_pull(ref) if ref else resolve(BASE_MODEL)


def pick_device(config: TuneConfig) -> tuple[str, str]:
    """(device, dtype name): bf16 on a capable GPU with ``auto``, fp32 on a CPU; QLoRA needs CUDA."""
    torch = require_torch()
    cuda = torch.cuda.is_available()
    if config.qlora:
        if not cuda:
            raise InvalidParameter("--qlora needs a CUDA GPU (4-bit NF4 runs through bitsandbytes); "
                                   "none is available here",
                                   hint="drop --qlora to train LoRA in full precision on this CPU")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise MissingDependency("--qlora needs bitsandbytes, which is not installed",
                                    hint="pip install bitsandbytes") from exc
    dtype = config.precision
    if dtype == "auto":
        dtype = "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if dtype in ("bf16", "fp16") and not cuda:
        raise InvalidParameter(f"--precision {dtype} is for GPUs; this machine trains on its CPU",
                               hint="use --precision auto or fp32")
    return ("cuda" if cuda else "cpu"), dtype


def _torch_dtype(name: str):
    torch = require_torch()
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def loading_message(local, config: TuneConfig, dtype: str) -> str:
    """What ``load_base`` is about to do, for the run's first lines (a first GGUF load takes minutes)."""
    from ..engines.gguf_hf import dequantized_dir

    what = f"loading the base {local.name} ({local.format}, {dtype}{', 4-bit' if config.qlora else ''})"
    if local.format != "gguf":
        return what
    cached = not config.qlora and (dequantized_dir(local, str(_torch_dtype(dtype)).removeprefix("torch."))
                                   / "config.json").is_file()
    return what + (": its dequantized copy is cached" if cached else
                   ": dequantizing the GGUF with transformers (minutes for a large one; cached for next time)")


def load_base(local, config: TuneConfig, device: str, dtype: str):
    """The transformers model of a ``LocalModel`` (GGUF dequantized, or an HF directory)."""
    require_torch()
    import transformers

    loader = getattr(transformers, arch_of_base(local)[1].loader)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype)}
    if config.qlora:
        import torch
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if dtype == "bf16" else torch.float16)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # one GPU per process
    try:
        if local.format == "gguf":
            model = load_gguf(loader, local, kwargs, cache=not config.qlora)
        elif local.format == "hf":
            model = loader.from_pretrained(str(local.path), **kwargs)
        else:
            raise InvalidParameter(f"{local.name} is a {local.format} model, not a causal LM to tune")
    except (ValueError, OSError, KeyError) as exc:
        raise InvalidParameter(f"transformers cannot load {local.path} for training: {exc}",
                               hint="pass an HF model directory (config.json + *.safetensors)") from exc
    if not config.qlora:
        model.to(device)
    return model


def wrap_lora(model, config: TuneConfig, device: str, dtype: str) -> Wrapped:
    """The base frozen, LoRA adapters on the architecture's projections (or ``target_modules``)."""
    torch = require_torch()
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model_type = getattr(model.config, "model_type", "") or ""
    arch = arch_of(model_type)
    targets = lora_targets(arch, config.target_modules)
    if config.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    elif config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    torch.manual_seed(config.seed)  # LoRA A matrices are drawn here
    lora = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    try:
        peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise InvalidParameter(f"LoRA target modules {targets}: {exc}",
                               hint="list module names of this architecture with --target-modules") from exc
    _freeze(peft_model.get_base_model(), arch, targets)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    return Wrapped(peft_model, model_type, targets, device, dtype, trainable, total)


def _freeze(model, arch: Arch, targets: list[str] | str) -> None:
    """Keep the architecture's frozen parts (a vision tower, a projector) frozen and free of LoRA."""
    if not arch.frozen:
        return
    for name, param in model.named_parameters():
        if arch.is_frozen(name):
            if "lora_" in name:
                raise InvalidParameter(f"LoRA target modules {targets} reach {name.rsplit('.lora_', 1)[0]}, "
                                       f"outside the language model",
                                       hint="LoRA adapters for vLLM and llama.cpp cover the language model "
                                            "only: name its projections (q_proj, v_proj, ...)")
            param.requires_grad_(False)
