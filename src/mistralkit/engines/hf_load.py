"""Loading for the transformers engine: device, dtype, 4/8-bit quantization, architecture, adapter.

The class that runs a model comes from its config's ``model_type`` through ``hf_arch.ARCHS`` (the
table training uses too). A GGUF (the base of a tune run) is dequantized by ``gguf_hf.load_gguf``,
which caches small ones as safetensors. Adapters are PEFT folders attached with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import (
    InsufficientMemory,
    InvalidModelFile,
    InvalidParameter,
    MissingDependency,
    ModelNotFound,
)
from ..models.store import LocalModel
from .hf_arch import ARCHS

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "gpu", "cuda", "mps")
DEVICE_HINT = "use --device auto, cpu, gpu, cuda or mps"
QUANTS = (4, 8)
QUANT_FIX = "--quant needs a CUDA GPU and `pip install bitsandbytes`"
TORCH_HINT = "pip install 'mistralkit[tune]'"

def require_torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"the transformers engine needs torch and transformers ({exc.name} is missing)",
                                hint=TORCH_HINT) from exc
    return torch


def pick_device(device: str | None) -> str:
    """``auto`` -> cuda, else mps, else cpu; ``gpu`` -> cuda or mps; what is asked must be here."""
    torch = require_torch()
    wanted = (device or "auto").strip().lower()
    cuda = torch.cuda.is_available()
    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if wanted == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if wanted == "cpu":
        return "cpu"
    if wanted == "gpu" and (cuda or mps):
        return "cuda" if cuda else "mps"
    if wanted in ("gpu", "cuda") and not cuda:
        build = "" if torch.version.cuda else f" (torch {torch.__version__} is a CPU-only build)"
        kind = "CUDA or Apple (MPS) GPU" if wanted == "gpu" else "CUDA GPU"
        raise InvalidParameter(f"device={wanted}, but torch sees no {kind} here{build}",
                               hint="use --device auto or cpu, or install a CUDA build of torch")
    if wanted == "cuda":
        return "cuda"
    if wanted == "mps":
        if not mps:
            raise InvalidParameter("device=mps, but torch sees no Apple GPU (MPS) here",
                                   hint="use --device auto or cpu")
        return "mps"
    raise InvalidParameter(f"device={device!r}: unknown device", hint=DEVICE_HINT)


def pick_dtype(device: str):
    """bf16 on CUDA GPUs that have it, fp16 on older ones and on MPS, fp32 on a CPU."""
    torch = require_torch()
    if device == "cuda":
        return torch.bfloat16 if native_bf16(torch) else torch.float16
    return torch.float16 if device == "mps" else torch.float32


def native_bf16(torch) -> bool:
    """Whether the GPU computes in bf16 itself (Ampere and later), not through slow emulation."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch before 2.3 had no emulation to leave out
        return bool(torch.cuda.is_bf16_supported())


def quantization(quant: int | None, device: str, dtype) -> Any:
    """The ``BitsAndBytesConfig`` of ``--quant 4`` (NF4, double quantization) or ``--quant 8``."""
    if quant is None:
        return None
    if isinstance(quant, bool) or quant not in QUANTS:
        raise InvalidParameter(f"quant={quant!r}: must be 4 or 8", hint="--quant 4 (NF4) or --quant 8")
    if device != "cuda":
        raise InvalidParameter(f"--quant {quant} loads through bitsandbytes on a CUDA GPU; this model runs on {device}",
                               hint=f"{QUANT_FIX}; or drop --quant")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise MissingDependency(f"--quant {quant} needs bitsandbytes, which is not installed",
                                hint=QUANT_FIX) from exc
    from transformers import BitsAndBytesConfig

    if quant == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def read_config(model: LocalModel) -> dict[str, Any]:
    """config.json of an HF folder ({} for a GGUF, whose config transformers builds from metadata)."""
    if model.format == "gguf":
        return {}
    path = model.path / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"{path} is not readable JSON: {exc}",
                               hint="download the model folder again") from exc


def context_limit(model: LocalModel, config: dict[str, Any]) -> int | None:
    """max_position_embeddings (of the text model, for vision-language configs), or the GGUF's."""
    if model.format == "gguf":
        return model.info.context_length if model.info is not None else None
    text = config.get("text_config") or config
    limit = text.get("max_position_embeddings") or config.get("max_position_embeddings")
    return int(limit) if limit else None


def model_class(model_type: str, where: Path):
    if model_type not in ARCHS:
        raise InvalidModelFile(f"{where}: the transformers engine does not run {model_type or 'unnamed'!r} models",
                               hint=f"supported model_type values: {', '.join(sorted(ARCHS))}")
    import transformers

    return getattr(transformers, ARCHS[model_type].loader)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """No "Loading weights" bars while the engine loads (chat and the server own the terminal)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_weights(model: LocalModel, config: dict[str, Any], device: str, dtype, quant_config) -> Any:
    """The transformers model of an HF folder (class by ``model_type``) or of a GGUF, on ``device``."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    cls = AutoModelForCausalLM if model.format == "gguf" else model_class(config.get("model_type", ""), model.path)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quant_config is not None:
        kwargs["quantization_config"] = quant_config
    if device == "cuda":  # straight onto the GPU, without a full copy in host memory first
        kwargs["device_map"] = {"": 0}
    try:
        with _quiet_progress():
            if model.format == "gguf":
                from .gguf_hf import load_gguf

                net = load_gguf(cls, model, kwargs, cache=quant_config is None)
            else:
                net = cls.from_pretrained(str(model.path), **kwargs)
        if "device_map" not in kwargs:
            net.to(device)
    except ImportError as exc:  # transformers' own check of bitsandbytes / accelerate
        raise MissingDependency(f"loading {model.name} needs {_first_line(exc)}",
                                hint=QUANT_FIX if quant_config is not None else TORCH_HINT) from exc
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        if "out of memory" in str(exc).lower():
            raise InsufficientMemory(f"{model.name} does not fit in the {device} memory: {_first_line(exc)}",
                                     hint="use --quant 4 on a CUDA GPU, a smaller model, or --device cpu") from exc
        raise InvalidModelFile(f"transformers could not load {model.path}: {_first_line(exc)}",
                               hint="the folder needs config.json and every *.safetensors file it lists; "
                                    "download it again") from exc
    return net.eval()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip()[:300] if lines else type(exc).__name__


# --- adapters --------------------------------------------------------------------------------

def adapter_folder(ref: str) -> Path:
    """A PEFT adapter folder from a path, a tune run folder or a registered name; GGUF LoRAs refused."""
    from ..models import registry
    from ..tune.export import find_peft_dir

    record = registry.get(ref)
    path = Path(record.path) if record else Path(ref).expanduser()
    if (record is not None and record.format == "gguf-adapter") or path.suffix.lower() == ".gguf":
        raise InvalidParameter(f"{ref} is a GGUF LoRA adapter, which only llama.cpp applies",
                               hint="use it on its GGUF base (--model BASE.gguf --adapter ...), or give this model "
                                    "the PEFT adapter folder (a tune run's adapter/)")
    if not path.exists():
        raise ModelNotFound(f"adapter {ref!r} not found",
                            hint="pass a PEFT adapter folder (adapter_config.json + adapter_model.safetensors) "
                                 "or a `mistralkit tune` run folder")
    folder = find_peft_dir(path)
    if not any((folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise InvalidParameter(f"{folder} has adapter_config.json but no adapter_model.safetensors",
                               hint="save the adapter with peft's save_pretrained")
    return folder


def _recorded_base(folder: Path) -> str:
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    return str(config.get("base_model_name_or_path") or "")


def _key(name: str) -> str:
    """A name loosely: ``mistralai/Mistral-7B-v0.3``, ``mistralai--mistral-7b-v0.3``, ``/m/Mistral-7B-v0.3/``."""
    last = name.strip().rstrip("/\\").replace("\\", "/").split("/")[-1].lower()
    return last.split("--")[-1].removesuffix(".gguf")


# Sizes, not model_type: a GGUF base loads as "llama" where its HF folder says "mistral".
SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size")


def _shape_of(config: dict[str, Any]) -> dict[str, Any]:
    text = config.get("text_config") or config
    return {key: text.get(key, config.get(key)) for key in SHAPE_KEYS}


def _saved_lora_tensors(folder: Path) -> int | None:
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        return sum(".lora_" in key for key in weights.keys())  # noqa: SIM118 (safe_open is no dict)


SIZE_MISMATCH = re.compile(r"size mismatch for (\S+?)(?:\.default)?\.weight: copying a param with shape "
                           r"torch\.Size\((\[.*?\])\) from checkpoint, the shape in current model is "
                           r"torch\.Size\((\[.*?\])\)")


def _load_error(exc: Exception) -> str:
    """PEFT's load error in a few words: the first tensor whose shape differs, else its last line."""
    found = SIZE_MISMATCH.search(str(exc))
    if found:
        name, saved, here = found.groups()
        return f"{name.removeprefix('base_model.model.')} is {saved} in the adapter, {here} here"
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return lines[-1].strip()[:300]


def attach_adapter(net, folder: Path, ref: str, model: LocalModel, config: dict[str, Any], *,
                   same_name: bool = True):
    """``net`` with the PEFT adapter in ``folder``; one made for another base is refused.

    Another architecture or size is an error (from the recorded base's config.json when it is
    here, else from PEFT's load); a base of another name only warns when ``same_name`` (an
    instruct model's adapter on its base model is legitimate).
    """
    from peft import PeftModel
    from safetensors import SafetensorError

    recorded = _recorded_base(folder)
    trained_for = recorded or "another model"

    def wrong(detail: str) -> InvalidParameter:
        return InvalidParameter(f"adapter {ref} was trained for {trained_for}, not {model.name} ({detail})",
                                hint=f"load it on the base it was trained on (--model {recorded or 'BASE'}), "
                                     "or train an adapter for this model")

    recorded_config = Path(recorded) / "config.json" if recorded else None
    if recorded_config is not None and recorded_config.is_file() and config:
        theirs, ours = _shape_of(json.loads(recorded_config.read_text(encoding="utf-8"))), _shape_of(config)
        differ = [k for k in SHAPE_KEYS if theirs[k] is not None and ours[k] is not None and theirs[k] != ours[k]]
        if differ:
            raise wrong(", ".join(f"{k} {theirs[k]} vs {ours[k]}" for k in differ))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            wrapped = PeftModel.from_pretrained(net, str(folder))
    except SafetensorError as exc:
        raise InvalidParameter(f"the adapter weights in {folder} are damaged: {_first_line(exc)}",
                               hint="save or copy the adapter again") from exc
    except (RuntimeError, ValueError, KeyError) as exc:
        raise wrong(_load_error(exc)) from exc
    for warning in caught:
        log.debug("peft: %s", warning.message)
    saved = _saved_lora_tensors(folder)
    attached = sum(".lora_" in name for name, _ in wrapped.named_parameters())
    if any("missing adapter keys" in str(w.message) for w in caught) or (saved is not None and saved != attached):
        counts = f": {saved} saved, {attached} here" if saved is not None else ""
        raise wrong(f"its LoRA tensors do not match this model's layers{counts}")
    if same_name and recorded and _key(recorded) not in {_key(model.name), _key(str(model.path))}:
        log.warning("adapter %s records the base %s; loading it on %s", ref, recorded, model.name)
    return wrapped.eval()
