"""Inference engines. Each backend is one module implementing ``base.Engine``."""

from .base import Chunk, Completion, Engine, GenerationParams, Usage, complete

__all__ = ["Chunk", "Completion", "Engine", "GenerationParams", "Usage", "complete", "load_engine"]


def load_engine(model, **options) -> Engine:
    """Load ``model`` (a LocalModel) with the engine its format calls for (GGUF -> llama.cpp)."""
    from .llamacpp import LlamaCppEngine

    from ..errors import InvalidModelFile

    backends = {"gguf": LlamaCppEngine}
    if model.format not in backends:
        raise InvalidModelFile(f"{model.name} is a {model.format} model; chat and serve run GGUF files",
                               hint="use a .gguf model (`mistralkit models list`)")
    return backends[model.format](model, **options)
