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

from ..errors import InvalidModelFile, InvalidParameter
from ..models import LocalModel
from ..models.checks import check_loadable
from ..text import problem

MIN_WINDOW = 16
ROWS_PER_STEP = 64  # logits rows converted to float64 at once: bounds the temporary to ~130 MB
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
    import llama_cpp

    from ..engines.llamacpp import default_threads, route_native_logs

    check_loadable(model.path, model.info, adapter)
    route_native_logs()
    n_threads = threads or default_threads()
    try:
        return llama_cpp.Llama(model_path=str(model.path), n_ctx=window, n_batch=window, logits_all=True,
                               n_threads=n_threads, n_threads_batch=n_threads, verbose=False,
                               lora_path=str(adapter) if adapter else None)
    except (ValueError, RuntimeError) as exc:
        raise InvalidModelFile(f"llama.cpp could not load {model.path}"
                               + (f" with the adapter {adapter}" if adapter else "") + f": {exc}",
                               hint="check that the adapter was exported for this base model") from exc


def bos_token(llm) -> int | None:
    """The BOS id when the model has one and its tokenizer adds it, else None."""
    import llama_cpp

    bos = llm.token_bos()
    adds = bool(llama_cpp.llama_vocab_get_add_bos(llm._model.vocab))
    return bos if bos >= 0 and adds else None


# --- scoring ---------------------------------------------------------------------------------

def target_logprob_sum(logits, targets) -> float:
    """Sum over rows of log_softmax(logits[i])[targets[i]], in float64, stable (max subtracted)."""
    import numpy as np

    total = 0.0
    for start in range(0, len(targets), ROWS_PER_STEP):
        rows = np.asarray(logits[start:start + ROWS_PER_STEP], dtype=np.float64)
        picked = np.asarray(targets[start:start + ROWS_PER_STEP])
        peak = rows.max(axis=1, keepdims=True)
        lse = peak[:, 0] + np.log(np.exp(rows - peak).sum(axis=1))
        total += float((rows[np.arange(len(picked)), picked] - lse).sum())
    return total


def windows_of(tokens: list[int], window: int, bos: int | None) -> Iterator[list[int]]:
    """Evaluation windows of one text: [BOS] + up to window-1 tokens, or up to window tokens without BOS."""
    size = window - 1 if bos is not None else window
    for start in range(0, len(tokens), size):
        chunk = tokens[start:start + size]
        if bos is not None:
            yield [bos, *chunk]
        elif len(chunk) > 1:  # a lone token without BOS has nothing to be predicted from
            yield chunk


def _tokens(llm, text: str) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def _score_window(llm, tokens: list[int]) -> float:
    llm.reset()  # the next eval drops the whole KV cache: each window starts fresh
    llm.eval(tokens)
    return target_logprob_sum(llm.scores[: len(tokens) - 1], tokens[1:])


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
    llm = _load(model, window, threads, adapter_path)
    try:
        bos = bos_token(llm)
        batches = [chunk for text in texts for chunk in windows_of(_tokens(llm, text), window, bos)]
        if not batches:
            raise InvalidParameter(f"{path}: the text is too short to score", hint="give it at least two tokens")
        logprob, scored = 0.0, 0
        for done, tokens in enumerate(batches, 1):
            logprob += _score_window(llm, tokens)
            scored += len(tokens) - 1
            if progress is not None:
                progress(done, len(batches))
    finally:
        llm.close()
    nll = -logprob / scored
    return Perplexity(model=model.name, adapter=adapter, file=str(path), tokens_scored=scored,
                      windows=len(batches), nll=nll, perplexity=math.exp(nll) if nll < 700 else math.inf,
                      window=window, seconds=round(time.perf_counter() - started, 4))
