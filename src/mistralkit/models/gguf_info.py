"""Read a GGUF file's metadata and tensor table without touching the weights.

The reader parses the header, the key/value metadata and the tensor descriptors (a few MB at most),
and skips long arrays such as the vocabulary, so it is fast even for 260k-token vocabularies. It
also checks that the file is long enough to hold every tensor it declares, which catches truncated
downloads before llama.cpp is asked to load them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import InvalidModelFile, ModelNotFound

MAGIC = b"GGUF"
# GGUF value types -> struct format (scalars); 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this are summarized by their length (vocabularies, merges, scores).
_KEEP_ARRAY_MAX = 64


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int


@dataclass
class GGUFInfo:
    """What mistralkit needs to know about a GGUF model before (or without) loading it."""

    path: Path
    version: int
    metadata: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[TensorInfo] = field(repr=False)
    data_offset: int
    file_size: int

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str:
        return str(self.get("general.architecture", "unknown"))

    @property
    def name(self) -> str | None:
        return self.get("general.name")

    @property
    def context_length(self) -> int | None:
        value = self.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str | None:
        return self.get("tokenizer.chat_template")

    @property
    def tokenizer_model(self) -> str | None:
        return self.get("tokenizer.ggml.model")

    @property
    def tokenizer_pre(self) -> str | None:
        return self.get("tokenizer.ggml.pre")

    @property
    def vocab_size(self) -> int:
        return self.array_lengths.get("tokenizer.ggml.tokens", 0)

    @property
    def general_type(self) -> str:
        return str(self.get("general.type", "model"))

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "architecture": self.architecture,
            "name": self.name,
            "context_length": self.context_length,
            "tokenizer_model": self.tokenizer_model,
            "vocab_size": self.vocab_size,
            "has_chat_template": self.chat_template is not None,
            "tensors": len(self.tensors),
            "file_size": self.file_size,
        }


class _Cursor:
    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle = handle
        self.path = path

    def read(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise InvalidModelFile(
                f"{self.path} is truncated: its GGUF header ends early",
                hint="the download was probably interrupted; download the file again",
            )
        return data

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        length = self.unpack("<Q")
        if length > 1 << 30:
            raise InvalidModelFile(f"{self.path} has a corrupt GGUF header (string of {length} bytes)")
        return self.read(length).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        self.handle.seek(n, 1)

    def value(self, kind: int, key: str, lengths: dict[str, int]) -> Any:
        if kind in _SCALARS:
            return self.unpack(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item_kind = self.unpack("<I")
            count = self.unpack("<Q")
            lengths[key] = count
            if count > _KEEP_ARRAY_MAX:
                self._skip_array(item_kind, count)
                return None
            return [self.value(item_kind, key, {}) for _ in range(count)]
        raise InvalidModelFile(f"{self.path} has a corrupt GGUF header (unknown value type {kind})")

    def _skip_array(self, item_kind: int, count: int) -> None:
        if item_kind in _SCALARS:
            self.skip(struct.calcsize(_SCALARS[item_kind]) * count)
        elif item_kind == _STRING:
            for _ in range(count):
                self.skip(self.unpack("<Q"))
        else:
            for _ in range(count):
                self.value(item_kind, "", {})


def read_info(path: str | Path) -> GGUFInfo:
    """Parse ``path``'s GGUF header; raise a people-facing error if it is not a usable GGUF."""
    path = Path(path)
    if not path.exists():
        raise ModelNotFound(f"model file not found: {path}", hint="check the path or pass a model name")
    if path.is_dir():
        raise InvalidModelFile(f"{path} is a directory, not a .gguf file", hint="pass the .gguf file inside it")
    try:
        with path.open("rb") as handle:
            return _parse(_Cursor(handle, path), path)
    except PermissionError as exc:
        raise InvalidModelFile(f"cannot read {path}: permission denied") from exc


def _parse(cur: _Cursor, path: Path) -> GGUFInfo:
    magic = cur.handle.read(4)
    if magic != MAGIC:
        raise InvalidModelFile(
            f"{path} is not a GGUF file",  # never quote its bytes: the path may be anyone's file
            hint="mistralkit runs GGUF models; convert safetensors with llama.cpp or download a .gguf",
        )
    version = cur.unpack("<I")
    if version < 2:
        raise InvalidModelFile(f"{path} uses GGUF version {version}, too old for llama.cpp", hint="re-convert it")
    n_tensors = cur.unpack("<Q")
    n_kv = cur.unpack("<Q")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("<I"), key, lengths)
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
        tensors.append(TensorInfo(name, shape, cur.unpack("<I"), cur.unpack("<Q")))
    alignment = int(metadata.get("general.alignment", 32))
    header_end = cur.handle.tell()
    data_offset = -(-header_end // alignment) * alignment
    file_size = path.stat().st_size
    info = GGUFInfo(path, version, metadata, lengths, tensors, data_offset, file_size)
    _check_complete(info)
    return info


def tensor_nbytes(tensor: TensorInfo) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType(tensor.ggml_type)]
    elements = 1
    for dim in tensor.shape:
        elements *= dim
    return elements // block * size


def _check_complete(info: GGUFInfo) -> None:
    if not info.tensors:
        return
    try:
        end = max(info.data_offset + t.offset + tensor_nbytes(t) for t in info.tensors)
    except (KeyError, ValueError) as exc:
        raise InvalidModelFile(f"{info.path} declares a tensor type this version does not know: {exc}") from exc
    if end > info.file_size:
        raise InvalidModelFile(
            f"{info.path} is truncated: {info.file_size:,} bytes on disk, {end:,} expected",
            hint="the download was probably interrupted; download the file again",
        )
