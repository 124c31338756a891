"""Which dimensions the next instruction fixes: greedy, AETG-style, least-covered first.

Counts are kept over seed + accepted + leased cases. A value's quota is its weight times the cases
counted in its dimension; a pair's quota is the product of the two value shares, renormalised over
the allowed pairs of those two dimensions. A candidate is built value by value in a random dimension
order (as AETG does), each value the one with the largest deficit (single + pairs with the values
already fixed); the best of ``CANDIDATES`` candidates wins. Ties fall to a seeded ``random.Random``, so
the same history gives the same choice.

>>> counts = Counts.of(spec, seed_assignments)              # doctest: +SKIP
>>> choose(Quotas.of(spec), counts, random.Random("0/17"))      # doctest: +SKIP
{'persona': 'tenant', 'noise': 'light', ...}
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import combinations

from .errors import DatagenError

CANDIDATES = 20  # measured: 10, 20 and 30 give the same balance on the legal spec; 20 keeps a margin
SINGLE_WEIGHT = 4.0  # singles matter more than pairs: the per-dimension ratio is the target that must hold
Key = tuple[str, ...]  # (dim, value) or (dim_a, value_a, dim_b, value_b), dims in spec order


@dataclass
class Counts:
    """Cases per dimension value and per pair of values (an unlabelled dimension counts nowhere)."""

    cells: Counter = field(default_factory=Counter)

    @classmethod
    def of(cls, spec, assignments: Iterable[dict[str, str]]) -> Counts:
        counts = cls()
        for assignment in assignments:
            counts.add(spec, assignment)
        return counts

    def add(self, spec, assignment: dict[str, str], n: int = 1) -> None:
        for key in keys(spec, assignment):
            self.cells[key] += n

    def single(self, dim: str, value: str) -> int:
        return self.cells.get((dim, value), 0)


def keys(spec, assignment: dict[str, str]) -> list[Key]:
    """The counters an assignment moves: one per labelled dimension, one per labelled pair."""
    names = [d.name for d in spec.dimensions if d.name in assignment]
    out: list[Key] = [(name, assignment[name]) for name in names]
    out += [(a, assignment[a], b, assignment[b]) for a, b in combinations(names, 2)]
    return out


def key_text(key: Key) -> str:
    return json.dumps(list(key), ensure_ascii=False)


@lru_cache(maxsize=65536)  # the cover table's keys are a small fixed set, read on every choice
def key_of(text: str) -> Key:
    return tuple(json.loads(text))


@dataclass
class Quotas:
    """What the spec fixes once: values, weights, allowed pairs and their shares."""

    spec: object
    dims: list[str]
    values: dict[str, list[str]]
    weights: dict[str, dict[str, float]]
    pair_share: dict[tuple[str, str], dict[tuple[str, str], float]]

    @classmethod
    def of(cls, spec) -> Quotas:
        dims = [d.name for d in spec.dimensions]
        weights = {d.name: d.weights() for d in spec.dimensions}
        values = {d: [v for v in weights[d] if spec.allowed({d: v})] for d in dims}
        shares = {}
        for a, b in combinations(dims, 2):
            allowed = {(x, y): weights[a][x] * weights[b][y] for x in values[a] for y in values[b]
                       if spec.allowed({a: x, b: y})}
            total = sum(allowed.values()) or 1.0
            shares[(a, b)] = {pair: w / total for pair, w in allowed.items()}
        return cls(spec, dims, values, weights, shares)


class Scorer:
    """Deficits (quota minus count, the quota counting one more case) for one choice, computed once."""

    def __init__(self, plan: Quotas, counts: Counts) -> None:
        cells = counts.cells
        self.single: dict[str, dict[str, float]] = {}
        for d in plan.dims:
            n = sum(cells.get((d, v), 0) for v in plan.values[d])
            self.single[d] = {v: SINGLE_WEIGHT * (plan.weights[d][v] * (n + 1) - cells.get((d, v), 0))
                              for v in plan.values[d]}
        self.pair: dict[tuple[str, str], dict[tuple[str, str], float]] = {}
        for (a, b), share in plan.pair_share.items():
            n = sum(cells.get((a, x, b, y), 0) for x, y in share)
            for (x, y), s in share.items():
                deficit = s * (n + 1) - cells.get((a, x, b, y), 0)
                self.pair.setdefault((a, x), {})[(b, y)] = deficit
                self.pair.setdefault((b, y), {})[(a, x)] = deficit

    def value_score(self, dim: str, value: str, fixed: dict[str, str]) -> float | None:
        """None when the value makes a forbidden pair with one already fixed."""
        score = self.single[dim][value]
        pairs = self.pair.get((dim, value), {})
        for other in fixed.items():
            deficit = pairs.get(other)
            if deficit is None:
                return None
            score += deficit
        return score


def _interleave(dims: tuple[str, str], vals: tuple[str, str]) -> Key:
    return (dims[0], vals[0], dims[1], vals[1])


def choose(plan: Quotas, counts: Counts, rng: random.Random, candidates: int = CANDIDATES) -> dict[str, str]:
    """The assignment of every dimension that best fills what is least covered; DatagenError if none is allowed."""
    scorer = Scorer(plan, counts)
    best, best_score = None, float("-inf")
    for _ in range(candidates):
        built = _candidate(plan, scorer, rng)
        if built is None or not plan.spec.allowed(built[0]):
            continue
        if built[1] > best_score:
            best, best_score = built
    if best is None:
        raise DatagenError(f"no allowed combination of dimension values found in {candidates} tries",
                           hint="the spec's forbidden combinations and differs_from rules exclude (nearly) everything")
    return {d: best[d] for d in plan.dims}


def _candidate(plan: Quotas, scorer: Scorer, rng: random.Random) -> tuple[dict[str, str], float] | None:
    order = plan.dims[:]
    rng.shuffle(order)
    fixed: dict[str, str] = {}
    total = 0.0
    for dim in order:
        values = plan.values[dim][:]
        rng.shuffle(values)  # ties go to the first in a seeded order
        scored = [(s, v) for v in values if (s := scorer.value_score(dim, v, fixed)) is not None]
        if not scored:
            return None
        score, value = max(scored, key=lambda sv: sv[0])
        fixed[dim] = value
        total += score
    return fixed, total


def balance(spec_or_plan, counts: Counts | Iterable[dict[str, str]]) -> dict:
    """Balance figures: worst max/min of count/quota in a dimension, worst total-variation distance, pairs seen.

    ``worst_ratio`` is None while some allowed value has no case yet.
    """
    plan = spec_or_plan if isinstance(spec_or_plan, Quotas) else Quotas.of(spec_or_plan)
    if not isinstance(counts, Counts):
        counts = Counts.of(plan.spec, counts)
    per_dim = {d: _dimension_balance(plan, counts, d) for d in plan.dims}
    ratios = [b["ratio"] for b in per_dim.values()]
    covered = sum(1 for (a, b), share in plan.pair_share.items() for vals in share
                  if counts.cells.get(_interleave((a, b), vals), 0) > 0)
    allowed = sum(len(share) for share in plan.pair_share.values())
    return {"worst_ratio": None if None in ratios else max(ratios, default=1.0),
            "tv_distance": max((b["tv"] for b in per_dim.values()), default=0.0),
            "pairs_covered": covered, "pairs_allowed": allowed, "per_dimension": per_dim}


def _dimension_balance(plan: Quotas, counts: Counts, dim: str) -> dict:
    values = plan.values[dim]
    weights = {v: plan.weights[dim][v] for v in values}
    norm = sum(weights.values()) or 1.0
    n = sum(counts.single(dim, v) for v in values)
    ratios = [counts.single(dim, v) / (weights[v] / norm) for v in values if weights[v] > 0]
    ratio = None if not ratios or min(ratios) <= 0 else round(max(ratios) / min(ratios), 4)
    tv = 0.5 * sum(abs(counts.single(dim, v) / n - weights[v] / norm) for v in values) if n else 0.0
    return {"ratio": ratio, "tv": round(tv, 5), "n": n}


def coverage(plan: Quotas, counts: Counts, total: int) -> dict[str, dict[str, dict]]:
    """Per dimension value: its count and its quota out of ``total`` cases."""
    return {d: {v: {"count": counts.single(d, v), "quota": round(plan.weights[d][v] * total, 1)}
                for v in plan.weights[d]} for d in plan.dims}


def pair_coverage(plan: Quotas, counts: Counts) -> dict[str, dict]:
    """Per pair of dimensions: rows, cols and ``"row|col": count`` for the allowed cells only."""
    out = {}
    for (a, b), share in plan.pair_share.items():
        cells = {f"{x}|{y}": counts.cells.get((a, x, b, y), 0) for x, y in share}
        out[f"{a} × {b}"] = {"rows": list(plan.weights[a]), "cols": list(plan.weights[b]), "cells": cells,
                             "covered": sum(1 for c in cells.values() if c > 0), "allowed": len(cells)}
    return out
