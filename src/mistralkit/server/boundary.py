"""What a request may name: the store's models and adapters, and files only inside the folders the
operator allowed (``serve --allow-model-paths DIR``).

Anyone who can send a request must not learn which files exist on the server, nor get any file
opened: a path outside those folders, or any path when there are none, is answered exactly as an
unknown name is, whether or not it exists.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelNotFound
from ..models import LocalModel, registry, store


def looks_like_path(ref: str) -> bool:
    """Decided by the text alone (never by looking on disk)."""
    return store.looks_like_path(ref, look=False)


def _unknown(kind: str, ref: str, dirs: tuple[Path, ...]) -> ModelNotFound:
    files = f", or a file under {', '.join(map(str, dirs))}" if dirs else ""
    return ModelNotFound(f"unknown {kind} {ref!r}",
                         hint=f"name one that `mistralkit models list` shows on the server{files}")


def allowed_file(ref: str, dirs: tuple[Path, ...], kind: str) -> Path:
    """The real path of ``ref`` when it lies inside one of ``dirs`` (symbolic links followed)."""
    try:
        given = Path(ref).expanduser()
    except RuntimeError:  # "~name/..." of a user this machine does not have
        raise _unknown(kind, ref, dirs) from None
    candidates = [given] if given.is_absolute() else [folder / given for folder in dirs]
    for candidate in candidates:
        real = candidate.resolve()
        if real.exists() and any(real.is_relative_to(folder) for folder in dirs):
            return real
    raise _unknown(kind, ref, dirs)


def model(ref: str, dirs: tuple[Path, ...]) -> LocalModel:
    ref = ref.strip()
    if looks_like_path(ref) and not ref.startswith("hf:") and registry.get(ref) is None:
        return store.resolve(str(allowed_file(ref, dirs, "model")))
    return store.resolve(ref, paths=False)


def adapter(ref: str, dirs: tuple[Path, ...]) -> Path:
    ref = ref.strip()
    if registry.get(ref) is not None:
        return store.resolve_adapter(ref)[0]
    if looks_like_path(ref):
        return allowed_file(ref, dirs, "adapter")
    raise _unknown("adapter", ref, dirs)
