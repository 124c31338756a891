"""Opening llama.cpp: its native logs routed to Python logging, the threads and GPU layers to use,
and the one place a ``Llama`` (or a bare model) is made, with file checks and errors for people."""

from __future__ import annotations

import logging
import os

from ..errors import InvalidModelFile, InvalidParameter
from ..models.checks import check_loadable
from ..models.store import LocalModel

# ggml_log_level: 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 = continues the previous message.
_LLAMA_LOG_LEVELS = {0: logging.CRITICAL, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_native_log = logging.getLogger("llama.cpp")
_log_callback = None  # kept referenced: llama.cpp holds a raw pointer to it


def route_native_logs() -> None:
    """Send llama.cpp's own messages to Python logging (file, and console at --log-level)."""
    global _log_callback
    import ctypes

    import llama_cpp

    if _log_callback is not None:
        return
    last = [logging.DEBUG]

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level != 5:  # 5 continues the previous message
            last[0] = _LLAMA_LOG_LEVELS.get(level, logging.DEBUG)
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            _native_log.log(last[0], message)

    _log_callback = callback
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def default_threads() -> int:
    """Physical cores this process may use: llama.cpp's advice for decode (a second hyperthread on a
    core adds memory traffic, not speed)."""
    import psutil

    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        allowed = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or allowed
    logical = psutil.cpu_count(logical=True) or allowed
    # An affinity mask narrower than the machine: assume it keeps the same share of physical cores.
    return max(1, min(allowed, round(allowed * physical / logical)))


def gpu_layers(device: str, requested: int | None) -> int:
    """Layers to offload: none on CPU, all when the build can offload, unless the user says."""
    import llama_cpp

    has_gpu = bool(llama_cpp.llama_supports_gpu_offload())
    if device == "cpu":
        return 0
    if device in ("gpu", "cuda", "mps") and not has_gpu:
        backend = "-DGGML_METAL=on" if device == "mps" else "-DGGML_CUDA=on"
        raise InvalidParameter(
            f"device={device}, but this llama-cpp-python build has no GPU support",
            hint=f"reinstall it with CMAKE_ARGS='{backend}', or use --device cpu",
        )
    if requested is not None:
        return requested
    return -1 if has_gpu else 0


def open_llama(model: LocalModel, *, n_ctx: int, threads: int | None = None, adapter: str | None = None,
               purpose: str = "", **options):
    """The one place a ``llama_cpp.Llama`` is made: file checks, native logs, and errors for people.

    ``options`` go to ``Llama`` as they are (``embedding=True``, ``logits_all=True``, ``n_batch``...).
    """
    import llama_cpp

    check_loadable(model.path, model.info, adapter)
    route_native_logs()
    threads = threads or default_threads()
    try:
        return llama_cpp.Llama(model_path=str(model.path), n_ctx=n_ctx, n_threads=threads,
                               n_threads_batch=threads, verbose=False, lora_path=adapter, **options)
    except (ValueError, RuntimeError) as exc:
        raise InvalidModelFile(
            f"llama.cpp could not load {model.path}{purpose}" + (f" with the adapter {adapter}" if adapter else "")
            + f": {exc}",
            hint=("check that the adapter was exported for this base model" if adapter
                  else "the file may be corrupt or need a newer llama.cpp; download it again"),
        ) from exc


def load_model(model: LocalModel, *, n_gpu_layers: int, mmap: bool, mlock: bool, adapter: str | None):
    """The model's weights through llama.cpp's model API (no context): the batched engine's base."""
    import llama_cpp
    from llama_cpp._internals import LlamaModel

    check_loadable(model.path, model.info, adapter)
    route_native_logs()
    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = n_gpu_layers
    params.use_mmap, params.use_mlock = mmap, mlock
    try:
        return LlamaModel(path_model=str(model.path), params=params, verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise InvalidModelFile(f"llama.cpp could not load {model.path}: {exc}",
                               hint="the file may be corrupt or need a newer llama.cpp; download it again") from exc
