"""The Hugging Face hub as mistralkit reaches it: the endpoint (``HF_ENDPOINT``), whether downloads are
off (``HF_HUB_OFFLINE``), the request headers (``HF_TOKEN``), a file's URL, and what a pull gives back.
Shared by pull.py (single files) and snapshot.py (whole model folders).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote

from .. import __version__

HUB = "https://huggingface.co"
TRUE = {"1", "true", "yes", "on"}


@dataclass
class Pulled:
    name: str
    path: str
    size: int
    sha256: str
    already: bool = False  # it was there: nothing downloaded
    resumed_from: int = 0
    reassembled: str = ""  # the embedded model, rebuilt from its package: missing, damaged or forced


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", HUB).rstrip("/")


def hub_offline() -> bool:
    return any(os.environ.get(var, "").lower() in TRUE for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_headers() -> dict[str, str]:
    from huggingface_hub import get_token  # HF_TOKEN, then the token file of `hf auth login`

    token = get_token()
    # identity: a gzipped small file would make Content-Length, sizes and Range offsets disagree
    return {"User-Agent": f"mistralkit/{__version__}", "Accept-Encoding": "identity",
            **({"Authorization": f"Bearer {token}"} if token else {})}


def hub_url(repo: str, file: str, revision: str = "main") -> str:
    return f"{hub_endpoint()}/{repo}/resolve/{quote(revision, safe='')}/{quote(file)}"
