"""A GGUF file as a transformers model: dequantized by transformers (``gguf_file=``), and cached as
safetensors so that only the first load pays for it. Used by the transformers engine (inference) and
by ``tune`` (training on a GGUF base); neither owns it.
"""

from __future__ import annotations

import os
from typing import Any

from ..models.bundled import recorded_sha256

# GGUF files up to this size keep a dequantized copy in the cache (the 253 MB 270M model: ~1.1 GB of
# fp32); a larger one would fill the disk for a load that is rare on a CPU anyway.
CACHE_LIMIT = 768 << 20


def dequantized_dir(local, dtype_name: str):
    """Where the dequantized copy of a GGUF is cached: one folder per file version and dtype. A file
    whose hash the store recorded for exactly this stat (the embedded models) is named by that hash, so
    that copies of it (one per MISTRALKIT_HOME) name the same folder; any other by size and mtime."""
    from ..paths import cache_dir

    stat = local.path.stat()
    sha256 = recorded_sha256(local.path)
    version = f"{stat.st_size:x}-sha{sha256[:16]}" if sha256 else f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
    key = f"{local.path.stem.lower()}-{version}-{dtype_name}"
    return cache_dir() / "tune-bases" / key  # the folder's name predates inference using it


def load_gguf(auto, local, kwargs: dict[str, Any], cache: bool):
    """``auto.from_pretrained`` of the GGUF ``local`` (a LocalModel) with ``kwargs`` (``dtype`` among
    them): the first load parses the GGUF (tens of seconds for a 262k vocabulary), later ones read the
    cached copy in a second or two (``cache``: keep one; off for 4-bit loads, which are not plain)."""
    import shutil

    dtype_name = str(kwargs["dtype"]).removeprefix("torch.")
    folder = dequantized_dir(local, dtype_name)
    if cache and (folder / "config.json").is_file():
        return auto.from_pretrained(str(folder), **kwargs)
    model = auto.from_pretrained(str(local.path.parent), gguf_file=local.path.name, **kwargs)
    # The weights are plain tensors now; transformers still marks the model "quantized with gguf",
    # which forbids save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    if cache and local.path.stat().st_size <= CACHE_LIMIT:
        tmp = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")  # two processes may write at once
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            model.save_pretrained(str(tmp))
            if not (folder / "config.json").is_file():
                shutil.rmtree(folder, ignore_errors=True)
                tmp.rename(folder)  # whole or not at all
        except OSError:  # a full or read-only cache costs speed, not the run
            pass
        shutil.rmtree(tmp, ignore_errors=True)  # kept by another writer's copy, or failed
    return model
