"""Micro-batches as model inputs, and the summed loss over their trained tokens.

Two layouts give the same loss (a test checks it to 1e-4):

* **packed** (the default): the samples of a micro-batch are laid end to end in one row, with
  ``position_ids`` starting at 0 for each sample and no attention mask, which transformers turns
  into a block-diagonal causal mask: no token attends to another sample, and there is no padding.
  The first token of each sample gets no label, so nothing learns to predict across a boundary.
* **padded**: one row per sample, right-padded to the longest (``formats.layout.pad_batch``).

Either way the language-model head runs only where a label is trained (``logits_to_keep`` with
the positions), which saves most of the work for large vocabularies (Gemma's 262k tokens).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ..formats.layout import IGNORE, Encoded, pad_batch


def packed(batch: Sequence[Encoded]) -> dict[str, list[list[int]]]:
    """One row: the samples end to end, positions restarting at each, no label on each first token."""
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for sample in batch:
        ids += sample.input_ids
        labels += [IGNORE, *sample.labels[1:]]
        positions += range(len(sample))
    return {"input_ids": [ids], "labels": [labels], "position_ids": [positions]}


def padded(batch: Sequence[Encoded], pad_id: int) -> dict[str, list[list[int]]]:
    return pad_batch(batch, pad_id)


def trained_tokens(batch: Sequence[Encoded]) -> int:
    """Tokens that carry loss (a sample's first token never does: nothing predicts it)."""
    return sum(sum(label != IGNORE for label in e.labels[1:]) for e in batch)


def to_tensors(batch: Sequence[Encoded], pad_id: int, device: str, packing: bool) -> dict[str, Any]:
    import torch

    rows = packed(batch) if packing else padded(batch, pad_id)
    return {k: torch.tensor(v, device=device) for k, v in rows.items()}


def takes_logits_to_keep(model) -> bool:
    """Whether the (PEFT-wrapped) model's forward can compute logits at chosen positions only."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def loss_sum(model, inputs: dict[str, Any], select: bool = True) -> Any:
    """Sum of token cross-entropies over trained positions (labels shifted by one).

    ``select``: run the LM head only at positions whose next label is trained.
    """
    import torch
    import torch.nn.functional as F

    labels = inputs["labels"]
    targets = labels[:, 1:]
    # No KV cache: with one, transformers would not read packed positions as separate sequences.
    feed = {**{k: v for k, v in inputs.items() if k != "labels"}, "use_cache": False}
    if select:
        keep = torch.nonzero((targets != IGNORE).any(dim=0)).flatten()
        logits = model(**feed, logits_to_keep=keep).logits
        targets = targets[:, keep]
    else:
        logits = model(**feed).logits[:, :-1]
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=IGNORE, reduction="sum")
