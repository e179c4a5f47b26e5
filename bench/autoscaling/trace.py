"""Traces for the autoscaling bench: load a CSV, split it for tuning and testing, derive the
variants, and synthesise multi-hour runs.

Any CSV with the Azure trace's columns works (``TIMESTAMP``, ``ContextTokens``,
``GeneratedTokens``; see shared/data/README.md).

Split. Settings are chosen on the first half of the trace (``tune``) and reported on the
second half (``test``); each half is re-based to start at t = 0.

Variants of a half: ``base`` as recorded; ``rateK`` superimposes K copies, copy i shifted by
i/K of the length (wrapping): K times the rate, same burst shapes; ``timeK`` compresses time
K-fold and loops the compressed half K times: same length, K times sharper bursts;
``longH`` is an H-hour synthesis (below).

Synthesis (``synthesize``). A half hour of trace exercises no scale-down hold, no idle period
and no scale-to-zero; a day does. The method, seeded and deterministic:

1. The rate multiplier over the run is one diurnal cycle,
   ``m(t) = max(0, low + (high - low) * (1 - cos(2 pi t / T)) / 2)``: it starts at night,
   peaks at mid-run (``high``) and returns. The default ``low`` is below zero, so the night
   has no traffic at all (about 13 % of the run at each end): idle periods long enough for
   the scale-down hold and for scale-to-zero.
2. ``ceil(high)`` layers are laid over ``[0, T)``. Layer j tiles the template back to back,
   each tile rotated by its own random offset (so tiles differ and layers do not line up).
3. A request of layer j at time t is kept with probability ``clamp(m(t) - j, 0, 1)``. The
   expected rate is m(t) times the template's; a kept request keeps its time, prompt and
   output, so bursts keep their shape and spacing and only their height follows m(t).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
from pathlib import Path

from bench.autoscaling.sim import Request

__all__ = ["load_trace", "split_halves", "synthesize", "variant"]


def load_trace(path: Path) -> list[Request]:
    """Requests with arrival times relative to the first row, sorted."""
    out: list[Request] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ts = row["TIMESTAMP"].strip()
            head, _, frac = ts.partition(".")
            t = dt.datetime.fromisoformat(head).timestamp() + float("0." + (frac or "0"))
            out.append(Request(t, int(row["ContextTokens"]), int(row["GeneratedTokens"])))
    out.sort(key=lambda r: r.arrival)
    t0 = out[0].arrival if out else 0.0
    return [Request(r.arrival - t0, r.prompt, r.output) for r in out]


def split_halves(reqs: list[Request]) -> dict[str, list[Request]]:
    """``tune``: arrivals in the first half of the span; ``test``: the rest, re-based to 0."""
    if not reqs:
        return {"tune": [], "test": []}
    mid = reqs[-1].arrival / 2
    tune = [r for r in reqs if r.arrival < mid]
    rest = [r for r in reqs if r.arrival >= mid]
    t0 = rest[0].arrival if rest else 0.0
    return {"tune": tune, "test": [Request(r.arrival - t0, r.prompt, r.output) for r in rest]}


def synthesize(template: list[Request], hours: float, seed: int, low: float = -0.4, high: float = 2.0) -> list[Request]:
    """A ``hours``-long trace with one diurnal cycle of rate built from ``template`` (see the
    module docstring). Same arguments, same trace."""
    if not template:
        return []
    if not low <= high or high <= 0:
        raise ValueError("need low <= high and high > 0")
    rng = random.Random(seed)
    span = template[-1].arrival + 1e-3
    total = hours * 3600.0

    def m(t: float) -> float:
        return max(0.0, low + (high - low) * (1 - math.cos(2 * math.pi * t / total)) / 2)

    out: list[Request] = []
    for layer in range(math.ceil(high)):
        for tile in range(math.ceil(total / span)):
            shift = rng.uniform(0.0, span)
            rotated = sorted(((r.arrival + shift) % span, r.prompt, r.output) for r in template)
            for a, p, o in rotated:
                t = tile * span + a
                if t >= total:
                    break
                keep = min(1.0, max(0.0, m(t) - layer))
                if rng.random() < keep:
                    out.append(Request(t, p, o))
    out.sort(key=lambda r: r.arrival)
    return out


def variant(reqs: list[Request], name: str, seed: int = 0) -> list[Request]:
    """``base``, ``rateK``, ``timeK`` or ``longH`` (see the module docstring)."""
    if name == "base":
        return list(reqs)
    if not reqs:
        return []
    span = reqs[-1].arrival + 1e-3
    if name.startswith("rate"):
        k = int(name[4:])
        out = [Request((r.arrival + i * span / k) % span, r.prompt, r.output) for i in range(k) for r in reqs]
    elif name.startswith("time"):
        k = int(name[4:])
        seg = span / k
        out = [Request(i * seg + r.arrival / k, r.prompt, r.output) for i in range(k) for r in reqs]
    elif name.startswith("long"):
        return synthesize(reqs, float(name[4:]), seed)
    else:
        raise ValueError(f"unknown variant {name!r}")
    return sorted(out, key=lambda r: r.arrival)
