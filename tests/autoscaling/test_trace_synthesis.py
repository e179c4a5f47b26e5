"""bench/autoscaling/trace.py: the tune/test split, and the seeded multi-hour synthesis (same seed,
same trace; the rate follows the diurnal curve; requests keep the template's sizes)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.autoscaling.sim import Request  # noqa: E402
from bench.autoscaling.trace import split_halves, synthesize, variant  # noqa: E402


def template() -> list[Request]:
    """20 min: 1 req/s, with a 30 s burst of 10 req/s every 5 min."""
    out, t, i = [], 0.0, 0
    while t < 1200:
        out.append(Request(t, 100 + i % 50, 10 + i % 7))
        t += 0.1 if t % 300 < 30 else 1.0
        i += 1
    return out


def test_split_halves() -> None:
    reqs = template()
    h = split_halves(reqs)
    assert len(h["tune"]) + len(h["test"]) == len(reqs)
    assert h["test"][0].arrival == 0.0 and h["tune"][-1].arrival < reqs[-1].arrival / 2
    assert [(r.prompt, r.output) for r in h["tune"] + h["test"]] == [(r.prompt, r.output) for r in reqs]


def test_synthesis_is_seeded_and_deterministic() -> None:
    a = synthesize(template(), 3.0, seed=7)
    assert a == synthesize(template(), 3.0, seed=7)
    assert a != synthesize(template(), 3.0, seed=8)
    assert variant(template(), "long3", seed=7) == a
    assert all(x.arrival <= y.arrival for x, y in itertools.pairwise(a))
    assert a[0].arrival >= 0 and a[-1].arrival < 3 * 3600


def test_synthesis_follows_the_diurnal_curve() -> None:
    tpl = template()
    hours = 4.0
    out = synthesize(tpl, hours, seed=1)
    sizes = {(r.prompt, r.output) for r in tpl}
    assert all((r.prompt, r.output) in sizes for r in out)
    per_hour = [sum(1 for r in out if h * 3600 <= r.arrival < (h + 1) * 3600) for h in range(int(hours))]
    template_rate = len(tpl) / (tpl[-1].arrival + 1e-3)
    night = 0.134 * hours * 3600  # m(t) = 0 before this (low -0.4, high 2)
    assert not [r for r in out if r.arrival < night * 0.95 or r.arrival > hours * 3600 - night * 0.95]
    mid = sum(1 for r in out if abs(r.arrival - hours * 1800) < 900) / 1800
    assert 1.7 * template_rate < mid < 2.3 * template_rate  # the peak multiplier is 2
    assert per_hour[1] > per_hour[0] and per_hour[2] > per_hour[3]


def test_synthesis_keeps_bursts() -> None:
    """At the peak (two full layers), the template's 10x bursts still stand out."""
    out = synthesize(template(), 2.0, seed=3, low=2.0, high=2.0)
    counts = [sum(1 for r in out if s <= r.arrival < s + 10) for s in range(0, 7200, 10)]
    assert max(counts) >= 5 * sorted(counts)[len(counts) // 2]
