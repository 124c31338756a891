"""What ``vllm serve`` is pointed at: a local weights folder (Mistral's own format or transformers'),
or a hub id that vLLM downloads itself.

Mistral's own format is ``params.json`` + ``consolidated*.safetensors`` (with ``tekken.json`` or
``tokenizer.model.v3``): vLLM reads it with ``--tokenizer-mode mistral --config-format mistral
--load-format mistral``. A transformers folder (``config.json`` + ``model*.safetensors``) needs none of
them. GGUF is refused: vLLM's GGUF loading is experimental; its HF weights or ``mistralkit serve`` do it.

>>> locate("mistralai/Mistral-7B-Instruct-v0.3").flags  # doctest: +SKIP
['--tokenizer-mode', 'mistral', '--config-format', 'mistral', '--load-format', 'mistral']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InvalidModelFile, InvalidParameter, ModelNotFound
from ..text import read_json_object

MISTRAL_FLAGS = ("--tokenizer-mode", "mistral", "--config-format", "mistral", "--load-format", "mistral")
MISTRAL_TOKENIZERS = ("tekken.json", "tokenizer.model.v*")
HF_TOKENIZERS = ("tokenizer.json", "tokenizer_config.json")
HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# Owners whose hub repositories ship Mistral's own format next to (or instead of) transformers'.
MISTRAL_OWNERS = ("mistralai",)
GGUF_HINT = ("serve the model's transformers weights (config.json + *.safetensors, or its mistralai/ hub id) "
             "with vLLM, or this GGUF with `mistralkit serve`")


@dataclass(frozen=True)
class Weights:
    """The model argument of ``vllm serve`` and what is known about it before vLLM loads it."""

    arg: str  # an absolute folder, or a hub id
    kind: str  # "mistral" (native folder), "hf" (transformers folder) or "hub"
    flags: tuple[str, ...] = ()  # --tokenizer-mode/--config-format/--load-format, when needed
    heads: int | None = None  # attention heads (None: not readable before download)
    kv_heads: int | None = None
    context: int | None = None  # the model's own longest context, when its config says

    @property
    def stem(self) -> str:
        """A short lowercase name: the folder's or the hub repository's."""
        return self.arg.rstrip("/").rsplit("/", 1)[-1].lower()


def locate(ref: str) -> Weights:
    """The weights ``ref`` names: a folder, a hub id (``OWNER/REPO`` or ``hf:OWNER/REPO``), or a model
    registered in the store as a transformers folder. A GGUF file or name is refused."""
    ref = ref.strip()
    if not ref:
        raise InvalidParameter("no model given", hint="pass a weights folder or a hub id such as "
                                                      "mistralai/Mistral-7B-Instruct-v0.3")
    path = Path(ref.removeprefix("hf:")).expanduser()
    if not ref.startswith("hf:") and path.exists():
        return _local(path)
    if ref.lower().endswith(".gguf"):
        raise _gguf(ref)
    repo = ref.removeprefix("hf:")
    if HUB_ID.fullmatch(repo):
        if repo.lower().endswith("gguf"):
            raise _gguf(repo)
        return _hub(repo)
    return _stored(ref)


def _hub(repo: str) -> Weights:
    """A hub id, passed to vLLM as is; its heads are known when the hub cache on this machine has its config."""
    mistral = repo.split("/")[0].lower() in MISTRAL_OWNERS
    config_file, shape = ("params.json", _params_shape) if mistral else ("config.json", _config_shape)
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo, config_file)
    except (ImportError, ValueError):
        cached = None
    found = shape(_read(Path(cached))) if isinstance(cached, str) else (None, None, None)
    return Weights(repo, "hub", MISTRAL_FLAGS if mistral else (), *found)


def _gguf(ref: str) -> InvalidModelFile:
    return InvalidModelFile(f"{ref} is a GGUF model; vLLM's GGUF support is experimental, so mistralkit does not "
                            "hand GGUF to vLLM", hint=GGUF_HINT)


def _stored(ref: str) -> Weights:
    """A name from ``mistralkit models list``: a pulled transformers folder is served; a GGUF is refused."""
    from ..models import catalog, registry

    record = registry.get(ref)
    if record is not None:
        if record.format != "hf":
            raise _gguf(ref) if record.format.startswith("gguf") else InvalidModelFile(
                f"{ref} is a {record.format} model, not a causal LM vLLM serves here")
        return _local(Path(record.path))
    if catalog.find(ref) is not None:  # the catalog's files are GGUF quantizations
        raise _gguf(ref)
    raise ModelNotFound(f"no model folder or hub id {ref!r}",
                        hint="pass a weights folder (params.json or config.json inside) or OWNER/REPO from the hub")


def _local(path: Path) -> Weights:
    path = path.resolve()
    if path.is_file():
        with path.open("rb") as handle:
            if handle.read(4) == b"GGUF" or path.suffix.lower() == ".gguf":
                raise _gguf(str(path))
        raise InvalidModelFile(f"{path} is a file; vLLM serves a weights folder",
                               hint="pass the folder that holds params.json or config.json")
    params, config = path / "params.json", path / "config.json"
    if params.is_file() and any(path.glob("consolidated*.safetensors")):
        return _from_params(path, _read(params))
    if config.is_file():
        if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
            raise InvalidModelFile(f"{path} has config.json but no weights (*.safetensors)",
                                   hint="copy the model's *.safetensors files next to config.json")
        return _from_config(path, _read(config))
    if any(path.glob("*.gguf")):
        raise _gguf(str(path))
    what = "params.json but no consolidated*.safetensors" if params.is_file() else "neither params.json nor config.json"
    raise InvalidModelFile(f"{path} holds {what}, so vLLM cannot load it",
                           hint="a Mistral-format folder holds params.json + consolidated*.safetensors; "
                                "a transformers folder config.json + model*.safetensors")


def _read(path: Path) -> dict[str, Any]:
    return read_json_object(path, InvalidModelFile)


def _int(data: dict[str, Any], *keys: str) -> int | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _params_shape(params: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(heads, key/value heads, context) from Mistral's params.json."""
    heads = _int(params, "n_heads")
    return heads, _int(params, "n_kv_heads") or heads, _int(params, "max_position_embeddings", "max_seq_len")


def _config_shape(config: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    """(heads, key/value heads, context) from transformers' config.json (``text_config`` for multimodal ones)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    heads = _int(text, "num_attention_heads") or _int(config, "num_attention_heads")
    return heads, _int(text, "num_key_value_heads") or heads, _int(text, "max_position_embeddings")


def _from_params(path: Path, params: dict[str, Any]) -> Weights:
    return Weights(str(path), "mistral", MISTRAL_FLAGS, *_params_shape(params))


def _from_config(path: Path, config: dict[str, Any]) -> Weights:
    # A transformers folder that ships only Mistral's tokenizer file still needs vLLM's Mistral tokenizer.
    only_mistral_tokenizer = (any(any(path.glob(p)) for p in MISTRAL_TOKENIZERS)
                              and not any((path / name).is_file() for name in HF_TOKENIZERS))
    return Weights(str(path), "hf", MISTRAL_FLAGS[:2] if only_mistral_tokenizer else (), *_config_shape(config))
