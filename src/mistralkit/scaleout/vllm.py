"""Hand a model to vLLM: build the ``vllm serve`` command, start it, and register it as a named remote
so that every mistralkit command reaches it with ``--model NAME``.

>>> print(plan("mistralai/Mistral-7B-Instruct-v0.3", tensor_parallel=1).shell)  # doctest: +SKIP
vllm serve mistralai/Mistral-7B-Instruct-v0.3 --tokenizer-mode mistral --config-format mistral ...

The remote of the base model is ``NAME`` (vLLM's ``--served-model-name``; default ``vllm-`` + the
folder or repository name, so it never hides a local model of the same name); each LoRA module is a
remote of its own, under the module's name. They are removed again when the server stops: a
registered vLLM remote is a running one.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidParameter, MissingDependency
from .adapters import LoraModule, find_adapter, max_lora_rank
from .gpus import tensor_parallel as pick_tensor_parallel
from .gpus import visible_gpus
from .weights import Weights, locate

DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
KEY_ENV = "VLLM_API_KEY"  # vLLM requires this key when the variable is set; the remote sends it
INSTALL = "pip install vllm"
# Flags mistralkit sets itself: given again after `--` they would make vLLM differ from the remote.
MANAGED = {"--host": "--host", "--port": "--port", "--served-model-name": "--name", "--model": "MODEL",
           "--tensor-parallel-size": "--tensor-parallel-size", "-tp": "--tensor-parallel-size",
           "--lora-modules": "--adapter", "--max-model-len": "--max-model-len",
           "--gpu-memory-utilization": "--gpu-memory-utilization", "--api-key": f"the {KEY_ENV} variable"}
NOT_IN_NAMES = re.compile(r"[^A-Za-z0-9._-]+")  # remote names: letters, digits, '.', '-', '_' (64 at most)
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Launch:
    """What ``mistralkit vllm serve`` runs and registers; ``notes`` are for the person starting it."""

    command: list[str]
    remote: dict[str, Any]
    adapters: list[dict[str, Any]] = field(default_factory=list)  # one remote per LoRA module
    notes: list[str] = field(default_factory=list)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT

    @property
    def shell(self) -> str:
        """The command as one shell-quoted line."""
        return shlex.join(self.command)

    @property
    def url(self) -> str:
        """Where a client on this machine reaches the server (``0.0.0.0`` is reached on 127.0.0.1)."""
        return client_url(self.host, self.port)

    @property
    def remotes(self) -> list[dict[str, Any]]:
        return [self.remote, *self.adapters]

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.command, "remote": self.remote, "adapters": self.adapters, "notes": self.notes}


def plan(model_ref: str, *, adapters: Iterable[str] = (), tensor_parallel: int | None = None,
         port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, name: str | None = None,
         max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
         extra: Iterable[str] = (), environ: Mapping[str, str] | None = None) -> Launch:
    """The ``vllm serve`` command for ``model_ref`` and the remotes it will be registered as."""
    environ = os.environ if environ is None else environ
    extra = list(extra)
    _check_numbers(port, max_model_len, gpu_memory_utilization)
    _check_extra(extra)
    weights = locate(model_ref)
    modules = [find_adapter(ref) for ref in adapters]
    served = name or safe_name(f"vllm-{weights.stem}")
    _check_names(served, modules)
    size, tp_note = pick_tensor_parallel(tensor_parallel, visible_gpus(environ), weights.heads, weights.kv_heads)
    command = ["vllm", "serve", weights.arg, *weights.flags, "--served-model-name", served,
               "--host", host, "--port", str(port), "--tensor-parallel-size", str(size)]
    if max_model_len:
        command += ["--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", f"{gpu_memory_utilization:g}"]
    command += _lora_flags(modules)
    command += extra
    notes = [n for n in (tp_note, _heads_note(weights, tensor_parallel), _exposure_note(host, environ)) if n]
    notes += _base_notes(weights, modules, model_ref)
    key_env = KEY_ENV if environ.get(KEY_ENV) else None
    base_url = f"{client_url(host, port)}/v1"
    ctx = max_model_len or weights.context

    def remote(remote_name: str, model: str) -> dict[str, Any]:
        return {"name": remote_name, "api": "openai", "base_url": base_url, "model": model, "key_env": key_env,
                "flavor": "vllm", "ctx": ctx}

    result = Launch(command, remote(served, served), [remote(m.name, m.name) for m in modules], notes, host, port)
    _check_remotes(result)
    return result


def safe_name(text: str) -> str:
    """``text`` as a remote name: runs of other characters become '-', 64 characters at most."""
    return NOT_IN_NAMES.sub("-", text).strip("-.")[:64] or "vllm"


def client_url(host: str, port: int) -> str:
    """``http://HOST:PORT`` as a client on this machine reaches a server bound to ``host``."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host.strip("[]")
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def build_command(model_ref: str, *, adapters: Iterable[str] = (), tensor_parallel: int | None = None,
                  port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, name: str | None = None,
                  max_model_len: int | None = None, gpu_memory_utilization: float | None = None,
                  extra: Iterable[str] = ()) -> list[str]:
    """The ``vllm serve ...`` argument list for ``model_ref`` (see ``plan``)."""
    return plan(model_ref, adapters=adapters, tensor_parallel=tensor_parallel, port=port, host=host, name=name,
                max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization, extra=extra).command


def require_vllm(spec: Launch, environ: Mapping[str, str] | None = None) -> str:
    """The ``vllm`` executable on PATH; without one, an error that says how to install it and what would run."""
    import shutil

    environ = os.environ if environ is None else environ
    found = shutil.which(spec.command[0], path=environ.get("PATH"))
    if found is None:
        raise MissingDependency(f"vLLM is not installed here (no `vllm` on PATH): `{INSTALL}` on a CUDA machine, "
                                f"then run it again", hint=f"it would run: {spec.shell}")
    return found



def _check_numbers(port: int, max_model_len: int | None, memory: float | None) -> None:
    if not 0 < port < 65536:
        raise InvalidParameter(f"--port {port}: must be between 1 and 65535")
    if max_model_len is not None and max_model_len < 64:
        raise InvalidParameter(f"--max-model-len {max_model_len}: must be 64 or more")
    if memory is not None and not 0 < memory <= 1:
        raise InvalidParameter(f"--gpu-memory-utilization {memory}: a fraction of GPU memory, above 0 and at most 1",
                               hint="vLLM's default is 0.9")


def _check_extra(extra: list[str]) -> None:
    for arg in extra:
        flag = arg.split("=", 1)[0]
        flag = flag[:2] + flag[2:].replace("_", "-")  # vLLM reads --max_model_len as --max-model-len
        if flag in MANAGED:
            raise InvalidParameter(f"{flag} after `--` would change what mistralkit registers",
                                   hint=f"use mistralkit's {MANAGED[flag]} instead")


def _check_names(served: str, modules: list[LoraModule]) -> None:
    """Each served name becomes a remote: it must be a remote name and not hide a catalog model."""
    from ..models import catalog
    from ..models.remotes import NAME

    names = [served, *(m.name for m in modules)]
    for name, how in zip(names, ["--name NAME", *(f"--adapter NAME={m.path.parent}" for m in modules)]):
        if not NAME.fullmatch(name):
            raise InvalidParameter(f"bad served name {name!r}", hint=f"pick one with {how}: letters, digits, "
                                                                     "'.', '-', '_' (64 at most)")
        if catalog.find(name) is not None:
            raise InvalidParameter(f"{name!r} is the name of a catalog model; as a remote it would hide it",
                                   hint=f"pick another name with {how}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidParameter(f"two models would be served as {twice[0]!r}",
                               hint="name the adapters apart: --adapter NAME=PATH")


def _check_remotes(spec: Launch) -> None:
    """The remotes as ``models.remotes`` will take them, so a dry run shows what a start would refuse."""
    from ..models.remotes import Remote

    for fields in spec.remotes:
        Remote(**fields)


def _lora_flags(modules: list[LoraModule]) -> list[str]:
    if not modules:
        return []
    # One --lora-modules with every module: vLLM keeps only the last of repeated flags.
    flags = ["--enable-lora", "--lora-modules", *(m.arg for m in modules)]
    if len(modules) > 1:
        flags += ["--max-loras", str(len(modules))]  # all of them in one batch
    rank = max_lora_rank(modules)
    return flags + (["--max-lora-rank", str(rank)] if rank else [])


def _heads_note(weights: Weights, requested: int | None) -> str | None:
    if weights.heads is None and requested not in (None, 1):
        return f"{weights.arg}: heads unknown before download, --tensor-parallel-size {requested} not checked"
    return None


def _exposure_note(host: str, environ: Mapping[str, str]) -> str | None:
    if host in LOOPBACK_HOSTS or environ.get(KEY_ENV):
        return None
    return f"--host {host} with no {KEY_ENV}: anyone who reaches this machine can use the server; export {KEY_ENV}"


def _base_notes(weights: Weights, modules: list[LoraModule], model_ref: str) -> list[str]:
    served = {weights.stem, model_ref.strip().rstrip("/").rsplit("/", 1)[-1].lower()}
    notes = []
    for module in modules:
        base = (module.base or "").rstrip("/").rsplit("/", 1)[-1].lower()
        if base and base not in served:
            notes.append(f"adapter {module.name} was trained on {module.base}; make sure {weights.arg} is the same "
                         "model in transformers or Mistral format")
    return notes
