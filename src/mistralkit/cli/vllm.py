"""``mistralkit vllm serve``: a model (and tuned LoRA adapters) on vLLM, registered as a remote."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

app = typer.Typer(help="Serve models on vLLM (GPUs) and use them from every mistralkit command.",
                  no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


@app.command("serve")
def serve(
    model: Annotated[str, typer.Argument(help="Weights folder (Mistral or transformers format) or hub id OWNER/REPO.")],
    extra: Annotated[
        list[str] | None,
        typer.Argument(help="After `--`: more `vllm serve` arguments, passed as is.", show_default=False),
    ] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            "--adapter", help="A `mistralkit tune` run folder or PEFT folder, as RUN or NAME=RUN (repeatable)."
        ),
    ] = None,
    tensor_parallel_size: Annotated[
        int | None,
        typer.Option(
            "--tensor-parallel-size", help="GPUs to split the model across (default: all visible ones the heads allow)."
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port of vLLM's OpenAI API.")] = 8000,
    host: Annotated[str, typer.Option(help="Address to bind; beyond loopback, export VLLM_API_KEY.")] = "127.0.0.1",
    name: Annotated[
        str | None, typer.Option("--name", help="Served model name and remote name (default: vllm-FOLDER).")
    ] = None,
    max_model_len: Annotated[
        int | None, typer.Option("--max-model-len", help="Context length in tokens (default: the model's).")
    ] = None,
    gpu_memory_utilization: Annotated[
        float | None,
        typer.Option(
            "--gpu-memory-utilization", help="Fraction of each GPU's memory vLLM may take (vLLM's default: 0.9)."
        ),
    ] = None,
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for vLLM to load and answer.")
    ] = 1800.0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the command and the remote; start nothing.")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print {command, remote, adapters, notes} as JSON (once ready, without --dry-run)."
        ),
    ] = False,
) -> None:
    """Start `vllm serve` for MODEL and register it as a remote: `--model NAME` then reaches it from
    chat, run, eval, correct and datagen. Ctrl-C stops vLLM and removes the remote.

    Examples:

      mistralkit vllm serve mistralai/Mistral-7B-Instruct-v0.3 --adapter runs/support --dry-run

      mistralkit vllm serve ./Mistral-7B-Instruct-v0.3 --tensor-parallel-size 4 --max-model-len 16384

      mistralkit vllm serve mistralai/Mistral-7B-Instruct-v0.3 --name m7b -- --enable-prefix-caching

      mistralkit chat --model m7b          # in another terminal, while it runs

      mistralkit run --model support "How do I reset my password?"   # the LoRA module
    """
    from ..scaleout.process import start
    from ..scaleout.vllm import plan

    spec = plan(model, adapters=adapter or (), tensor_parallel=tensor_parallel_size, port=port, host=host,
                name=name, max_model_len=max_model_len, gpu_memory_utilization=gpu_memory_utilization,
                extra=extra or ())
    for note in spec.notes:
        print(f"note: {note}", file=sys.stderr)
    if dry_run:
        _print_plan(spec, as_json)
        return

    def ready(server) -> None:
        base = spec.remote["name"]
        names = f" (adapters: {', '.join(r['name'] for r in spec.adapters)})" if spec.adapters else ""
        print(f"vLLM ready on {spec.url}/v1 · remote {base}{names} · mistralkit chat --model {base} "
              f"· log {server.log_path} · Ctrl-C to stop", file=sys.stderr, flush=True)
        if as_json:
            print(json.dumps(spec.to_dict()), flush=True)

    try:
        start(spec, ready_timeout_s=ready_timeout, on_ready=ready,
              on_progress=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt:  # before it was ready (afterwards Ctrl-C is the normal way out)
        print("interrupted: vLLM stopped before it was ready", file=sys.stderr)
        raise typer.Exit(130) from None
    print("vLLM stopped; remotes removed", file=sys.stderr)


def _print_plan(spec, as_json: bool) -> None:
    if as_json:
        print(json.dumps(spec.to_dict(), indent=2))
        return
    print(spec.shell)
    for remote in spec.remotes:
        print(f"remote: {remote['name']} -> {remote['base_url']} (model {remote['model']})")


def main() -> None:
    from ..errors import MistralkitError

    try:
        app()
    except MistralkitError as exc:
        sys.exit(exc.report())


if __name__ == "__main__":
    main()
