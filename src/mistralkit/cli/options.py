"""Options shared by the commands that load a model. Every default is None so that only flags the
user typed override the environment and the config file."""

from __future__ import annotations

from typing import Annotated

import typer

MODEL = "Model"
SAMPLING = "Sampling"

Model = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model: a name, a .gguf file, an HF folder or hub id, a tuned run folder, or a configured remote.",
        rich_help_panel=MODEL,
    ),
]
Adapter = Annotated[
    str | None,
    typer.Option(
        "--adapter",
        help="LoRA adapter on top of the model: a GGUF adapter (name or path) for GGUF models, "
        "a PEFT folder or tuned run for HF models.",
        rich_help_panel=MODEL,
    ),
]
System = Annotated[str | None, typer.Option("--system", "-s", help="System prompt.")]
Temperature = Annotated[float | None, typer.Option(help="Sampling temperature (0 = greedy).", rich_help_panel=SAMPLING)]
TopP = Annotated[float | None, typer.Option("--top-p", help="Nucleus sampling threshold.", rich_help_panel=SAMPLING)]
TopK = Annotated[
    int | None, typer.Option("--top-k", help="Sample among the k most likely tokens.", rich_help_panel=SAMPLING)
]
MinP = Annotated[
    float | None,
    typer.Option("--min-p", help="Minimum probability relative to the top token.", rich_help_panel=SAMPLING),
]
RepeatPenalty = Annotated[
    float | None,
    typer.Option("--repeat-penalty", help="Penalty for repeated tokens (1 = off).", rich_help_panel=SAMPLING),
]
Seed = Annotated[
    int | None, typer.Option(help="Random seed for reproducible sampling (-1 = random).", rich_help_panel=SAMPLING)
]
MaxTokens = Annotated[
    int | None, typer.Option("--max-tokens", "-n", help="Most tokens per answer.", rich_help_panel=SAMPLING)
]
Greedy = Annotated[
    bool | None,
    typer.Option(
        "--greedy/--no-greedy", help="Always pick the most likely token.", rich_help_panel=SAMPLING, show_default=False
    ),
]
Ctx = Annotated[int | None, typer.Option("--ctx", "-c", help="Context window in tokens.", rich_help_panel=MODEL)]
Threads = Annotated[int | None, typer.Option("--threads", "-t", help="CPU threads.", rich_help_panel=MODEL)]
GpuLayers = Annotated[
    int | None, typer.Option("--n-gpu-layers", help="Layers to offload to a GPU (-1 = all).", rich_help_panel=MODEL)
]
Device = Annotated[
    str | None,
    typer.Option(
        "--device", help="auto, cpu, gpu (llama.cpp offload), cuda or mps (transformers engine).", rich_help_panel=MODEL
    ),
]
LogLevel = Annotated[str | None, typer.Option("--log-level", help="debug, info, warning or error.")]
KvType = Annotated[
    str | None,
    typer.Option("--kv-type", help="KV cache type: f16, q8_0 (half the memory) or q4_0.", rich_help_panel=MODEL),
]
Speculative = Annotated[
    str | None,
    typer.Option("--speculative", help="Speculative decoding: off, or ngram (drafts looked up in the prompt and the "
                 "answer, verified in one step; the same output, faster where the answer copies its input).",
                 rich_help_panel=MODEL),
]
StrictMemory = Annotated[
    bool | None,
    typer.Option(
        "--strict-memory/--no-strict-memory",
        help="Refuse to load a model that does not fit in available memory (default: warn).",
        rich_help_panel=MODEL,
        show_default=False,
    ),
]
Quant = Annotated[
    int | None,
    typer.Option("--quant", help="Load HF weights in 4 or 8 bits (bitsandbytes, CUDA only).", rich_help_panel=MODEL),
]
DOCS = "Documents"
Docs = Annotated[str | None, typer.Option(
    "--docs", help="Answer from this document collection (mistralkit docs add), citing its passages.",
    rich_help_panel=DOCS)]
DocsK = Annotated[int, typer.Option("--docs-k", help="Passages retrieved per question.", rich_help_panel=DOCS)]
DocsMode = Annotated[str, typer.Option("--docs-mode", help="Retrieval: hybrid, vector or keyword.",
                                       rich_help_panel=DOCS)]
LocalPath = Annotated[str | None, typer.Option(
    "--local-path", help="A model folder or file on this machine: the same as --model PATH (the name the "
    "chatbot template uses).", rich_help_panel=MODEL, show_default=False)]


def model_or_path(model: str | None, local_path: str | None) -> str | None:
    """``--local-path`` is ``--model``'s alias for a path; both at once must agree."""
    if local_path is None:
        return model
    if model is not None and model != local_path:
        from ..errors import InvalidParameter

        raise InvalidParameter("--model and --local-path name two models", hint="give one of them")
    return local_path
