"""Local text embeddings: sentence-transformers models and GGUF models through llama.cpp.

One small contract (``EmbeddingEngine``) with one implementation per model format, picked from
``LocalModel.format`` through ``ENGINES``. ``load_embedder()`` returns an ``Embedder`` that stays loaded
across calls (the server keeps one); ``embed()`` is the one-shot form.

Texts longer than the model's limit (tokens per text) raise ``InvalidParameter`` naming the text,
its length and the limit, like the OpenAI API; ``truncate=True`` cuts them to the limit instead and
reports which were cut.

>>> from mistralkit import embed
>>> result = embed(["The cat sat on the mat.", "A kitten rests on a rug."])  # doctest: +SKIP
>>> result.dimensions, len(result.vectors), result.prompt_tokens  # doctest: +SKIP
(384, 2, 18)
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from .errors import Cancelled, InvalidModelFile, InvalidParameter, MissingDependency
from .models import LocalModel, resolve
from .models.catalog import DEFAULT_EMBEDDING_MODEL

__all__ = ["DEFAULT_BATCH_SIZE", "Embedder", "Embeddings", "cosine", "embed", "load_embedder"]

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
GGUF_MAX_TOKENS = 4096  # default cap on tokens per text for GGUF models (the model's context if smaller)
EMBED_EXTRA = "pip install 'mistralkit[embed]'"
# llama.cpp's enum llama_pooling_type; a GGUF records its own in ``{arch}.pooling_type``.
POOLING = {"mean": 1, "cls": 2, "last": 3}
NOT_SENTENCE_POOLING = {0: "returns one vector per token", 4: "is a reranker"}


@dataclass(frozen=True)
class Embeddings:
    """One vector per input text, in input order, with the token counts the model saw."""

    model: str
    vectors: list[list[float]]
    dimensions: int
    prompt_tokens: int
    token_counts: list[int] = field(default_factory=list)  # per text, after any truncation
    truncated: list[int] = field(default_factory=list)  # indices of texts cut to the model's limit
    normalized: bool = True


class EmbeddingEngine(Protocol):
    """What a backend provides: sizes, token counts, and vectors for texts that fit."""

    dimensions: int
    max_tokens: int  # per text

    def count_tokens(self, texts: Sequence[str]) -> list[int]: ...

    def encode(self, texts: Sequence[str], normalize: bool) -> list[list[float]]:
        """Vectors for ``texts``; a text over ``max_tokens`` is cut to it."""
        ...

    def close(self) -> None: ...


@contextmanager
def _hub_offline() -> Iterator[None]:
    """The hub off while sentence-transformers loads: its models are local directories here, and a
    stray network call would hang or fail on an offline machine. Restored after, for ``models pull``."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class SentenceTransformersEngine:
    """A sentence-transformers model directory (config.json + modules.json), on torch."""

    def __init__(self, model: LocalModel, *, pooling: str | None = None, max_tokens: int | None = None,
                 threads: int | None = None) -> None:
        if pooling is not None:
            raise InvalidParameter(f"{model.name} sets its own pooling; --pooling applies to GGUF models only")
        with _hub_offline():
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise MissingDependency(f"embedding with {model.name} needs sentence-transformers and torch, "
                                        f"which are not installed ({exc.name} is missing)", hint=EMBED_EXTRA) from exc
            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                self._model = SentenceTransformer(str(model.path), local_files_only=True)
            except (OSError, ValueError, KeyError) as exc:
                raise InvalidModelFile(f"sentence-transformers could not load {model.path}: {exc}",
                                       hint="reinstall the model, or check that the folder is complete") from exc
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        if threads:
            import torch

            torch.set_num_threads(threads)
        limit = self._model.max_seq_length
        self.max_tokens = min(limit, max_tokens) if max_tokens else limit
        self._model.max_seq_length = self.max_tokens
        self.dimensions = int(self._model.get_embedding_dimension())

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        ids = self._model.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False)
        return [len(row) for row in ids["input_ids"]]

    def encode(self, texts: Sequence[str], normalize: bool) -> list[list[float]]:
        vectors = self._model.encode(list(texts), batch_size=len(texts), show_progress_bar=False,
                                     normalize_embeddings=normalize, convert_to_numpy=True)
        return vectors.tolist()

    def close(self) -> None:
        self._model = None


def gguf_pooling(model: LocalModel, requested: str | None) -> int:
    """The pooling for a GGUF: the one asked for, else the one the file records, else refuse:
    a GGUF that records none is a chat model, whose pooled hidden states are rarely what people want."""
    if requested is not None:
        if requested.lower() not in POOLING:
            raise InvalidParameter(f"unknown pooling {requested!r}", hint=f"use one of: {', '.join(POOLING)}")
        return POOLING[requested.lower()]
    recorded = model.info.get(f"{model.info.architecture}.pooling_type") if model.info else None
    if recorded is not None and int(recorded) in POOLING.values():
        return int(recorded)
    if model.entry is not None and model.entry.kind == "embedding":
        return POOLING["mean"]
    why = NOT_SENTENCE_POOLING.get(int(recorded), "") if recorded is not None else "is a chat model"
    raise InvalidParameter(f"{model.name} {why or 'records no sentence pooling'}, not a sentence-embedding model",
                           hint=f"use {DEFAULT_EMBEDDING_MODEL} (the default), or pass --pooling mean "
                                "(pooling='mean') to pool its hidden states anyway")


class LlamaCppEmbeddingEngine:
    """A GGUF through llama.cpp with pooled sequence embeddings."""

    def __init__(self, model: LocalModel, *, pooling: str | None = None, max_tokens: int | None = None,
                 threads: int | None = None) -> None:
        from .engines.llama_native import gpu_layers, open_llama

        pooling_type = gguf_pooling(model, pooling)
        context = (model.info.context_length if model.info else None) or GGUF_MAX_TOKENS
        self.max_tokens = min(max_tokens or GGUF_MAX_TOKENS, context)
        # Non-causal models (BERT) need a whole text in one micro-batch, hence n_ubatch = n_ctx.
        self._llm = open_llama(model, n_ctx=self.max_tokens, threads=threads, purpose=" for embeddings",
                               embedding=True, pooling_type=pooling_type, n_batch=self.max_tokens,
                               n_ubatch=self.max_tokens, n_gpu_layers=gpu_layers("auto", None))
        self.dimensions = int(self._llm.n_embd())

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._llm.tokenize(text.encode("utf-8"))) for text in texts]  # as Llama.embed does

    def encode(self, texts: Sequence[str], normalize: bool) -> list[list[float]]:
        return [list(map(float, row)) for row in self._llm.embed(list(texts), normalize=normalize, truncate=True)]

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()


ENGINES: dict[str, type] = {
    "sentence-transformers": SentenceTransformersEngine,
    "gguf": LlamaCppEmbeddingEngine,
}


def check_texts(texts: Sequence[str]) -> list[str]:
    """Refuse what no model can embed: no texts, a bare string, non-strings, empty strings."""
    if isinstance(texts, str):
        raise InvalidParameter("texts must be a list of strings, not one string", hint="wrap it: [text]")
    texts = list(texts)
    if not texts:
        raise InvalidParameter("no text to embed", hint="pass one or more texts")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidParameter(f"text {index} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InvalidParameter(f"text {index} is empty", hint="drop empty texts before embedding")
    return texts


class Embedder:
    """A loaded embedding model, reusable across calls; ``close()`` (or ``with``) frees it."""

    def __init__(self, model: LocalModel, engine: EmbeddingEngine, load_s: float = 0.0) -> None:
        self.model = model
        self.engine = engine
        self.load_s = load_s

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def dimensions(self) -> int:
        return self.engine.dimensions

    @property
    def max_tokens(self) -> int:
        return self.engine.max_tokens

    def embed(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE, normalize: bool = True,
              truncate: bool = False, cancelled: Callable[[], bool] | None = None) -> Embeddings:
        """Embed ``texts`` in batches of ``batch_size``; see the module docstring for long texts.
        ``cancelled()`` is asked before each batch: once true, ``Cancelled`` is raised."""
        texts = check_texts(texts)
        if batch_size < 1:
            raise InvalidParameter(f"batch size must be at least 1, got {batch_size}")
        limit = self.engine.max_tokens
        counts = self.engine.count_tokens(texts)
        over = [i for i, n in enumerate(counts) if n > limit]
        if over and not truncate:
            first = over[0]
            raise InvalidParameter(
                f"text {first} has {counts[first]} tokens; {self.name} embeds at most {limit} per text"
                + (f" ({len(over)} texts are too long)" if len(over) > 1 else ""),
                hint="shorten or split it, or pass --truncate (truncate=True) to cut it")
        vectors: list[list[float]] = []
        for start in range(0, len(texts), batch_size):
            if cancelled is not None and cancelled():
                raise Cancelled(f"embedding stopped after {start} of {len(texts)} texts")
            vectors.extend(self.engine.encode(texts[start:start + batch_size], normalize))
        kept = [min(n, limit) for n in counts]
        return Embeddings(self.name, vectors, self.engine.dimensions, sum(kept), kept, over, normalize)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def default_embedding_model() -> str:
    """The ``embed_model`` setting (``MISTRALKIT_EMBED_MODEL``, ``EMBEDDINGS_MODEL``, config.toml), else
    the embedded all-MiniLM-L6-v2."""
    from .settings import load

    return load().settings.embed_model or DEFAULT_EMBEDDING_MODEL


def load_embedder(model: str | LocalModel | None = None, *, pooling: str | None = None, max_tokens: int | None = None,
         threads: int | None = None) -> Embedder:
    """Load an embedding model (default ``all-minilm-l6-v2``) with the engine its format calls for.

    ``pooling`` (mean, cls, last) applies to GGUF files; ``max_tokens`` lowers the per-text limit.
    """
    local = model if isinstance(model, LocalModel) else resolve(model or default_embedding_model())
    engine_type = ENGINES.get(local.format)
    if engine_type is None:
        raise InvalidParameter(f"{local.name} is a {local.format} model, not an embedding model",
                               hint=f"use {DEFAULT_EMBEDDING_MODEL}, a sentence-transformers folder or a .gguf")
    if max_tokens is not None and max_tokens < 1:
        raise InvalidParameter(f"max_tokens must be at least 1, got {max_tokens}")
    started = time.perf_counter()
    engine = engine_type(local, pooling=pooling, max_tokens=max_tokens, threads=threads)
    log.info("loaded %s for embeddings (%s, %d dims) in %.1fs", local.name, local.format, engine.dimensions,
             time.perf_counter() - started)
    return Embedder(local, engine, time.perf_counter() - started)


def embed(texts: Sequence[str], model: str | LocalModel | Embedder | None = None, *,
          batch_size: int = DEFAULT_BATCH_SIZE, normalize: bool = True, truncate: bool = False,
          pooling: str | None = None) -> Embeddings:
    """Embed ``texts`` with ``model`` (a name, path, LocalModel or loaded Embedder; default all-MiniLM-L6-v2).

    >>> embed(["hello", "bonjour"]).dimensions  # doctest: +SKIP
    384
    """
    texts = check_texts(texts)  # before loading anything
    if isinstance(model, Embedder):
        return model.embed(texts, batch_size=batch_size, normalize=normalize, truncate=truncate)
    with load_embedder(model, pooling=pooling) as embedder:
        return embedder.embed(texts, batch_size=batch_size, normalize=normalize, truncate=truncate)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
