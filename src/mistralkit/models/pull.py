"""``models pull``: catalog names and ``hf:OWNER/REPO/FILE`` through the Hugging Face hub, or a plain URL.

``hf:OWNER/REPO`` (no file) pulls a whole transformers model folder: see snapshot.py.

The hub is reached at ``HF_ENDPOINT`` (default https://huggingface.co) with ``HF_TOKEN`` (or the token
saved by ``hf auth login``); ``HF_HUB_OFFLINE=1`` turns downloads off. Files are verified against the
catalog's sha256, else the sha256 the hub publishes for the file, else a ``--sha256`` given by the
user, and then recorded so ``models verify`` can check them later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .. import __version__
from ..errors import InvalidModelFile, InvalidParameter, ModelNotFound
from . import catalog, registry, store
from .download import DownloadError, Progress, discard, fetch, probe
from .hub import HUB, Pulled, hub_headers, hub_offline, hub_url

OFFLINE_HINT = (
    "no network? mistralkit runs offline with the embedded model; to add a model without a "
    "network, copy its .gguf onto this machine and run `mistralkit models import PATH` (HF_ENDPOINT sets a mirror)"
)


@dataclass(frozen=True)
class Target:
    """Where a reference downloads from and what it is called once here."""

    name: str
    url: str
    file: str
    hub_repo: str | None
    sha256: str | None
    quant: str | None
    source: str  # catalog, url
    title: str


def target(ref: str, name: str | None = None, sha256: str | None = None) -> Target:
    """Turn a catalog name, ``hf:OWNER/REPO/FILE`` or an http(s) URL into a download target."""
    ref = ref.strip()
    if ref.startswith(("http://", "https://")):
        file = Path(urlparse(ref).path).name
        if not file:
            raise InvalidParameter(f"the URL {ref} does not end with a file name")
        return Target(_name(name, file), ref, file, None, sha256, None, "url", file)
    if ref.startswith("hf:"):
        owner, _, rest = ref[3:].partition("/")
        repo_name, _, file = rest.partition("/")
        if not (owner and repo_name and file):
            raise InvalidParameter(f"bad hub reference {ref!r}",
                                   hint="write hf:OWNER/REPO/FILE.gguf for a file, hf:OWNER/REPO for a model folder")
        repo = f"{owner}/{repo_name}"
        return Target(_name(name, Path(file).name), hub_url(repo, file), Path(file).name, repo, sha256, None,
                      "url", f"{repo}/{file}")
    found = catalog.lookup(ref)
    if found is None:
        raise ModelNotFound(f"unknown model {ref!r}", hint="see `mistralkit models list --available`, "
                            "or pull hf:OWNER/REPO/FILE.gguf, hf:OWNER/REPO or an https:// URL")
    entry, quant = found
    spec = entry.files[quant]
    return Target(entry.ref(quant), hub_url(entry.repo, spec.file), spec.file, entry.repo,
                  spec.sha256 or sha256, quant, "catalog", f"{entry.title} {quant.upper()}")


def _name(name: str | None, file: str) -> str:
    chosen = (name or Path(file).stem).lower()
    if not store.NAME_PATTERN.fullmatch(chosen):
        raise InvalidParameter(f"bad model name {chosen!r}", hint="pass --name with letters, digits, '.', '-', '_'")
    return chosen


def pull(ref: str, progress: Progress | None = None, force: bool = False, name: str | None = None,
         sha256: str | None = None) -> Pulled:
    """Download one model into the store (resuming a partial download) and register it."""
    if ref.startswith("hf:") and ref.count("/") == 1:
        from .snapshot import pull_repo

        if sha256:
            raise InvalidParameter("--sha256 checks one file", hint="a repo pull checks each file against the hub")
        return pull_repo(ref, progress=progress, force=force, name=name)
    found = catalog.lookup(ref) if not ref.startswith(("http://", "https://", "hf:")) else None
    if found and found[0].files[found[1]].bundled:
        return _pull_bundled(found[0], found[1], force)
    goal = target(ref, name, sha256)
    existing = registry.get(goal.name)
    if existing and Path(existing.path).exists() and not force:
        return Pulled(existing.name, existing.path, existing.size, existing.sha256, already=True)
    on_hub = goal.hub_repo is not None
    if on_hub and hub_offline():
        raise DownloadError(f"cannot download {goal.name}: offline mode is on (HF_HUB_OFFLINE)",
                            hint="unset HF_HUB_OFFLINE, or import a local file with `mistralkit models import`")
    headers = hub_headers() if on_hub else {"User-Agent": f"mistralkit/{__version__}"}
    denied = (f"{goal.title} may be gated: accept its license at {HUB}/{goal.hub_repo} and set HF_TOKEN "
              "to a token with access" if on_hub else "the server wants credentials this URL does not carry")
    remote = probe(goal.url, headers, denied, OFFLINE_HINT)
    dest = store.store_dir(goal.name) / goal.file
    fetched = fetch(remote, dest, goal.name, headers, goal.sha256, progress, denied, OFFLINE_HINT)
    _check_usable(fetched.path)
    registry.add(registry.Record(name=goal.name, path=str(fetched.path), format="gguf", sha256=fetched.sha256,
                                 size=fetched.size, source=goal.source, managed=True, quant=goal.quant,
                                 url=goal.url))
    return Pulled(goal.name, str(fetched.path), fetched.size, fetched.sha256, resumed_from=fetched.resumed_from)


def _pull_bundled(entry: catalog.CatalogEntry, quant: str, force: bool) -> Pulled:
    """A model that ships in a Python package: a GGUF is hashed in full and re-assembled when damaged
    (always with ``force``); a packaged folder is only located."""
    if entry.files[quant].format != "gguf":
        model = store.resolve(entry.ref(quant))
        return Pulled(model.name, str(model.path), store.size_of(model.path), "", already=True)
    from .bundled import repair

    done = repair(force=force, full=True)
    return Pulled(entry.ref(quant), str(done.path), done.size, done.sha256, already=not done.reason,
                  reassembled=done.reason)


def _check_usable(path: Path) -> None:
    from .gguf_info import read_info

    if path.suffix.lower() != ".gguf":
        return
    try:
        read_info(path)
    except InvalidModelFile:
        path.unlink(missing_ok=True)
        raise


def cancel(ref: str) -> bool:
    """Forget a partial download of ``ref``."""
    return discard(target(ref).name)
