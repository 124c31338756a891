"""Typed settings with a documented precedence: CLI flag > environment > config file > default.

Every field can be set with ``MISTRALKIT_<NAME>`` (e.g. ``MISTRALKIT_TEMPERATURE=0.2``) and in
``config.toml`` under the same name. A few names people already use are honoured too:
``LLM_MODEL_PATH``, ``LLM_MAX_NEW_TOKENS``, ``LLM_TEMPERATURE``, ``LLM_DEVICE``, ``LLM_LOG_LEVEL``,
and the ``.env`` names of apps that switch between a local model and an API: ``LOCAL_LLM_PATH``,
``MAX_TOKENS``, ``TEMPERATURE``, ``TOP_P``, ``EMBEDDINGS_MODEL``, ``EMBEDDINGS_TYPE``, ``LLM_QUANT_ENABLED`` +
``LLM_QUANT_BITS`` (``MODEL_TYPE`` and
the ``OPENAI_*``/``ANTHROPIC_*`` names are read by ``models.remotes``). A ``.env`` file in the current
directory counts as environment, below the real one (``environment()``); ``MISTRALKIT_DOTENV=0`` turns it off.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import paths
from .defaults import SAMPLING_DEFAULTS
from .errors import InvalidParameter

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEVICES = ("auto", "cpu", "gpu", "cuda", "mps")  # gpu: llama.cpp's offload; cuda/mps: transformers
QUANTS = (4, 8)  # bitsandbytes on CUDA (transformers engine)
KV_TYPES = ("f16", "q8_0", "q4_0")  # KV cache element types, largest first

# Names users bring from other tools, mapped to our fields. MISTRALKIT_* wins over these.
ENV_ALIASES = {
    "LLM_MODEL_PATH": "model",
    "LLM_MAX_NEW_TOKENS": "max_tokens",
    "LLM_TEMPERATURE": "temperature",
    "LLM_DEVICE": "device",
    "LLM_LOG_LEVEL": "log_level",
    "LOCAL_LLM_PATH": "model",
    "MAX_TOKENS": "max_tokens",
    "TEMPERATURE": "temperature",
    "TOP_P": "top_p",
    "EMBEDDINGS_MODEL": "embed_model",
    "EMBEDDINGS_TYPE": "embed_type",
}
EMBED_TYPES = ("local",)


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass
class Settings:
    """Everything a chat, run or serve command needs to know before loading a model."""

    model: str | None = field(
        default=None, metadata=_doc("model name or .gguf path (default: the embedded SmolLM2 135M Instruct)")
    )
    adapter: str | None = field(
        default=None, metadata=_doc("GGUF LoRA adapter (name or path) applied on top of the model")
    )
    system: str | None = field(default=None, metadata=_doc("system prompt"))
    temperature: float = field(
        default=SAMPLING_DEFAULTS["temperature"], metadata=_doc("sampling temperature, 0 = greedy")
    )
    top_p: float = field(default=SAMPLING_DEFAULTS["top_p"], metadata=_doc("nucleus sampling threshold"))
    top_k: int = field(
        default=SAMPLING_DEFAULTS["top_k"], metadata=_doc("sample from the k most likely tokens, 0 = all")
    )
    min_p: float = field(
        default=SAMPLING_DEFAULTS["min_p"], metadata=_doc("drop tokens below min_p x the top probability")
    )
    repeat_penalty: float = field(
        default=SAMPLING_DEFAULTS["repeat_penalty"], metadata=_doc("penalty for repeated tokens, 1 = off")
    )
    seed: int | None = field(default=None, metadata=_doc("random seed, 0 to 4294967294 (default or -1: random)"))
    max_tokens: int = field(default=512, metadata=_doc("most tokens to generate per answer"))
    greedy: bool = field(default=False, metadata=_doc("always pick the most likely token"))
    ctx: int | None = field(default=None, metadata=_doc("context window in tokens (default: min(4096, model's))"))
    threads: int | None = field(default=None, metadata=_doc("CPU threads (default: all cores)"))
    n_gpu_layers: int | None = field(
        default=None, metadata=_doc("layers to offload, -1 = all (default: all on a GPU build)")
    )
    device: str = field(default="auto", metadata=_doc("auto, cpu, gpu (llama.cpp offload), cuda or mps (transformers)"))
    quant: int | None = field(default=None, metadata=_doc("load HF weights in 4 or 8 bits (bitsandbytes, CUDA only)"))
    mmap: bool = field(default=True, metadata=_doc("memory-map the model file"))
    mlock: bool = field(default=False, metadata=_doc("lock the model in RAM"))
    kv_type: str = field(default="f16", metadata=_doc("KV cache type: f16, q8_0 (half the memory) or q4_0"))
    speculative: str = field(default="off", metadata=_doc(
        "speculative decoding: off, or ngram (drafts looked up in the prompt and answer; same output)"))
    strict_memory: bool = field(
        default=False, metadata=_doc("refuse to load a model that does not fit in available memory")
    )
    stream: bool = field(default=True, metadata=_doc("stream tokens as they are generated"))
    log_level: str = field(default="warning", metadata=_doc("debug, info, warning or error"))
    embed_model: str | None = field(default=None, metadata=_doc(
        "embedding model of embed and new docs collections: name, folder or .gguf (default all-minilm-l6-v2)"))
    embed_type: str = field(default="local", metadata=_doc("local: embeddings are computed on this machine"))

    def __post_init__(self) -> None:
        from .engines.base import check_sampling, check_seed
        from .engines.speculate import MODES as SPECULATIVE_MODES

        check_sampling(self)
        self.seed = check_seed(self.seed)
        _check(self.n_gpu_layers is None or self.n_gpu_layers >= -1, "n_gpu_layers", self.n_gpu_layers,
               "must be -1 (all layers) or a count >= 0")
        _check(self.ctx is None or self.ctx >= 64, "ctx", self.ctx, "must be >= 64")
        _check(self.threads is None or self.threads >= 1, "threads", self.threads, "must be >= 1")
        self.device = self.device.lower()
        _check(self.device in DEVICES, "device", self.device, f"must be one of {', '.join(DEVICES)}")
        _check(self.quant is None or self.quant in QUANTS, "quant", self.quant, "must be 4 or 8")
        self.kv_type = self.kv_type.lower()
        _check(self.kv_type in KV_TYPES, "kv_type", self.kv_type, f"must be one of {', '.join(KV_TYPES)}")
        self.speculative = self.speculative.lower()
        _check(self.speculative in SPECULATIVE_MODES, "speculative", self.speculative,
               f"must be {' or '.join(SPECULATIVE_MODES)}")
        self.embed_type = self.embed_type.lower()
        _check(self.embed_type in EMBED_TYPES, "embed_type", self.embed_type,
               "mistralkit computes embeddings on this machine: use local (EMBEDDINGS_TYPE=local)")
        self.log_level = self.log_level.lower()
        _check(self.log_level in LOG_LEVELS, "log_level", self.log_level, f"must be one of {', '.join(LOG_LEVELS)}")

    def engine_options(self) -> dict[str, Any]:
        """What ``engines.load_engine`` takes from these settings (the CLI's load and the server's)."""
        return {"n_ctx": self.ctx, "threads": self.threads, "n_gpu_layers": self.n_gpu_layers,
                "device": self.device, "quant": self.quant, "mmap": self.mmap, "mlock": self.mlock,
                "kv_type": self.kv_type, "speculative": self.speculative}


def _check(ok: bool, name: str, value: object, rule: str) -> None:
    if not ok:
        raise InvalidParameter(f"{name}={value!r}: {rule}", hint=f"fix the {name} setting")


@dataclass
class LoadedSettings:
    """Settings plus where each value came from (for ``mistralkit config show``)."""

    settings: Settings
    sources: dict[str, str]
    config_file: Path


@dataclass
class CorrectSettings:
    """``mistralkit correct`` (config.toml section ``[correct]``, env ``MISTRALKIT_CORRECT_<NAME>``)."""

    mode: str = field(default="rules", metadata=_doc(
        "rules (checker only), rank (a model chooses among the rules' candidates) or hybrid (the LLM rewrites)"))
    model: str | None = field(default=None, metadata=_doc(
        "model for rank mode (default: the embedded Gemma 3 270M) or hybrid mode (default: the embedded one)"))
    adapter: str | None = field(default=None, metadata=_doc("GGUF LoRA adapter on top of that model"))
    checker: str = field(default="grammalecte", metadata=_doc("grammalecte or languagetool"))
    languagetool_url: str | None = field(default=None, metadata=_doc("LanguageTool server, e.g. http://127.0.0.1:8081"))
    temperature: float = field(default=0.0, metadata=_doc("LLM sampling temperature (0 = greedy)"))
    max_tokens: int = field(default=256, metadata=_doc("most tokens of one sentence's rewrite"))
    spacy_model: str = field(default="fr_core_news_sm", metadata=_doc("spaCy model for names and places"))
    apply_unsure: bool = field(default=False, metadata=_doc("rank mode: apply the changes the model is unsure of too"))
    protect: tuple[str, ...] = field(default=(), metadata=_doc("words never changed (comma-separated in env)"))

    def __post_init__(self) -> None:
        self.mode, self.checker = self.mode.lower(), self.checker.lower()
        _check(self.mode in ("rules", "rank", "hybrid"), "correct.mode", self.mode, "must be rules, rank or hybrid")
        _check(self.checker in ("grammalecte", "languagetool"), "correct.checker", self.checker,
               "must be grammalecte or languagetool")
        _check(self.checker != "languagetool" or bool(self.languagetool_url), "correct.languagetool_url",
               self.languagetool_url, "is needed with the languagetool checker")
        _check(0 <= self.temperature <= 2, "correct.temperature", self.temperature, "must be in [0, 2]")
        _check(self.max_tokens >= 1, "correct.max_tokens", self.max_tokens, "must be >= 1")
        self.protect = tuple(w.strip() for w in self.protect if w.strip())


SECTIONS: dict[str, type] = {"correct": CorrectSettings}  # config.toml tables; the top level is Settings
FIELD_NAMES = tuple(f.name for f in fields(Settings))


def load(cli: dict[str, Any] | None = None, environ: typing.Mapping[str, str] | None = None,
         config_file: Path | None = None) -> LoadedSettings:
    """Merge defaults, config file, environment and CLI values (later wins).

    ``cli`` holds only the flags the user actually gave (``None`` values are ignored).
    """
    return load_section(None, cli, environ, config_file)


def load_section(section: str | None, cli: dict[str, Any] | None = None,
                 environ: typing.Mapping[str, str] | None = None, config_file: Path | None = None) -> LoadedSettings:
    """The settings of ``section`` (None: the top level) with the same precedence and sources.

    >>> load_section("correct", {"mode": "hybrid"}).settings.mode
    'hybrid'
    """
    environ = environment() if environ is None else environ
    config_file = config_file or paths.config_file()
    cls = SECTIONS[section] if section else Settings
    names = tuple(f.name for f in fields(cls))
    prefix = f"MISTRALKIT_{section.upper()}_" if section else "MISTRALKIT_"
    values: dict[str, Any] = {}
    sources = {name: "default" for name in names}

    def take(name: str, raw: Any, origin: str, source: str) -> None:
        values[name] = coerce(name, raw, origin, cls)
        sources[name] = source

    for name, raw in _read_config(config_file, section).items():
        take(name, raw, f"config file {config_file}", f"config file ({config_file})")
    for alias, name in ({} if section else ENV_ALIASES).items():
        if environ.get(alias):
            take(name, environ[alias], f"environment {alias}", f"env {alias}")
    if not section and environ.get("LLM_QUANT_ENABLED", "").strip().lower() in ("1", "true", "yes", "on"):
        # The chatbot template's pair: LLM_QUANT_ENABLED=1 turns on LLM_QUANT_BITS (4 or 8; 4 when unset).
        take("quant", environ.get("LLM_QUANT_BITS") or "4", "environment LLM_QUANT_BITS", "env LLM_QUANT_BITS")
    for name in names:
        key = f"{prefix}{name.upper()}"
        if environ.get(key):
            take(name, environ[key], f"environment {key}", f"env {key}")
    for name, value in (cli or {}).items():
        if value is not None:
            take(name, value, f"--{name.replace('_', '-')}", "command line")
    return LoadedSettings(cls(**values), sources, config_file)


def read_config_file(path: Path) -> dict[str, Any]:
    """The whole ``config.toml`` as TOML (``{}`` when there is none); a folder, an unreadable file or
    bad TOML is a one-line error. Settings, sections and remotes are all read through here."""
    try:
        if not path.exists():
            return {}
        if not path.is_file():
            raise InvalidParameter(f"config file {path} is not a file", hint="remove it, or set MISTRALKIT_HOME")
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidParameter(f"cannot read config file {path}: {exc.strerror}",
                               hint="fix its permissions or set MISTRALKIT_HOME") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidParameter(f"config file {path} is not valid TOML: {exc}", hint="fix or delete it") from None


def _read_config(path: Path, section: str | None = None) -> dict[str, Any]:
    data = read_config_file(path)
    remotes = data.get("remotes", {})
    if not isinstance(remotes, dict) or any(not isinstance(table, dict) for table in remotes.values()):
        raise InvalidParameter(f"config file {path}: remotes are tables [remotes.NAME] of settings",
                               hint="see `mistralkit remotes --help`")
    if section:
        data = data.get(section, {})
        if not isinstance(data, dict):
            raise InvalidParameter(f"config file {path}: [{section}] must be a table")
    names = tuple(f.name for f in fields(SECTIONS[section] if section else Settings))
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if not section and name in (*SECTIONS, "remotes") and isinstance(value, dict):
            continue  # a [section] table, read by load_section ([remotes.NAME]: models.remotes)
        if name not in names:
            where = f"[{section}] " if section else ""
            raise InvalidParameter(
                f"config file {path}: unknown setting {where}{key!r}",
                hint=f"known settings: {', '.join(names)}",
            )
        out[name] = value
    return out


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a ``.env`` file (``export``, quotes and ``#`` comments allowed).

    >>> import tempfile; f = Path(tempfile.mkdtemp()) / ".env"; _ = f.write_text("A=1\\nexport B='x y' # c\\n")
    >>> read_dotenv(f)
    {'A': '1', 'B': 'x y'}
    """
    out: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return out
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[0] in value[1:]:
            value = value[1:value.index(value[0], 1)]
        else:
            value = value.split(" #", 1)[0].strip()
        out[key.strip()] = value
    return out


def environment() -> typing.Mapping[str, str]:
    """The process environment over ``./.env`` (the real environment wins); see the module doc."""
    if os.environ.get("MISTRALKIT_DOTENV", "1").lower() in ("0", "false", "no", "off"):
        return os.environ
    dotenv = read_dotenv(Path.cwd() / ".env")
    return {**dotenv, **os.environ} if dotenv else os.environ


def _field_type(name: str, cls: type = Settings) -> type:
    hint = typing.get_type_hints(cls)[name]
    if isinstance(hint, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint


def coerce(name: str, raw: Any, origin: str, cls: type = Settings) -> Any:
    """Turn a string (env) or TOML value into the field's type, or explain why not."""
    kind = _field_type(name, cls)
    if kind is tuple:  # a list of words: TOML array, or comma-separated text
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise InvalidParameter(f"{origin}: {name} must be a list of strings, got {raw!r}")
        return tuple(items)
    if not isinstance(raw, str):
        if kind is float and isinstance(raw, float) and not math.isfinite(raw):
            raise InvalidParameter(f"{origin}: {name} must be a finite number, got {raw!r}")
        if kind is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, kind) and not (kind is int and isinstance(raw, bool)):
            return raw
        raise InvalidParameter(f"{origin}: {name} must be {kind.__name__}, got {raw!r}")
    text = raw.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        value = kind(text)
    except ValueError:
        raise InvalidParameter(f"{origin}: {name} must be {kind.__name__}, got {raw!r}") from None
    if kind is float and not math.isfinite(value):
        raise InvalidParameter(f"{origin}: {name} must be a finite number, got {raw!r}")
    return value


def describe(cls: type = Settings) -> list[tuple[str, str]]:
    """(name, help) for every setting (of ``cls``: Settings or a section), for ``config show``."""
    return [(f.name, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]
