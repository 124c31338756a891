"""``mistralkit serve``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import options as o

SECURITY = "Security"


def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model to load at start (others load on first use).")
    ] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option(
            "--api-key", help="Require this bearer key (repeatable; also MISTRALKIT_API_KEY).", rich_help_panel=SECURITY
        ),
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option("--api-key-file", help="Read keys from a file, one per line.", rich_help_panel=SECURITY),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth", help="Allow a non-loopback address without a key.", rich_help_panel=SECURITY
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin", help="Allow browser calls from this origin (repeatable).", rich_help_panel=SECURITY
        ),
    ] = None,
    max_body: Annotated[str, typer.Option("--max-body", help="Largest request body.", rich_help_panel=SECURITY)] = "4M",
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            help="Seconds to wait for each part of a request body (then 408).",
            rich_help_panel=SECURITY,
        ),
    ] = 30.0,
    allow_model_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-model-paths",
            help="Let requests name .gguf files under this folder as model or adapter "
            "(repeatable; default: registered names only).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    allow_docs_paths: Annotated[
        list[Path] | None,
        typer.Option(
            "--allow-docs-paths",
            help="Let requests add files under this folder to collections (vector stores) by path "
            "(repeatable; default: uploaded files only).",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    queue_size: Annotated[
        int, typer.Option("--queue-size", help="Requests per model, running + waiting; more get 429.")
    ] = 8,
    parallel: Annotated[
        int | None,
        typer.Option(
            "--parallel",
            help="Generations at once per GGUF model, decoded together (default: 4, fewer when memory is short). "
            "Each holds a --ctx KV cache.",
        ),
    ] = None,
    keepalive: Annotated[
        float,
        typer.Option(
            "--keepalive",
            help="Seconds without an event after which a streamed answer sends an SSE comment (long prompts, "
            "queues), so proxies keep the connection.",
        ),
    ] = 10.0,
    memory_budget: Annotated[
        str | None, typer.Option("--memory-budget", help="RAM for loaded models, e.g. 6G (default: available memory).")
    ] = None,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    kv_type: o.KvType = None,
    speculative: o.Speculative = None,
    max_tokens: o.MaxTokens = None,
    n_gpu_layers: o.GpuLayers = None,
    device: o.Device = None,
    quant: o.Quant = None,
    strict_memory: o.StrictMemory = None,
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
    from ..http.keys import read_keys
    from ..http.runner import bind, run
    from ..logs import setup
    from ..models.memory import parse_size
    from ..server import ServerConfig, create_app
    from ..settings import load

    settings = load(cli={"ctx": ctx, "threads": threads, "kv_type": kv_type, "speculative": speculative,
                         "max_tokens": max_tokens,
                         "n_gpu_layers": n_gpu_layers, "device": device, "quant": quant, "strict_memory": strict_memory,
                         "log_level": log_level}).settings
    setup(settings.log_level)
    keys = read_keys(api_key, api_key_file)
    config = ServerConfig(
        host=host,
        port=port,
        api_keys=keys,
        insecure_no_auth=insecure_no_auth,
        cors_origins=tuple(cors_origin or ()),
        queue_size=queue_size,
        parallel=parallel,
        keepalive_s=keepalive,
        memory_budget=parse_size(memory_budget) if memory_budget else None,
        max_body_bytes=parse_size(max_body),
        body_timeout_s=body_timeout,
        model_dirs=tuple(allow_model_paths or ()),
        docs_dirs=tuple(allow_docs_paths or ()),
        preload=model or settings.model,
        settings=settings,
        correct=_correct_settings(),
    )
    app = create_app(config)
    listening = bind(host, port)  # a busy port is an error before anything is announced
    print(f"mistralkit {'requires an API key' if keys else 'open (no API key)'}: web page http://{host}:{port}/ "
          f"· OpenAI API http://{host}:{port}/v1 · Ctrl-C to stop", file=sys.stderr)
    run(app, listening, host, port, settings.log_level, config.body_timeout_s, grace_s=config.shutdown_grace_s)


def _correct_settings():
    """``/v1/correct``'s defaults: the [correct] settings, in rank mode unless they name a mode (a
    server has a model at hand to choose among the rules' candidates)."""
    from dataclasses import replace

    from ..settings import load_section

    loaded = load_section("correct")
    return replace(loaded.settings, mode="rank") if loaded.sources["mode"] == "default" else loaded.settings
