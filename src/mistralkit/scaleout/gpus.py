"""How many GPUs vLLM would see, and a tensor-parallel size the model's attention heads allow.

vLLM splits the attention heads evenly across the GPUs of a tensor-parallel group, so the size must
divide ``num_attention_heads``; the key/value heads are split too, or replicated when there are fewer
of them than GPUs (then the size must be a multiple of them).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping

from ..errors import InvalidParameter


def visible_gpus(environ: Mapping[str, str] | None = None) -> int | None:
    """GPUs visible to a child process: ``CUDA_VISIBLE_DEVICES`` when set, else ``nvidia-smi -L``;
    None when neither says."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        count = 0
        for item in (part.strip() for part in listed.split(",")):
            if not item or item.startswith("-"):  # CUDA stops at the first invalid entry
                break
            count += 1
        return count
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def check_split(size: int, heads: int | None, kv_heads: int | None) -> str | None:
    """Why ``size`` GPUs cannot share the model's heads, or None when they can (or heads are unknown)."""
    if heads and heads % size:
        return f"{heads} attention heads do not split across {size} GPUs"
    if kv_heads and (kv_heads % size if kv_heads >= size else size % kv_heads):
        return f"{kv_heads} key/value heads do not split across (or replicate over) {size} GPUs"
    return None


def tensor_parallel(requested: int | None, gpus: int | None, heads: int | None,
                    kv_heads: int | None) -> tuple[int, str | None]:
    """(size, note): the size asked for (refused when it does not split the heads), else the largest
    size up to the visible GPUs that does."""
    if requested is not None:
        if requested < 1:
            raise InvalidParameter(f"--tensor-parallel-size {requested}: must be 1 or more")
        reason = check_split(requested, heads, kv_heads)
        if reason:
            good = [n for n in range(1, max(heads or 1, 1) + 1) if not check_split(n, heads, kv_heads)]
            raise InvalidParameter(f"--tensor-parallel-size {requested}: {reason}",
                                   hint=f"use one of {', '.join(map(str, good[:8]))}")
        if gpus is not None and requested > gpus:
            return requested, f"--tensor-parallel-size {requested} but {gpus} GPU(s) visible here"
        return requested, None
    if gpus == 0:
        return 1, "no GPU visible here (CUDA_VISIBLE_DEVICES is empty); vLLM needs a CUDA GPU"
    available = max(gpus or 1, 1)
    if gpus is None:
        return 1, "GPUs unknown here (no CUDA_VISIBLE_DEVICES, no nvidia-smi): tensor parallel size 1"
    if heads is None:  # not downloaded yet: head counts are multiples of a power of two, so that is safe
        size = 1 << (available.bit_length() - 1)
        why = "the largest power of two (heads unknown before download)"
    else:
        size = next(n for n in range(available, 0, -1) if not check_split(n, heads, kv_heads))
        why = "the largest the heads allow"
    return size, (f"{available} GPUs visible; tensor parallel size {size}, {why}" if size != available else None)
