"""What a model folder (Hugging Face layout) says about its prompts: the mistral-common tokenizer
it ships (``tekken.json``, ``tokenizer.model.v3``, or a ``tokenizer.model`` identical to one that
mistral-common ships) and its Jinja chat template. ``formats.select`` reads these for folders as it
reads GGUF metadata for files.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InvalidModelFile
from .mistral import TOKENIZER_FILES

# Files Mistral's HF repositories ship beside the weights -> tokenizer version (newest first).
MISTRAL_FILES = (("tokenizer.model.v7", "v7"), ("tokenizer.model.v3", "v3"), ("tokenizer.model.v2", "v2"),
                 ("tokenizer.model.v1", "v1"))
# tekken.json declares the instruct version it encodes; v7 and later (v11, v13) differ from v7
# only in tool calls and thinking, which mistralkit does not send (see formats/mistral.py).
TEKKEN_V3 = ("v1", "v2", "v3")


def _tekken_version(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config", {}).get("version")
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"{path} is not a readable tekken tokenizer: {exc}") from exc


def _same_bytes(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and a.read_bytes() == b.read_bytes()


def folder_mistral_version(folder: Path) -> str | None:
    """The mistral-common tokenizer of a model folder from its own files, or None."""
    if (folder / "tekken.json").is_file():
        return "tekken" if _tekken_version(folder / "tekken.json") in TEKKEN_V3 else "tekken-v7"
    for name, version in MISTRAL_FILES:
        if (folder / name).is_file():
            return version
    plain = folder / "tokenizer.model"  # Mistral 7B v0.1/v0.3 repos: the same file under its generic name
    if plain.is_file():
        shipped = _shipped_dir()
        for version in ("v1", "v2", "v3", "v7"):
            if _same_bytes(plain, shipped / TOKENIZER_FILES[version].file):
                return version
    return None


def _shipped_dir() -> Path:
    import mistral_common

    return Path(mistral_common.__file__).parent / "data"


def folder_chat_template(folder: Path) -> str | None:
    """The Jinja chat template a Hugging Face folder carries (chat_template.jinja or tokenizer_config.json)."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if not path.is_file():
            continue
        try:
            template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        except (OSError, ValueError, AttributeError) as exc:
            raise InvalidModelFile(
                f"{path} is not readable JSON: {exc}", hint="download the model folder again"
            ) from exc
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template:
            return template
    return None
