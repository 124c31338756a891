"""Perplexity of a GGUF model (+ LoRA adapter) on a text file, scored by llama.cpp itself.

The file is a ``.txt`` (one text) or a ``.jsonl`` with one ``{"text": ...}`` object per line.
Each text is tokenized with the model's own tokenizer and cut into non-overlapping windows of at
most ``window - 1`` tokens; each window is evaluated as ``[BOS] + chunk`` on an empty KV cache, so
BOS predicts the first text token and every text token is scored exactly once (a model without
BOS uses windows of ``window`` tokens and cannot score the first token of each). Log-probabilities
come from a float64 log-softmax over llama.cpp's logits.

``logits_all`` keeps one float32 row per context position: ``window * n_vocab * 4`` bytes
(0.5 GB for window 512 with Gemma 3's 262k vocabulary), so large windows cost memory.

    from mistralkit.models import resolve
    result = perplexity(resolve(None), Path("notes.txt"), window=256)
    print(f"{result.perplexity:.2f} over {result.tokens_scored} tokens")
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InvalidParameter
from ..models import LocalModel
from ..text import problem

MIN_WINDOW = 16
TEXT_HINT = 'use a .txt file, or a .jsonl file with one {"text": "..."} object per line'


@dataclass
class Perplexity:
    model: str
    adapter: str | None
    file: str
    tokens_scored: int
    windows: int
    nll: float  # mean negative log-likelihood, nats per scored token
    perplexity: float  # exp(nll)
    window: int
    seconds: float  # wall time of the whole call: load, tokenize, evaluate

    def to_dict(self) -> dict:
        return asdict(self)


# --- input -----------------------------------------------------------------------------------

def _line_error(path: Path, line: int, message: str, hint: str | None = TEXT_HINT) -> InvalidParameter:
    return InvalidParameter(f"{path}:{line}: {message}", hint=hint)


def _jsonl_text(path: Path, line: int, raw: str) -> str:
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _line_error(path, line, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise _line_error(path, line, f"each line must be a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if isinstance(text, str) and (found := problem(text)) is not None:
        raise _line_error(path, line, f"text: not valid UTF-8 text ({found[1]} at character {found[0] + 1})")
    if not isinstance(text, str):
        got = "missing" if "text" not in obj else f"a {type(text).__name__}"
        raise _line_error(path, line, f"text: must be a string, got {got}")
    if not text.strip():
        raise _line_error(path, line, "text: empty text")
    return text


def _decode(path: Path, data: bytes, line: int = 0) -> str:
    try:
        return data.decode("utf-8-sig" if line <= 1 else "utf-8")
    except UnicodeDecodeError as exc:
        where = f"{path}:{line}" if line else str(path)
        raise InvalidParameter(f"{where}: not UTF-8 text (byte {exc.start + 1})") from None


def read_texts(path: Path) -> list[str]:
    """The texts of a ``.txt`` or ``.jsonl`` file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InvalidParameter(f"{path}: {'no such file' if not path.exists() else 'not a file'}",
                               hint="pass the path of a .txt or .jsonl file")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [_decode(path, path.read_bytes())]
    elif suffix == ".jsonl":
        texts = list(_jsonl_texts(path))
    else:
        raise InvalidParameter(f"{path}: cannot read {suffix or 'a file without extension'}", hint=TEXT_HINT)
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise InvalidParameter(f"{path}: no text to score (the file is empty)", hint=TEXT_HINT)
    return texts


def _jsonl_texts(path: Path) -> Iterator[str]:
    with path.open("rb") as handle:
        for line, data in enumerate(handle, 1):
            raw = _decode(path, data, line)
            if raw.strip():
                yield _jsonl_text(path, line, raw)


# --- model -----------------------------------------------------------------------------------

def check_window(model: LocalModel, window: int) -> None:
    if model.format != "gguf" or model.info is None:
        raise InvalidParameter(f"{model.name} is a {model.format} model; perplexity runs on GGUF files",
                               hint="pass a .gguf model (a name from `mistralkit models list` or a path)")
    arch = model.info.architecture
    limit = model.info.metadata.get(f"{arch}.context_length")
    if window < MIN_WINDOW:
        raise InvalidParameter(f"window {window} is too small", hint=f"use a window of {MIN_WINDOW} tokens or more")
    if limit and window > int(limit):
        raise InvalidParameter(
            f"window {window} is larger than {model.name}'s context length ({limit} tokens)",
            hint=f"use a window of {limit} tokens or less")


def _load(model: LocalModel, window: int, threads: int | None, adapter: Path | None):
    """An engine that keeps every position's logits, with a batch as large as the window."""
    from ..engines import load_engine, require

    engine = load_engine(model, n_ctx=window, n_batch=window, all_logits=True, threads=threads,
                         adapter=str(adapter) if adapter else None)
    require(engine, "logprobs", "perplexity")
    return engine


def bos_token(engine) -> int | None:
    """The BOS id when the model has one and its tokenizer adds it, else None."""
    return engine.bos_id if engine.add_bos else None


# --- scoring ---------------------------------------------------------------------------------

def windows_of(tokens: list[int], window: int, bos: int | None) -> Iterator[list[int]]:
    """Evaluation windows of one text: [BOS] + up to window-1 tokens, or up to window tokens without BOS."""
    size = window - 1 if bos is not None else window
    for start in range(0, len(tokens), size):
        chunk = tokens[start:start + size]
        if bos is not None:
            yield [bos, *chunk]
        elif len(chunk) > 1:  # a lone token without BOS has nothing to be predicted from
            yield chunk


def _tokens(engine, text: str) -> list[int]:
    return engine.tokenize(text, special=False)


def _score_window(engine, tokens: list[int]) -> float:
    """Sum of log P(token | the window before it), each window on a fresh cache."""
    return math.fsum(engine.logprobs(tokens, 1))


def perplexity(model: LocalModel, path: Path, *, adapter: str | None = None, window: int = 512,
               threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> Perplexity:
    """Perplexity of ``model`` (+ ``adapter``, a GGUF LoRA name or path) on the texts of ``path``."""
    from ..models.store import resolve_adapter

    started = time.perf_counter()
    check_window(model, window)
    if threads is not None and threads < 1:
        raise InvalidParameter(f"threads {threads}: must be 1 or more")
    texts = read_texts(Path(path))
    adapter_path = resolve_adapter(adapter)[0] if adapter else None
    engine = _load(model, window, threads, adapter_path)
    try:
        bos = bos_token(engine)
        batches = [chunk for text in texts for chunk in windows_of(_tokens(engine, text), window, bos)]
        if not batches:
            raise InvalidParameter(f"{path}: the text is too short to score", hint="give it at least two tokens")
        logprob, scored = 0.0, 0
        for done, tokens in enumerate(batches, 1):
            logprob += _score_window(engine, tokens)
            scored += len(tokens) - 1
            if progress is not None:
                progress(done, len(batches))
    finally:
        engine.close()
    nll = -logprob / scored
    return Perplexity(model=model.name, adapter=adapter, file=str(path), tokens_scored=scored,
                      windows=len(batches), nll=nll, perplexity=math.exp(nll) if nll < 700 else math.inf,
                      window=window, seconds=round(time.perf_counter() - started, 4))
