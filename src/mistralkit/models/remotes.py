"""Named remote APIs (OpenAI-compatible, Anthropic) that ``--model NAME`` can point at.

A remote comes from one of three places (first wins for a name):

* the seed variables apps already keep in ``.env``: ``MODEL_TYPE=openai|anthropic|local``,
  ``OPENAI_API_KEY``, ``OPENAI_MODEL``, ``OPENAI_BASE_URL`` (default https://api.openai.com/v1),
  ``ANTHROPIC_API_KEY``, ``ANTHROPIC_MODEL``, ``ANTHROPIC_BASE_URL`` (default
  https://api.anthropic.com); they define the remotes ``openai`` and ``anthropic``;
* ``config.toml`` tables ``[remotes.NAME]`` (keys: api, base_url, model, key_env, flavor, ctx,
  timeout_s, retries, backoff_s);
* ``remotes.json`` next to ``config.toml``, written by ``add`` / ``mistralkit remotes add``.

Only the NAME of the variable holding a key is ever stored (``key_env``); the engine reads the key
from the environment at request time.

>>> Remote("gpt", "openai", "https://api.openai.com/v1", "gpt-4o-mini", key_env="OPENAI_API_KEY").flavor
'openai'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .. import paths
from ..errors import InvalidParameter

APIS = ("openai", "anthropic")
DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
# Request shapes an OpenAI-compatible server may want (see engines/remote_openai.py); anthropic is its own API.
FLAVORS = {"openai": ("openai", "mistral", "vllm"), "anthropic": ("anthropic",)}
# Hosted APIs that always want a key, and the variable their own SDKs read it from.
OFFICIAL_KEYS = {"api.openai.com": "OPENAI_API_KEY", "api.anthropic.com": "ANTHROPIC_API_KEY",
                 "api.mistral.ai": "MISTRAL_API_KEY"}
SEEDS = {  # MODEL_TYPE value -> (model variable, key variable, base-url variable)
    "openai": ("OPENAI_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_MODEL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
}
MODEL_TYPES = ("local", *SEEDS)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DEFAULT_CTX = 32768
REMOTES_FILE = "remotes.json"


def _fail(what: str, rule: str, hint: str) -> None:
    raise InvalidParameter(f"{what}: {rule}", hint=hint)


@dataclass(frozen=True)
class Remote:
    """One remote API and the model to ask there. ``flavor`` None: picked from the host."""

    name: str
    api: str  # "openai" (any OpenAI-compatible server) or "anthropic" (the Messages API)
    base_url: str  # OpenAI: up to /v1 (POST {base_url}/chat/completions); Anthropic: without /v1
    model: str  # the model name the remote knows
    key_env: str | None = None  # NAME of the environment variable holding the key (never the key)
    flavor: str | None = None  # openai, mistral (api.mistral.ai), vllm; anthropic for that API
    ctx: int | None = None  # context window in tokens (default 32768)
    timeout_s: float = 60.0  # longest wait for the next bytes of an answer
    retries: int = 2  # extra tries after a 429/5xx/connection error, before any text came
    backoff_s: float = 1.0  # first wait between tries (doubles each time; Retry-After wins)

    def __post_init__(self) -> None:
        hint = f"fix remote {self.name!r} (`mistralkit remotes list` shows where it is defined)"
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            _fail(f"remote name {self.name!r}", "use letters, digits, '.', '-' and '_' (64 at most)", hint)
        if self.api not in APIS:
            _fail(f"remote {self.name!r}: api={self.api!r}", f"must be one of {', '.join(APIS)}", hint)
        url = urlsplit(self.base_url) if isinstance(self.base_url, str) else None
        if url is None or url.scheme not in ("http", "https") or not url.hostname or url.query or url.username:
            _fail(f"remote {self.name!r}: base_url", "must be an http(s) URL without query or user (e.g. "
                  f"{DEFAULT_URLS[self.api]})", hint)
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if not isinstance(self.model, str) or not self.model.strip():
            _fail(f"remote {self.name!r}: model", "must name the model to ask for on that server", hint)
        if self.key_env is not None and not (isinstance(self.key_env, str) and ENV_NAME.fullmatch(self.key_env)):
            # the value is not echoed: people paste the key itself here
            _fail(f"remote {self.name!r}: key_env", "must be the NAME of an environment variable that holds "
                  "the key (e.g. OPENAI_API_KEY), not the key", hint)
        flavor = self.flavor or ("mistral" if self.host == "api.mistral.ai" else self.api)
        if flavor not in FLAVORS[self.api]:
            _fail(f"remote {self.name!r}: flavor={flavor!r}", f"must be one of {', '.join(FLAVORS[self.api])}", hint)
        object.__setattr__(self, "flavor", flavor)
        if self.ctx is not None and (isinstance(self.ctx, bool) or not isinstance(self.ctx, int) or self.ctx < 64):
            _fail(f"remote {self.name!r}: ctx={self.ctx!r}", "must be a whole number >= 64", hint)
        if (
            isinstance(self.timeout_s, bool)
            or not isinstance(self.timeout_s, (int, float))
            or not 0 < self.timeout_s <= 3600
        ):
            _fail(f"remote {self.name!r}: timeout_s={self.timeout_s!r}", "must be in (0, 3600] seconds", hint)
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or not 0 <= self.retries <= 10:
            _fail(f"remote {self.name!r}: retries={self.retries!r}", "must be 0 to 10", hint)
        if (
            isinstance(self.backoff_s, bool)
            or not isinstance(self.backoff_s, (int, float))
            or not 0 <= self.backoff_s <= 60
        ):
            _fail(f"remote {self.name!r}: backoff_s={self.backoff_s!r}", "must be 0 to 60 seconds", hint)

    @property
    def host(self) -> str:
        return (urlsplit(self.base_url).hostname or "").lower()

    @property
    def is_loopback(self) -> bool:
        """The server runs on this machine (the text does not leave it)."""
        from ..http.runner import is_loopback

        return is_loopback(self.host)

    @property
    def needs_key(self) -> bool:
        """A hosted API that refuses every request without a key."""
        return self.host in OFFICIAL_KEYS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any], origin: str) -> Remote:
        """A remote from a ``[remotes.NAME]`` table or a ``remotes.json`` entry."""
        known = [f.name for f in fields(cls) if f.name != "name"]
        if not isinstance(table, Mapping):
            raise InvalidParameter(f"{origin}: remote {name!r} must be a table of settings",
                                   hint=f"keys: {', '.join(known)}")
        values = {key.replace("-", "_"): value for key, value in table.items()}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InvalidParameter(f"{origin}: remote {name!r} has unknown key {unknown[0]!r}",
                                   hint=f"known keys: {', '.join(known)}")
        values.setdefault("api", "openai")
        if values["api"] not in APIS:
            raise InvalidParameter(f"{origin}: remote {name!r}: api={values['api']!r}: must be one of "
                                   f"{', '.join(APIS)}", hint="openai for any OpenAI-compatible server")
        values.setdefault("base_url", DEFAULT_URLS[values["api"]])
        if "model" not in values:
            raise InvalidParameter(f"{origin}: remote {name!r} has no model",
                                   hint="add model = \"NAME\" (the model name that server knows)")
        try:
            remote = cls(name=name, **values)
        except TypeError as exc:
            raise InvalidParameter(f"{origin}: remote {name!r}: {exc}") from None
        except InvalidParameter as exc:
            raise InvalidParameter(f"{origin}: {exc.message}", hint=exc.hint) from None
        if "key_env" not in values:
            remote = _with_default_key(remote)
        return remote


def _with_default_key(remote: Remote) -> Remote:
    """A hosted API's usual key variable when none is named (OPENAI_API_KEY for api.openai.com...)."""
    default = OFFICIAL_KEYS.get(remote.host)
    if remote.key_env or not default:
        return remote
    return Remote(**{**remote.to_dict(), "key_env": default})


@dataclass
class RemoteModel:
    """A remote in the shape of ``LocalModel`` (the fields other code reads) for ``load_engine``.

    ``environ`` is where the engine reads the key and ``MISTRALKIT_OFFLINE`` (None: the process
    environment over ``./.env``, read at each request).
    """

    name: str
    remote: Remote
    format: str = "remote"
    path: None = None
    info: None = None
    entry: None = None
    quant: None = None
    is_default: bool = False
    mistral_tokenizer: None = None
    environ: Mapping[str, str] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class Listed:
    """A remote for ``mistralkit remotes list``: where it is defined, and whether its key is set."""

    remote: Remote
    source: str  # "environment", "config.toml" or "remotes.json"
    key_set: bool

    def to_dict(self) -> dict[str, Any]:
        return {**self.remote.to_dict(), "source": self.source, "key_set": self.key_set}


def _environ(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    from ..settings import environment

    return environment() if environ is None else environ


def remotes_file(config_file: Path | None = None) -> Path:
    """``remotes.json``, next to ``config.toml``."""
    return (config_file or paths.config_file()).parent / REMOTES_FILE


def model_type(environ: Mapping[str, str]) -> str:
    """``MODEL_TYPE`` (local when unset), checked."""
    kind = environ.get("MODEL_TYPE", "").strip().lower() or "local"
    if kind not in MODEL_TYPES:
        raise InvalidParameter(f"MODEL_TYPE={environ['MODEL_TYPE']!r}: must be one of {', '.join(MODEL_TYPES)}",
                               hint="fix MODEL_TYPE in the environment or .env")
    return kind


def seeded(kind: str, environ: Mapping[str, str]) -> Remote:
    """The ``openai`` or ``anthropic`` remote the seed variables define."""
    model_var, key_var, url_var = SEEDS[kind]
    model = environ.get(model_var, "").strip()
    if not model:
        raise InvalidParameter(f"MODEL_TYPE={kind} needs {model_var}, the model to ask {kind} for",
                               hint=f"set {model_var} in the environment or .env (or MODEL_TYPE=local)")
    url = environ.get(url_var, "").strip() or DEFAULT_URLS[kind]
    try:
        remote = Remote(kind, kind, url, model)
        # The key variable is the seed's convention, not one the user named: without it, a local
        # server is asked with no key (a remote that names its variable is refused when it is unset).
        if (environ.get(key_var) or "").strip() or remote.needs_key:
            remote = Remote(kind, kind, url, model, key_env=key_var)
        return remote
    except InvalidParameter as exc:
        raise InvalidParameter(f"{url_var}: {exc.message}", hint=f"fix {url_var} in the environment or .env") from None


def _read_toml(config_file: Path) -> dict[str, Remote]:
    from ..settings import read_config_file

    tables = read_config_file(config_file).get("remotes", {})
    if not isinstance(tables, dict):
        raise InvalidParameter(f"config file {config_file}: remotes must be tables [remotes.NAME]")
    return {name: Remote.from_table(name, table, f"config file {config_file}") for name, table in tables.items()}


def _read_json(file: Path) -> dict[str, Remote]:
    try:
        if not file.is_file():
            return {}
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidParameter(f"cannot read {file}: {exc.strerror}", hint="fix its permissions") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"{file} is not valid JSON: {exc}", hint="fix or delete it") from None
    tables = data.get("remotes") if isinstance(data, dict) else None
    if not isinstance(tables, dict):
        raise InvalidParameter(f"{file}: expected {{\"remotes\": {{NAME: {{...}}}}}}", hint="fix or delete it")
    return {name: Remote.from_table(name, table, str(file)) for name, table in tables.items()}


def configured(config_file: Path | None = None) -> dict[str, tuple[Remote, str]]:
    """Remotes of ``config.toml`` and ``remotes.json`` by name (config.toml wins), with their source."""
    config_file = config_file or paths.config_file()
    found = {name: (remote, REMOTES_FILE) for name, remote in _read_json(remotes_file(config_file)).items()}
    found.update({name: (remote, "config.toml") for name, remote in _read_toml(config_file).items()})
    return found


def lookup(ref: str | None, environ: Mapping[str, str] | None = None,
           config_file: Path | None = None) -> RemoteModel | None:
    """The remote ``ref`` names, or None when it is a local model (resolution goes on there).

    ``ref`` None: the remote ``MODEL_TYPE`` picks (None for local). So does ``ref`` equal to
    ``LOCAL_LLM_PATH``: the settings take that variable as the model, but ``MODEL_TYPE`` says whether
    it is the one to use. ``openai``/``anthropic``: the seed variables' remote, when defined.

    >>> lookup(None, environ={"MODEL_TYPE": "openai", "OPENAI_MODEL": "gpt-4o-mini"}).remote.base_url
    'https://api.openai.com/v1'
    """
    env = _environ(environ)
    ref = (ref or "").strip() or None
    if ref is None or ref == env.get("LOCAL_LLM_PATH", "").strip():
        kind = model_type(env)
        if kind in SEEDS:
            return RemoteModel(kind, seeded(kind, env), environ=environ)
        if ref is None:
            return None
    if not NAME.fullmatch(ref):  # a path, or a name remotes cannot have: skip the files
        return None
    if ref in SEEDS and (env.get("MODEL_TYPE", "").strip().lower() == ref or env.get(SEEDS[ref][0], "").strip()):
        return RemoteModel(ref, seeded(ref, env), environ=environ)
    found = configured(config_file).get(ref)
    return RemoteModel(ref, found[0], environ=environ) if found else None


def listing(environ: Mapping[str, str] | None = None, config_file: Path | None = None) -> list[Listed]:
    """Every remote defined, seed variables first, with its source and whether its key is set."""
    env = _environ(environ)
    rows: dict[str, tuple[Remote, str]] = dict(configured(config_file))
    for kind, (model_var, _, _) in SEEDS.items():
        if env.get(model_var, "").strip():
            rows[kind] = (seeded(kind, env), "environment")
    order = sorted(rows, key=lambda n: (rows[n][1] != "environment", n))
    return [Listed(rows[n][0], rows[n][1], bool(rows[n][0].key_env and env.get(rows[n][0].key_env)))
            for n in order]


def _write_json(file: Path, remotes: dict[str, Remote]) -> None:
    from ..files import write_text_atomic

    body = {"remotes": {name: {k: v for k, v in r.to_dict().items() if k != "name"} for name, r in remotes.items()}}
    write_text_atomic(file, json.dumps(body, indent=2, sort_keys=True) + "\n")


def add(remote: Remote, *, replace: bool = True, config_file: Path | None = None) -> Remote:
    """Save ``remote`` in ``remotes.json`` (a name ``config.toml`` defines, or a local model's, is refused).

    >>> add(Remote("vllm-7b", "openai", "http://127.0.0.1:8000/v1", "mistral-7b"))  # doctest: +SKIP
    """
    from . import catalog

    config_file = config_file or paths.config_file()
    if remote.name in _read_toml(config_file):
        raise InvalidParameter(f"remote {remote.name!r} is defined in {config_file}",
                               hint="edit it there, or pick another name")
    if catalog.find(remote.name) is not None:
        raise InvalidParameter(f"{remote.name!r} is the name of a catalog model", hint="pick another name")
    file = remotes_file(config_file)
    saved = _read_json(file)
    if remote.name in saved and not replace:
        raise InvalidParameter(f"remote {remote.name!r} exists already",
                               hint="pass --force to replace it, or remove it first")
    saved[remote.name] = _with_default_key(remote) if remote.key_env is None else remote
    _write_json(file, saved)
    return saved[remote.name]


def remove(name: str, *, config_file: Path | None = None) -> Remote:
    """Delete the remote ``name`` from ``remotes.json`` and return it."""
    config_file = config_file or paths.config_file()
    file = remotes_file(config_file)
    saved = _read_json(file)
    if name not in saved:
        where = (f"it is defined in {config_file}: edit it there" if name in _read_toml(config_file)
                 else "`mistralkit remotes list` shows the names")
        raise InvalidParameter(f"no remote {name!r} in {file}", hint=where)
    gone = saved.pop(name)
    _write_json(file, saved)
    return gone
