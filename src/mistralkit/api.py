"""The public Python API: from settings to a loaded engine, and one-shot generation.

>>> from mistralkit import api
>>> loaded = api.load(api.load_settings({"max_tokens": 32, "greedy": True}).settings)
>>> api.run("Say hi", loaded).text  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .engines import Completion, Engine, GenerationParams, complete, load_engine
from .formats.base import Message
from .models import LocalModel, resolve
from .models.catalog import GET_MISTRAL_HINT
from .models.memory import check_before_load
from .models.store import hub_repo, resolve_adapter
from .settings import Settings
from .settings import load as load_settings

__all__ = ["Loaded", "load", "load_settings", "params_from", "run", "default_model_notice"]

log = logging.getLogger(__name__)


@dataclass
class Loaded:
    model: LocalModel
    engine: Engine
    settings: Settings

    def close(self) -> None:
        self.engine.close()


def params_from(settings: Settings) -> GenerationParams:
    return GenerationParams(
        max_tokens=settings.max_tokens, temperature=settings.temperature, top_p=settings.top_p,
        top_k=settings.top_k, min_p=settings.min_p, repeat_penalty=settings.repeat_penalty,
        seed=settings.seed, greedy=settings.greedy,
    )


def default_model_notice(model: LocalModel) -> str | None:
    """What a user chatting with an embedded model should know: which one, and how to get a real one."""
    if not model.is_default:
        return None
    entry = model.entry
    if entry.instruct:  # type: ignore[union-attr]
        return (f"Using the embedded default model {entry.title}: a tiny English chat model "  # type: ignore[union-attr]
                f"that ships with mistralkit; {GET_MISTRAL_HINT}.")
    return (f"Using the embedded default model {entry.title}: a base model, it continues text and does not "  # type: ignore[union-attr]
            f"chat; {GET_MISTRAL_HINT}.")


def load(settings: Settings, parallel: int = 1) -> Loaded:
    """Resolve ``settings.model``, check its memory plan, and load it with the matching engine
    (``parallel`` generations at once, where the engine batches: llama.cpp).

    ``settings.adapter`` (a GGUF LoRA adapter name or path) is applied on top; without a model, a
    registered adapter loads the base it was exported for.

    A model that would not fit in available memory logs a warning (raises ``InsufficientMemory``
    with ``strict_memory``) before llama.cpp allocates anything.
    """
    model = resolve_model(settings)
    adapter = None
    if settings.adapter and not (model.format == "hf-run" and not settings.model):  # the run is base + adapter
        adapter = resolve_adapter(settings.adapter)[0] if model.format == "gguf" else settings.adapter
    if model.format == "gguf" and settings.device in ("auto", "cpu") and not settings.n_gpu_layers:
        warning = check_before_load(model, settings.ctx, settings.kv_type, settings.strict_memory, parallel)
        if warning:  # the plan is for CPU memory
            log.warning(warning)
    engine = load_engine(model, **settings.engine_options(), adapter=str(adapter) if adapter else None,
                         parallel=parallel if parallel > 1 else None)
    return Loaded(model, engine, settings)


def resolve_model(settings: Settings):
    """The model ``settings`` name: a configured remote (or the one ``MODEL_TYPE`` picks), else a local
    model (a hub id is pulled first); without a model, a tuned run or a registered GGUF adapter's base,
    else the embedded default."""
    from .models.remotes import lookup

    remote = lookup(settings.model)
    if remote is not None:
        return remote
    adapter_base = None
    if settings.adapter and not settings.model:
        from .models.store import run_folder_model

        run = run_folder_model(settings.adapter)  # --adapter runs/x: the run's base with its adapter
        if run is not None:
            return run
        path, adapter_base = resolve_adapter(settings.adapter)
        adapter_base = adapter_base or embedded_base_for(path)
    if settings.model and hub_repo(settings.model):
        from .models.snapshot import resolve_or_pull

        return resolve_or_pull(settings.model)  # OWNER/REPO: pulled through the store the first time
    return resolve(settings.model or adapter_base)


def embedded_base_for(adapter: Path) -> str | None:
    """The embedded base model an adapter file fits, by its architecture (a Gemma 3 adapter: the
    embedded Gemma), when no base is recorded for it; None otherwise (the chat default is used)."""
    from .models import catalog
    from .models.gguf_info import read_info

    try:
        architecture = read_info(adapter).architecture
    except Exception:  # noqa: BLE001 - not readable here: loading it will say why
        return None
    base = resolve(catalog.BASE_MODEL)
    return catalog.BASE_MODEL if base.info is not None and base.info.architecture == architecture else None


def messages_for(prompt: str, system: str | None) -> list[Message]:
    head: list[Message] = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": prompt}]


def run(prompt: str, loaded: Loaded, on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None) -> Completion:
    """One answer to ``prompt`` (with the settings' system prompt), streamed to ``on_text``."""
    from .chat.conversation import fit

    params = params_from(loaded.settings)
    engine = loaded.engine
    fitted = fit(messages_for(prompt, loaded.settings.system), engine.count_tokens, engine.n_ctx,
                 params.max_tokens)
    return complete(engine, fitted.messages, params, cancel, on_text)
