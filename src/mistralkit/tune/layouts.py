"""Prompts that already carry a chat layout (``USER: ...\\nASSISTANT:``, ``[INST] ... [/INST]``).

A prompt/response line goes through the model's chat template, which adds its own turns: a prompt
written as ``USER: question\\nASSISTANT:`` would be trained inside a second layout. ``data validate``
and ``tune`` report such prompts (how many, the first one); ``--strip-layout`` takes the labels off.

>>> strip_text("USER: Corrige ce résumé.\\nASSISTANT:")
'Corrige ce résumé.'
"""

from __future__ import annotations

import dataclasses
import re

from .data import Sample

_LEAD = re.compile(r"^\s*(?:<s>\s*)?(?:\[INST\]|<\|im_start\|>user\b|<\|user\|>|(?:USER|User|HUMAN|Human)\s*:)\s*")
_TAIL = re.compile(r"\s*(?:\[/INST\]|<\|im_end\|>\s*<\|im_start\|>assistant|<\|assistant\|>"
                   r"|(?:^|\n)\s*(?:ASSISTANT|Assistant)\s*:)\s*$")


def laid_out(sample: Sample) -> bool:
    """A prompt/response sample whose prompt starts or ends with a chat layout's turn labels."""
    if sample.shape != "prompt":
        return False
    prompt = next(m["content"] for m in sample.messages if m["role"] == "user")
    return bool(_LEAD.search(prompt) or _TAIL.search(prompt))


def strip_text(prompt: str) -> str:
    """The prompt without its leading user label and trailing assistant label (unchanged if that empties it)."""
    stripped = _TAIL.sub("", _LEAD.sub("", prompt, count=1), count=1).strip()
    return stripped or prompt


def strip(sample: Sample) -> Sample:
    """``sample`` with its prompt's layout taken off (other samples unchanged)."""
    if not laid_out(sample):
        return sample
    messages = tuple({**m, "content": strip_text(m["content"])} if m["role"] == "user" else m
                     for m in sample.messages)
    return dataclasses.replace(sample, messages=messages)


def layout_note(samples: list[Sample], stripped: bool = False) -> str | None:
    """``N prompt(s) ... (FILE:LINE: first line)``, or None when no prompt carries a layout."""
    found = [s for s in samples if laid_out(s)]
    if not found:
        return None
    first = found[0]
    line = next(m["content"] for m in first.messages if m["role"] == "user").strip().splitlines()[0]
    what = (f"{len(found)} prompt(s) already carry a chat layout such as USER:/ASSISTANT: or [INST] "
            f"(first {first.path}:{first.line}: {line!r})")
    if stripped:
        return what + "; --strip-layout took it off"
    return what + ("; the chat template adds its own turns around them: pass --strip-layout to `tune` "
                   "(or `data convert`) to take the labels off")
