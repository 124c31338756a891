"""Checks a GGUF model and a LoRA adapter pass before llama.cpp is given them.

llama.cpp trusts its inputs: a file that is not an adapter, or an adapter for another model, can
crash the process (the server with it). Everything llama.cpp would reject, or die on, is checked
here from the headers alone: GGUF magic and complete tensor data (``read_info``), ``general.type``,
the adapter's architecture, and every LoRA pair's shapes against the model's tensor.
Messages never quote file content.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InvalidModelFile
from .gguf_info import GGUFInfo, read_info

ADAPTER_HINT = "pass a GGUF LoRA adapter made for this model (`mistralkit export RUN_DIR --gguf-adapter`)"


def check_model(info: GGUFInfo) -> None:
    """A GGUF that llama.cpp can load as a model (read_info has checked magic and size)."""
    if info.general_type == "adapter":
        raise InvalidModelFile(f"{info.path} is a LoRA adapter, not a model",
                               hint="load a base model and pass this file with --adapter")
    if not info.tensors:
        raise InvalidModelFile(f"{info.path} holds no tensors: it is not a model")


def check_adapter(path: str | Path, model: GGUFInfo) -> GGUFInfo:
    """The header of ``path`` when it is a LoRA adapter llama.cpp can apply to ``model``."""
    try:
        info = read_info(path)
    except InvalidModelFile as exc:
        raise InvalidModelFile(f"adapter: {exc.message}", hint=ADAPTER_HINT) from exc
    if info.general_type != "adapter" or info.get("adapter.type") != "lora":
        raise InvalidModelFile(f"{info.path} is a GGUF file but not a LoRA adapter", hint=ADAPTER_HINT)
    if info.architecture != model.architecture:
        raise InvalidModelFile(f"{info.path} is an adapter for a {info.architecture} model, "
                               f"not for {model.architecture}", hint=ADAPTER_HINT)
    base = {t.name: t.shape for t in model.tensors}
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    for number, tensor in enumerate(info.tensors, 1):
        stem, dot, part = tensor.name.rpartition(".")
        if not dot or part not in ("lora_a", "lora_b"):
            raise InvalidModelFile(f"{info.path}: tensor {number} is not a LoRA tensor", hint=ADAPTER_HINT)
        pairs.setdefault(stem, {})[part] = tensor.shape
    if not pairs:
        raise InvalidModelFile(f"{info.path} holds no LoRA tensors", hint=ADAPTER_HINT)
    for number, (stem, pair) in enumerate(pairs.items(), 1):
        _check_pair(f"{info.path}: LoRA pair {number}", pair, base.get(stem))
    return info


def _check_pair(where: str, pair: dict[str, tuple[int, ...]], target: tuple[int, ...] | None) -> None:
    """GGUF shapes list the fastest dimension first: A is (n_in, rank), B is (rank, n_out), W is (n_in, n_out).

    Tensor names are left out of the messages: they are the file's content.
    """
    if len(pair) != 2:
        raise InvalidModelFile(f"{where} has only one of lora_a and lora_b", hint=ADAPTER_HINT)
    if target is None:
        raise InvalidModelFile(f"{where} adapts a tensor the model does not have", hint=ADAPTER_HINT)
    a, b = pair["lora_a"], pair["lora_b"]
    if len(a) != 2 or len(b) != 2 or len(target) < 2 or a[1] != b[0] or a[0] != target[0] or b[1] != target[1]:
        raise InvalidModelFile(f"{where} has shapes A {list(a)}, B {list(b)} that do not fit the model's "
                               f"{list(target)}", hint=ADAPTER_HINT)


def check_loadable(model_path: str | Path, info: GGUFInfo | None, adapter: str | Path | None = None) -> None:
    """Everything llama.cpp is about to be given: the model (and the adapter, when there is one)."""
    info = info or read_info(model_path)
    check_model(info)
    if adapter is not None:
        check_adapter(adapter, info)
