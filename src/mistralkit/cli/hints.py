"""Wrong flags named after another tool: the hint gives our flag of the same meaning.

click suggests the option closest in spelling (``--gradient-accumulation-steps`` ->
``--gradient-checkpointing``), which misleads; a flag in ``SYNONYMS`` that the command lacks is
answered with the command's flag of the same meaning instead, before click parses anything.
"""

from __future__ import annotations

from ..errors import InvalidParameter

# Hugging Face / PEFT / other scripts' names -> ours, first found in the command wins.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "--gradient-accumulation-steps": ("--grad-accum",),
    "--resume-from-checkpoint": ("--resume-from-checkpoint", "--resume"),
    "--train-file": ("--data",),
    "--train-data": ("--data",),
    "--dataset": ("--data",),
    "--eval-file": ("--valid",),
    "--validation-file": ("--valid",),
    "--num-train-epochs": ("--epochs",),
    "--learning-rate": ("--lr",),
    "--lora-r": ("--rank",),
    "--lora-rank": ("--rank",),
    "--lora-alpha": ("--alpha",),
    "--lora-dropout": ("--dropout",),
    "--output-dir": ("--out", "--output"),
    "--per-device-train-batch-size": ("--batch-size",),
    "--per-device-batch-size": ("--batch-size",),
    "--load-in-4bit": ("--qlora", "--quant"),
    "--model-name-or-path": ("--base", "--model"),
    "--max-seq-length": ("--max-length",),
    "--max-new-tokens": ("--max-tokens",),
}


def _command(root, argv: list[str]):
    """The click command ``argv`` names (descending through groups) and the words after its name."""
    command, path, rest = root, ["mistralkit"], list(argv)
    while rest and rest[0] in getattr(command, "commands", {}):  # a group (typer has its own click)
        path.append(rest[0])
        command, rest = command.commands[rest[0]], rest[1:]
    return command, " ".join(path), rest


def check_synonyms(root, argv: list[str]) -> None:
    """InvalidParameter naming our flag when ``argv`` uses another tool's name the command lacks."""
    command, path, rest = _command(root, argv)
    takes_value = {}
    for param in getattr(command, "params", []):
        for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
            takes_value[name] = not (getattr(param, "is_flag", False) or getattr(param, "count", False))
    skip = False
    for word in rest:
        if skip or not word.startswith("--"):
            skip = False
            continue
        if word == "--":
            return
        name = word.split("=", 1)[0]
        if name in takes_value:
            skip = takes_value[name] and "=" not in word
            continue
        ours = [flag for flag in SYNONYMS.get(name.lower(), ()) if flag in takes_value]
        if ours:
            raise InvalidParameter(f"no such option: {name}",
                                   hint=f"{path} calls it {' or '.join(ours)} (see {path} -h)")
