"""``mistralkit chat`` and ``mistralkit run``."""

from __future__ import annotations

import json
import sys
import threading
from typing import Annotated

import typer

from . import options as o


def _settings(**flags):
    from ..logs import setup
    from ..settings import load

    loaded = load(cli=flags)
    setup(loaded.settings.log_level)
    return loaded


def _notice(model) -> None:
    from ..api import default_model_notice

    notice = default_model_notice(model)
    if notice:
        print(notice, file=sys.stderr)


def chat(
    model: o.Model = None,
    local_path: o.LocalPath = None,
    adapter: o.Adapter = None,
    system: o.System = None,
    session_id: Annotated[
        str | None, typer.Option("--session-id", help="Resume a saved session (id or prefix).")
    ] = None,
    stream: Annotated[
        bool | None, typer.Option("--stream/--no-stream", help="Stream tokens as they come.", show_default=False)
    ] = None,
    prompt: Annotated[
        str | None, typer.Option("--prompt", "-p", help="Send one message, print the answer, exit.")
    ] = None,
    temperature: o.Temperature = None,
    top_p: o.TopP = None,
    top_k: o.TopK = None,
    min_p: o.MinP = None,
    repeat_penalty: o.RepeatPenalty = None,
    seed: o.Seed = None,
    max_tokens: o.MaxTokens = None,
    greedy: o.Greedy = None,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    n_gpu_layers: o.GpuLayers = None,
    device: o.Device = None,
    quant: o.Quant = None,
    kv_type: o.KvType = None,
    speculative: o.Speculative = None,
    strict_memory: o.StrictMemory = None,
    docs: o.Docs = None,
    docs_k: o.DocsK = 5,
    docs_mode: o.DocsMode = "hybrid",
    log_level: o.LogLevel = None,
) -> None:
    """Chat with a local model; every turn is saved in the history.

    Examples:

      mistralkit chat

      mistralkit chat -m ~/models/Mistral-7B-Instruct-v0.3-Q4_K_M.gguf -s "Answer in French."

      mistralkit chat --session-id 3f2a   # resume

      mistralkit chat --greedy -p "What is 2+2?"

      mistralkit chat --ctx 8192 --kv-type q8_0   # the longest context of the default model, half the KV memory

      mistralkit chat --adapter my-tune   # a LoRA adapter from `mistralkit export --gguf-adapter`

      mistralkit chat -m mistralai/Mistral-7B-Instruct-v0.2 --device cuda --quant 4 --adapter runs/support

      mistralkit chat -m runs/support   # a tuned run folder directly (transformers engine), no export

      mistralkit chat -m gpt   # a configured remote (`mistralkit remotes add`), or MODEL_TYPE=openai

      mistralkit chat --docs notes   # each answer from the collection's passages, with its sources
    """
    from ..api import load
    from ..chat.history import Store
    from ..chat.repl import Repl
    from ..errors import InvalidParameter

    if prompt is not None and not prompt.strip():
        raise InvalidParameter("the prompt is empty", hint="pass some text with --prompt, or leave it out to chat")
    store = Store()
    session, name = _session_or_name(store, session_id)
    if session and model is None and local_path is None:
        model = session.model
    resolved = _settings(
        model=o.model_or_path(model, local_path),
        adapter=adapter,
        system=system,
        stream=stream,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        seed=seed,
        max_tokens=max_tokens,
        greedy=greedy,
        ctx=ctx,
        threads=threads,
        n_gpu_layers=n_gpu_layers,
        device=device,
        quant=quant,
        kv_type=kv_type,
        speculative=speculative,
        strict_memory=strict_memory,
        log_level=log_level,
    )
    from .models import pull_if_hub

    pull_if_hub(resolved.settings.model)
    collection = _open_docs(docs, docs_k, docs_mode)
    loaded = load(resolved.settings)
    _notice(loaded.model)
    typed = frozenset(name for name, source in resolved.sources.items() if source == "command line")
    grounding = None
    if collection is not None:
        from ..documents.answer import DocsChat

        grounding = DocsChat(collection, docs_k, docs_mode)
    repl = Repl(loaded, store, session, typed=typed, docs=grounding, name=name)
    if session:
        print(f"Resumed session {session.id} ({len(repl.turns)} messages).", file=sys.stderr)
    elif name:
        print(f"New session {name!r}: resume it with --session-id {name}.", file=sys.stderr)
    try:
        if prompt is not None:
            repl.turn(prompt)
            print(f"Session saved: {repl.session.id}", file=sys.stderr)  # type: ignore[union-attr]
        else:
            _enable_line_editing()
            repl.loop()
    finally:
        loaded.close()
        store.close()
        if collection is not None:
            collection.close()


def _enable_line_editing() -> None:
    try:
        import readline  # noqa: F401  (input() gains editing and arrow-key history)
    except ImportError:
        pass


def run(
    prompt: Annotated[str | None, typer.Argument(help="The prompt; '-' or nothing reads standard input.")] = None,
    model: o.Model = None,
    local_path: o.LocalPath = None,
    adapter: o.Adapter = None,
    system: o.System = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object: text, usage, timings, model.")
    ] = False,
    temperature: o.Temperature = None,
    top_p: o.TopP = None,
    top_k: o.TopK = None,
    min_p: o.MinP = None,
    repeat_penalty: o.RepeatPenalty = None,
    seed: o.Seed = None,
    max_tokens: o.MaxTokens = None,
    greedy: o.Greedy = None,
    ctx: o.Ctx = None,
    threads: o.Threads = None,
    n_gpu_layers: o.GpuLayers = None,
    device: o.Device = None,
    quant: o.Quant = None,
    kv_type: o.KvType = None,
    speculative: o.Speculative = None,
    strict_memory: o.StrictMemory = None,
    docs: o.Docs = None,
    docs_k: o.DocsK = 5,
    docs_mode: o.DocsMode = "hybrid",
    log_level: o.LogLevel = None,
) -> None:
    """Answer one prompt and exit (not saved in the history).

    Examples:

      mistralkit run "Explain LoRA in one sentence."

      echo "Summarize: ..." | mistralkit run --max-tokens 100

      mistralkit run --json --greedy "2+2=" | jq .usage

      mistralkit run --adapter ./my-tune.gguf "Hello"

      mistralkit run --docs notes "When was Mr Hartley discharged?"   # cited sources from a collection

      mistralkit run --speculative ngram --json "Repeat: the cat sat on the mat." | jq .usage

      MODEL_TYPE=openai OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_MODEL=gemma-3-270m mistralkit run "hi"
    """
    from ..api import load
    from ..api import run as run_prompt
    from ..errors import InvalidParameter

    if prompt is None or prompt == "-":
        if sys.stdin.isatty() and prompt is None:
            raise InvalidParameter(
                "no prompt given", hint="pass one as an argument or pipe it in: echo hi | mistralkit run"
            )
        from ..text import read_stdin

        prompt = read_stdin()
    if not prompt.strip():
        raise InvalidParameter("the prompt is empty")
    settings = _settings(model=o.model_or_path(model, local_path), adapter=adapter, system=system,
                         temperature=temperature, top_p=top_p, top_k=top_k,
                         min_p=min_p, repeat_penalty=repeat_penalty, seed=seed, max_tokens=max_tokens,
                         greedy=greedy, ctx=ctx, threads=threads, n_gpu_layers=n_gpu_layers, device=device, quant=quant,
                         kv_type=kv_type, speculative=speculative, strict_memory=strict_memory,
                         log_level=log_level).settings
    from .models import pull_if_hub

    pull_if_hub(settings.model)
    collection = _open_docs(docs, docs_k, docs_mode)
    loaded = load(settings)
    if not as_json:
        _notice(loaded.model)
    if collection is not None:
        return _answer_from_docs(collection, prompt, loaded, as_json, docs_k, docs_mode)
    from ..chat.repl import sigint_sets

    cancel = threading.Event()  # Ctrl-C sets it: the engine stops at the next token, the partial answer stands
    try:
        with sigint_sets(cancel):
            if as_json:
                result = run_prompt(prompt, loaded, cancel=cancel)
            else:
                result = run_prompt(prompt, loaded, on_text=lambda t: (sys.stdout.write(t), sys.stdout.flush()),
                                    cancel=cancel)
        if as_json:
            print(json.dumps({"model": loaded.model.name,
                              "model_path": str(loaded.model.path) if loaded.model.path else None,
                              "text": result.text, "finish_reason": result.finish_reason,
                              "usage": result.usage.to_dict()}, ensure_ascii=False))
        else:
            sys.stdout.write("\n")
    finally:
        loaded.close()
    if result.finish_reason == "cancelled":
        raise typer.Exit(130)


def _open_docs(name: str | None, k: int, mode: str):
    """The collection named by --docs, checked before a model loads (None without --docs)."""
    if name is None:
        return None
    from ..documents import MODES, Collection
    from ..errors import InvalidParameter

    if mode not in MODES:
        raise InvalidParameter(f"unknown --docs-mode {mode!r}", hint=f"use one of: {', '.join(MODES)}")
    if not 1 <= k <= 100:
        raise InvalidParameter(f"--docs-k must be between 1 and 100, got {k}")
    return Collection.open(name)


def _answer_from_docs(collection, prompt: str, loaded, as_json: bool, k: int, mode: str) -> None:
    """``run --docs``: the answer streamed, then its sources and any citation that does not hold."""
    from ..chat.repl import sigint_sets
    from ..documents.answer import ask, report_lines

    cancel = threading.Event()
    try:
        with collection, sigint_sets(cancel):
            stream = None if as_json else (lambda t: (sys.stdout.write(t), sys.stdout.flush()))
            answer = ask(collection, prompt, loaded, k=k, mode=mode, on_text=stream, cancel=cancel)
    finally:
        loaded.close()
    if as_json:
        print(json.dumps({"model": loaded.model.name, "collection": collection.name, **answer.to_dict()},
                         ensure_ascii=False))
    else:
        sys.stdout.write("\n\n" + "\n".join(report_lines(answer.text, answer.sources, answer.citations,
                                                          answer.left_out)) + "\n")
    if answer.finish_reason == "cancelled":
        raise typer.Exit(130)


def _session_or_name(store, session_id: str | None):
    """(the session ``--session-id`` names, None) or (None, the name for a new session): an id that matches
    no session but reads as a name (``project-alpha``) starts a session under it, as the chatbot template does."""
    from ..chat.history import SESSION_NAME
    from ..errors import SessionNotFound

    if not session_id:
        return None, None
    try:
        return store.get_session(session_id), None
    except SessionNotFound:
        if not SESSION_NAME.fullmatch(session_id):
            raise
        return None, session_id
