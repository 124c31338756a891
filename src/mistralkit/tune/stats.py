"""``data validate`` and ``data stats``: every line checked and tokenized with the model's format."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DatasetError
from .data import Sample, check, read_samples, shape_counts
from ..formats.layout import SampleEncoder, encode


@dataclass
class Report:
    """What ``validate`` found in one file: samples per shape and every problem, in line order."""

    path: str
    samples: int
    shapes: dict[str, int]
    errors: list[DatasetError] = field(default_factory=list)
    layout: str | None = None  # prompts that carry a chat layout of their own (tune.layouts)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def mixed(self) -> bool:
        return len(self.shapes) > 1

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "samples": self.samples, "shapes": self.shapes, "mixed": self.mixed,
                "errors": [{"path": e.path, "line": e.line, "field": e.field, "message": e.reason,
                            "hint": e.hint} for e in self.errors], "layout": self.layout}


def _too_long(sample: Sample, length: int, max_length: int) -> DatasetError:
    return sample.error(f"{length} tokens, over --max-length {max_length}",
                        hint="shorten or split the sample, or raise --max-length")


def validate(path: str | Path, encoder: SampleEncoder | None = None, *, max_length: int | None = None,
             allow_mixed: bool = True, train_on_inputs: bool = False) -> Report:
    """Check every line; with an ``encoder`` also tokenize (no trainable token, over ``max_length``)."""
    samples, errors = check(path, allow_mixed=allow_mixed)
    good = []
    for sample in samples:
        try:
            encoded = encode(sample, encoder, train_on_inputs=train_on_inputs) if encoder else None
        except DatasetError as exc:
            errors.append(exc)
            continue
        if encoded is not None and max_length is not None and len(encoded) > max_length:
            errors.append(_too_long(sample, len(encoded), max_length))
            continue
        good.append(sample)
    errors.sort(key=lambda e: e.line)
    from .layouts import layout_note

    return Report(str(path), len(good), shape_counts(good), errors, layout_note(samples))


@dataclass
class Bin:
    low: int
    high: int  # inclusive
    count: int


@dataclass
class Stats:
    """Token counts of one file (one split), as ``data stats`` prints them."""

    path: str
    samples: int
    shapes: dict[str, int]
    tokens: dict[str, float]  # total, min, median, p95, max
    trainable: int
    max_length: int | None
    over_max_length: int | None
    histogram: list[Bin]
    format: str
    mixed: bool = False  # more than one shape

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (``q`` in 0..100)."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def _nice(step: float) -> int:
    for unit in (1, 2, 5):
        for power in range(0, 9):
            if unit * 10**power >= step:
                return max(1, unit * 10**power)
    return int(step)


def histogram(lengths: list[int], bins: int = 10) -> list[Bin]:
    """Equal-width bins of round size from 0 (or the shortest, rounded down) to the longest."""
    if not lengths:
        return []
    step = _nice(max(1.0, (max(lengths) - min(lengths) + 1) / bins))
    start = min(lengths) // step * step
    counts = Counter((n - start) // step for n in lengths)
    last = (max(lengths) - start) // step
    return [Bin(start + i * step, start + (i + 1) * step - 1, counts.get(i, 0)) for i in range(last + 1)]


def stats(path: str | Path, encoder: SampleEncoder, *, max_length: int | None = None, bins: int = 10,
          allow_mixed: bool = True, train_on_inputs: bool = False) -> Stats:
    """Samples, shapes, token lengths and trainable tokens of a file; the first bad line is raised."""
    samples = read_samples(path, allow_mixed=allow_mixed)
    encoded = [encode(s, encoder, train_on_inputs=train_on_inputs) for s in samples]
    lengths = sorted(len(e) for e in encoded)
    tokens = {"total": sum(lengths), "min": lengths[0], "median": percentile(lengths, 50),
              "p95": percentile(lengths, 95), "max": lengths[-1]}
    shapes = shape_counts(samples)
    return Stats(
        path=str(path), samples=len(samples), shapes=shapes, tokens=tokens,
        trainable=sum(e.trainable for e in encoded), max_length=max_length,
        over_max_length=sum(n > max_length for n in lengths) if max_length is not None else None,
        histogram=histogram(lengths, bins), format=encoder.format.name, mixed=len(shapes) > 1,
    )


def render_histogram(bins: list[Bin], *, width: int = 40, max_length: int | None = None) -> str:
    """Text bars, one per bin; bins past ``max_length`` are marked as cut."""
    if not bins:
        return ""
    peak = max(b.count for b in bins) or 1
    names = [f"{b.low}" if b.low == b.high else f"{b.low}-{b.high}" for b in bins]
    label = max(map(len, names))
    lines = []
    for name, b in zip(names, bins):
        bar = "#" * round(b.count / peak * width) if b.count else ""
        cut = ""
        if max_length is not None and b.high > max_length:
            cut = "  (cut)" if b.low > max_length else f"  (cut above {max_length})"
        lines.append(f"  {name:>{label}} | {bar} {b.count}{cut}")
    return "\n".join(lines)
