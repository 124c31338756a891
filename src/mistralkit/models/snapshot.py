"""``models pull hf:OWNER/REPO``: a transformers model directory (config, safetensors, tokenizer) from the hub.

The repo's files are listed with ``GET {HF_ENDPOINT}/api/models/OWNER/REPO/revision/REV``; the ones a
transformers model directory needs are downloaded at the commit that listing names (so every file comes
from one commit) with the resumable, verified fetch of download.py into ``models/.partial/NAME@COMMIT/``.
Only when every file is there is the folder renamed to ``models/NAME/`` and registered (format ``hf``),
so a half-pulled repo is never visible; running the same pull again reuses the files already fetched.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ..errors import InvalidModelFile, InvalidParameter, ModelNotFound, StorageError
from . import registry, store
from .download import DownloadError, Progress, Remote, check_space, fetch, http_client, partial_dir, probe
from .download import refusal, unreachable
from .hashing import sha256_path
from .hub import HUB, Pulled, hub_endpoint, hub_headers, hub_offline, hub_url

# Besides the weights, what transformers reads from a model directory (params.json is Mistral's own format).
WANTED = frozenset({
    "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tekken.json", "chat_template.jinja", "chat_template.json",
    "tokenizer.model.v1", "tokenizer.model.v2", "tokenizer.model.v3", "tokenizer.model.v7",  # mistral-common's
})
REPO_OFFLINE_HINT = ("no network? to add a model folder without a network, copy it (config.json, *.safetensors, "
                     "tokenizer) onto this machine and run `mistralkit models import DIR` (HF_ENDPOINT sets a mirror)")


@dataclass(frozen=True)
class Snapshot:
    """A repo at one commit, and the files of it to download."""

    repo: str
    commit: str
    files: tuple[str, ...]


def select_files(repo: str, names: Iterable[str]) -> tuple[str, ...]:
    """The top-level files a transformers model directory needs; ``consolidated*.safetensors`` (Mistral's
    own format) only when the repo has no transformers weights, which makes it unusable here."""
    top = sorted(n for n in names if "/" not in n)
    weights = [n for n in top if n.endswith(".safetensors") and not n.startswith("consolidated")]
    if "config.json" not in top:
        ggufs = [n for n in top if n.lower().endswith(".gguf")]
        hint = (f"it holds GGUF files: pull one with hf:{repo}/{ggufs[0]}" if ggufs else
                "a transformers model repository holds config.json and *.safetensors")
        raise InvalidModelFile(f"{repo} has no config.json, so it is not a transformers model repository", hint=hint)
    if not weights:
        only = "only Mistral's consolidated.safetensors" if any(n.startswith("consolidated") for n in top) else "no"
        raise InvalidModelFile(f"{repo} has {only} transformers weights (model*.safetensors)",
                               hint="pick a repository with model*.safetensors, "
                                    "or a GGUF file with hf:OWNER/REPO/FILE.gguf")
    return tuple(n for n in top if n in WANTED) + tuple(weights)


def _gated_hint(repo: str) -> str:
    return f"{repo} may be gated: accept its license at {HUB}/{repo} and set HF_TOKEN to a token with access"


def list_repo(repo: str, revision: str, headers: dict[str, str]) -> Snapshot:
    """Ask the hub which files ``repo`` has at ``revision`` and which commit that is."""
    import httpx

    url = f"{hub_endpoint()}/api/models/{repo}/revision/{quote(revision, safe='')}"
    try:
        with http_client(headers) as client:
            response = client.get(url)
    except httpx.HTTPError as exc:
        raise unreachable(url, exc, REPO_OFFLINE_HINT) from exc
    code = response.headers.get("x-error-code", "")
    if response.status_code == 404 or code == "RepoNotFound":
        what = f"revision {revision!r} of {repo}" if code == "RevisionNotFound" else f"model repository {repo}"
        raise ModelNotFound(f"no {what} on the hub ({response.status_code})",
                            hint="check the OWNER/REPO spelling (a private repo needs HF_TOKEN; "
                                 "a local folder must exist)")
    if response.status_code >= 400:
        raise refusal(response.status_code, url, _gated_hint(repo))
    try:
        info = response.json()
        names = [sibling["rfilename"] for sibling in info.get("siblings") or []]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise DownloadError(f"{hub_endpoint()} did not answer with a model listing for {repo}",
                            hint="check HF_ENDPOINT") from exc
    return Snapshot(repo, str(info.get("sha") or revision), select_files(repo, names))


def _staging(name: str, commit: str) -> Path:
    """``models/.partial/NAME@COMMIT``; folders of other commits of the same name are stale, so dropped."""
    base = store.store_dir(name).name
    safe = "".join(c for c in commit if c.isalnum())[:12] or "head"
    staging = partial_dir() / f"{base}@{safe}"
    for stale in partial_dir().glob(f"{base}@*"):
        if stale != staging and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    try:
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write the model store: {exc.strerror}", hint="set MISTRALKIT_HOME") from exc
    return staging


def _publish(staging: Path, folder: Path) -> None:
    """Move the complete folder into place; a copy being replaced (--force) goes only once it is."""
    old = staging.with_name(staging.name + ".old")
    try:
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise StorageError(f"cannot move {staging} to {folder}: {exc.strerror}", hint="set MISTRALKIT_HOME") from exc


def _download(snapshot: Snapshot, name: str, staging: Path, headers: dict[str, str],
              progress: Progress | None) -> int:
    """Fetch every file of ``snapshot`` into ``staging``; returns the bytes an earlier attempt had kept."""
    denied = _gated_hint(snapshot.repo)
    remotes = [probe(hub_url(snapshot.repo, f, snapshot.commit), headers, denied, REPO_OFFLINE_HINT)
               for f in snapshot.files]
    sizes = [r.size for r in remotes]
    total = sum(s for s in sizes if s) if None not in sizes else None
    staged = [_staged_size(staging / f, r) for f, r in zip(snapshot.files, remotes)]
    check_space(partial_dir(), (total or 0) - sum(staged))
    done = kept = sum(staged)
    for file, remote, ready in zip(snapshot.files, remotes, staged):
        if ready:
            continue
        report = (lambda have, _, before=done: progress(before + have, total)) if progress else None
        fetched = fetch(remote, staging / file, f"{name}--{file}", headers, None, report, denied, REPO_OFFLINE_HINT)
        done += fetched.size
        kept += fetched.resumed_from
    if progress:
        progress(done, total)
    return kept


def _staged_size(path: Path, remote: Remote) -> int:
    """The size of a file an earlier attempt finished (fetch puts only verified files there), else 0."""
    if path.is_file() and remote.size in (None, path.stat().st_size):
        return path.stat().st_size
    path.unlink(missing_ok=True)
    return 0


def pull_repo(repo: str, revision: str = "main", progress: Progress | None = None, force: bool = False,
              name: str | None = None) -> Pulled:
    """Download a hub model repository as a transformers folder into the store and register it.

    >>> pull_repo("mistralai/Mistral-7B-Instruct-v0.3").name  # doctest: +SKIP
    'mistralai--mistral-7b-instruct-v0.3'
    """
    repo = store.hub_repo(f"hf:{repo.removeprefix('hf:')}") or ""
    if not repo:
        raise InvalidParameter("a hub repository is written OWNER/REPO", hint="e.g. hf:mistralai/Mistral-7B-v0.3")
    name = (name or store.hub_model_name(repo)).strip().lower()
    if not store.NAME_PATTERN.fullmatch(name):
        raise InvalidParameter(f"bad model name {name!r}", hint="pass --name with letters, digits, '.', '-', '_'")
    existing = registry.get(name)
    if existing and Path(existing.path).exists() and not force:
        return Pulled(existing.name, existing.path, existing.size, existing.sha256, already=True)
    if hub_offline():
        raise DownloadError(f"cannot download {repo}: offline mode is on (HF_HUB_OFFLINE)",
                            hint="unset HF_HUB_OFFLINE, or import a local model folder with `mistralkit models import`")
    headers = hub_headers()
    snapshot = list_repo(repo, revision, headers)
    staging = _staging(name, snapshot.commit)
    kept = _download(snapshot, name, staging, headers, progress)
    folder = store.store_dir(name)
    _publish(staging, folder)
    record = registry.Record(name=name, path=str(folder), format="hf", sha256=sha256_path(folder),
                             size=store.size_of(folder), source="hub", managed=True,
                             url=f"{hub_endpoint()}/{repo}/tree/{snapshot.commit}")
    registry.add(record)
    return Pulled(name, record.path, record.size, record.sha256, resumed_from=kept)


def resolve_or_pull(ref: str, progress: Progress | None = None) -> store.LocalModel:
    """Like ``store.resolve``, but ``OWNER/REPO`` or ``hf:OWNER/REPO`` is pulled first when not here.

    >>> resolve_or_pull("mistralai/Mistral-7B-v0.3").format  # doctest: +SKIP
    'hf'
    """
    repo = store.hub_repo(ref)
    if repo is None:
        return store.resolve(ref)
    name = store.hub_model_name(repo)
    record = registry.get(name)
    if record is None or not Path(record.path).exists():
        pull_repo(repo, progress=progress)
    return store.resolve(name)
