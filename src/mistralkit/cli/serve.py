"""``mistralkit serve``."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from . import options as o

SECURITY = "Security"


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model to load at start (others load on first use).")] = None,
    api_key: Annotated[list[str] | None, typer.Option("--api-key", help="Require this bearer key (repeatable; also MISTRALKIT_API_KEY).", rich_help_panel=SECURITY)] = None,
    api_key_file: Annotated[Path | None, typer.Option("--api-key-file", help="Read keys from a file, one per line.", rich_help_panel=SECURITY)] = None,
    insecure_no_auth: Annotated[bool, typer.Option("--insecure-no-auth", help="Allow a non-loopback address without a key.", rich_help_panel=SECURITY)] = False,
    cors_origin: Annotated[list[str] | None, typer.Option("--cors-origin", help="Allow browser calls from this origin (repeatable).", rich_help_panel=SECURITY)] = None,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body.", rich_help_panel=SECURITY)] = "4M",
    body_timeout: Annotated[float, typer.Option("--body-timeout", help="Seconds to wait for each part of a request body (then 408).", rich_help_panel=SECURITY)] = 30.0,
    allow_model_paths: Annotated[list[Path] | None, typer.Option("--allow-model-paths", help="Let requests name .gguf files under this folder as model or adapter (repeatable; default: registered names only).", rich_help_panel=SECURITY)] = None,
    queue_size: Annotated[int, typer.Option("--queue-size", help="Requests per model, running + waiting; more get 429.")] = 8,
    parallel: Annotated[int | None, typer.Option("--parallel", help="Generations at once per GGUF model, decoded together (default: 4, fewer when memory is short). Each holds a --ctx KV cache.")] = None,
    keepalive: Annotated[float, typer.Option("--keepalive", help="Seconds without an event after which a streamed answer sends an SSE comment (long prompts, queues), so proxies keep the connection.")] = 10.0,
    memory_budget: Annotated[str | None, typer.Option("--memory-budget", help="RAM for loaded models, e.g. 6G (default: available memory).")] = None,
    ctx: o.Ctx = None, threads: o.Threads = None, kv_type: o.KvType = None, max_tokens: o.MaxTokens = None,
    n_gpu_layers: o.GpuLayers = None, device: o.Device = None, quant: o.Quant = None, strict_memory: o.StrictMemory = None,
    log_level: o.LogLevel = None,
) -> None:
    """Serve an OpenAI-compatible API (/v1/...) and a web chat page (/) on this machine.

    Examples:

      mistralkit serve                                    # http://127.0.0.1:8080, embedded model

      mistralkit serve -m mistral-7b-instruct-v0.3 --ctx 8192 --api-key "$KEY"

      mistralkit serve --host 0.0.0.0 --api-key-file keys.txt --cors-origin https://app.example

      mistralkit serve --allow-model-paths ~/models   # requests may name files under ~/models

      mistralkit serve --parallel 8 --ctx 2048        # 8 clients decoded together

    Then: OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=... any OpenAI client.
    """
    import uvicorn

    from ..http.protocol import deadline_protocol
    from ..logs import setup
    from ..models.memory import parse_size
    from ..server import ServerConfig, create_app
    from ..settings import load, load_section

    settings = load(cli={"ctx": ctx, "threads": threads, "kv_type": kv_type, "max_tokens": max_tokens,
                         "n_gpu_layers": n_gpu_layers, "device": device, "quant": quant, "strict_memory": strict_memory,
                         "log_level": log_level}).settings
    setup(settings.log_level)
    keys = _keys(api_key, api_key_file)
    config = ServerConfig(host=host, port=port, api_keys=keys, insecure_no_auth=insecure_no_auth,
                          cors_origins=tuple(cors_origin or ()), queue_size=queue_size, parallel=parallel, keepalive_s=keepalive,
                          memory_budget=parse_size(memory_budget) if memory_budget else None,
                          max_body_bytes=parse_size(max_body), body_timeout_s=body_timeout,
                          model_dirs=tuple(allow_model_paths or ()), preload=model or settings.model,
                          settings=settings, correct=load_section("correct").settings)
    app = create_app(config)
    listening = _bind(host, port)  # a busy port is an error before anything is announced
    print(f"mistralkit {'requires an API key' if keys else 'open (no API key)'}: web page http://{host}:{port}/ "
          f"· OpenAI API http://{host}:{port}/v1 · Ctrl-C to stop", file=sys.stderr)
    _server_class()(uvicorn.Config(app, host=host, port=port, log_level=_uvicorn_level(settings.log_level),
                                  timeout_graceful_shutdown=int(config.shutdown_grace_s),
                                  http=deadline_protocol(config.body_timeout_s),
                                  access_log=settings.log_level == "debug")).run(sockets=[listening])


def _bind(host: str, port: int) -> socket.socket:
    from ..errors import InvalidParameter

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidParameter(f"cannot serve on {host}: {exc.strerror}", hint="pass --host 127.0.0.1 or an address "
                               "of this machine") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        busy = exc.errno == errno.EADDRINUSE
        raise InvalidParameter(f"cannot listen on {host}:{port}: "
                               + ("the port is in use" if busy else (exc.strerror or str(exc))),
                               hint="stop what uses it or pass --port N" if busy else None) from exc
    return sock


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown, so the process would die of the
        signal (exit -15); a clean shutdown should exit 0."""

        def handle_exit(self, sig, frame) -> None:
            stopping = getattr(getattr(self.config.app, "state", None), "stopping", None)
            if stopping is not None:  # work running in threads stops at its next check
                stopping.set()
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

    return Server


def _keys(given: list[str] | None, key_file: Path | None, env: str = "MISTRALKIT_API_KEY",
          flag: str = "--api-key") -> tuple[str, ...]:
    """Keys from the flag, the environment variable and the key file, checked (datagen's tokens too)."""
    from ..errors import InvalidParameter

    keys = list(given or [])
    if any(not k.strip() for k in keys):
        raise InvalidParameter(f"{flag} is empty: the server would be open to anyone",
                               hint=f'is the variable you passed set? `{flag} "$KEY"` with KEY unset passes ""')
    if env in os.environ:
        if not os.environ[env].strip():
            raise InvalidParameter(f"{env} is set but empty", hint="set it to a key, or unset it")
        keys.append(os.environ[env])
    if key_file is not None:
        try:
            from_file = [line.strip() for line in key_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise InvalidParameter(f"cannot read the API key file {key_file}: {reason}") from exc
        if not from_file:
            raise InvalidParameter(f"the API key file {key_file} holds no key", hint="write one key per line")
        keys += from_file
    keys = [k.strip() for k in keys]
    if any(len(k) < 8 for k in keys):
        raise InvalidParameter("API keys must be at least 8 characters")
    return tuple(dict.fromkeys(keys))


def _uvicorn_level(level: str) -> str:
    return {"debug": "debug", "info": "info"}.get(level, "warning")
