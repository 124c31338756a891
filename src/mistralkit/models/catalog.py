"""Known models, as data. The full catalog (download sources, sizes, hashes) arrives with model
management; for now it names the embedded default and the Mistral models' tokenizer versions, so
that a Mistral GGUF gets mistral-common's exact tokens even when its metadata is ambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    file: str
    context_length: int
    mistral_tokenizer: str | None = None  # v1, v2, v3, v7, tekken; None = use the GGUF's template
    aliases: tuple[str, ...] = ()
    bundled: bool = False


ENTRIES: tuple[CatalogEntry, ...] = (
    CatalogEntry("gemma-3-270m", "Gemma 3 270M (Q4_K_M, embedded)", "gemma-3-270m-q4_k_m.gguf", 32768,
                 aliases=("default", "gemma-3-270m:q4_k_m", "gemma3-270m"), bundled=True),
    CatalogEntry("mistral-7b-instruct-v0.2", "Mistral 7B Instruct v0.2", "Mistral-7B-Instruct-v0.2-Q4_K_M.gguf",
                 32768, mistral_tokenizer="v1"),
    CatalogEntry("mistral-7b-instruct-v0.3", "Mistral 7B Instruct v0.3", "Mistral-7B-Instruct-v0.3-Q4_K_M.gguf",
                 32768, mistral_tokenizer="v3"),
    CatalogEntry("ministral-8b-instruct", "Ministral 8B Instruct 2410", "Ministral-8B-Instruct-2410-Q4_K_M.gguf",
                 32768, mistral_tokenizer="tekken"),
    CatalogEntry("mistral-nemo-instruct", "Mistral Nemo Instruct 2407", "Mistral-Nemo-Instruct-2407-Q4_K_M.gguf",
                 131072, mistral_tokenizer="tekken"),
)

DEFAULT_MODEL = "gemma-3-270m"
GET_MISTRAL_HINT = (
    "for a Mistral model, download a GGUF such as Mistral-7B-Instruct-v0.3-Q4_K_M.gguf and run "
    "`mistralkit chat --model /path/to/it.gguf`"
)


def find(name: str) -> CatalogEntry | None:
    """The entry whose name or alias is ``name`` (case-insensitive), ignoring a ``:q4_k_m`` suffix."""
    wanted = name.lower()
    base = wanted.split(":", 1)[0]
    for entry in ENTRIES:
        names = {entry.name, *entry.aliases}
        if wanted in names or base in names:
            return entry
    return None


def find_by_file(filename: str) -> CatalogEntry | None:
    lowered = filename.lower()
    return next((e for e in ENTRIES if e.file.lower() == lowered), None)
