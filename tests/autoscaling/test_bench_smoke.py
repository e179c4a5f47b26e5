"""bench/autoscaling on small inputs: the trace loads and the variants keep their shape (where
the shared trace is present), the simulator conserves requests and GPU time, and the table
prints both halves with every policy, the bound and the load-time guesses, with sane numbers,
for a bursty synthetic trace in the same CSV format (the benchmark targets themselves are
reported by the full run, not asserted here)."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.autoscaling.policies import Static  # noqa: E402
from bench.autoscaling.run import DEFAULT_TRACE, load_trace, main, variant  # noqa: E402
from bench.autoscaling.sim import FleetModel, Request, simulate  # noqa: E402

needs_trace = pytest.mark.skipif(not DEFAULT_TRACE.exists(), reason="shared trace not present")


def synthetic_trace(path: Path, seconds: int = 900) -> Path:
    """The Azure trace's CSV shape: a steady 1 req/s with a 40 s burst of 12 req/s every 5 min."""
    import datetime as dt

    t0 = dt.datetime(2023, 11, 16, 18, 0, 0)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    t = 0.0
    while t < seconds:
        stamp = (t0 + dt.timedelta(seconds=t)).strftime("%Y-%m-%d %H:%M:%S.%f")
        lines.append(f"{stamp},{800 + int(t) % 7 * 300},{20 + int(t) % 5 * 10}")
        t += 1 / 12 if t % 300 < 40 else 1.0
    path.write_text("\n".join(lines) + "\n")
    return path


@needs_trace
def test_trace_and_variants() -> None:
    tr = load_trace(DEFAULT_TRACE)
    assert len(tr) == 8819 and tr[0].arrival == 0.0
    assert 3400 < tr[-1].arrival < 3450
    for name, k in (("rate4", 4), ("time4", 4)):
        v = variant(tr, name)
        assert len(v) == k * len(tr)
        assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(v))
        assert v[-1].arrival <= tr[-1].arrival + 1
        assert sum(r.prompt for r in v) == k * sum(r.prompt for r in tr)


def test_static_fleet_accounting() -> None:
    """A fixed fleet: GPU time = replicas x span; delays are zero when capacity is ample."""
    reqs = [Request(float(t), 800, 25) for t in range(0, 101, 5)]
    res = simulate(reqs, FleetModel(cold_start=60), Static(3), 3)
    assert res.gpu_seconds == pytest.approx(300.0)
    assert res.attainment(0.0) == 1.0 and res.max_replicas == 3


def test_queueing_when_short_of_capacity() -> None:
    # 1 slot, each request takes 1.1 s, arrivals every 0.5 s: delays grow
    reqs = [Request(i * 0.5, 800, 25) for i in range(10)]
    res = simulate(reqs, FleetModel(max_num_seqs=1, cold_start=60), Static(1), 1)
    assert res.delays[0] == 0.0 and res.delays[-1] > 4.0
    assert all(b >= a for a, b in zip(res.delays, res.delays[1:], strict=False))  # successive pairs: one shorter


def test_bench_prints_table(capsys, tmp_path: Path) -> None:  # noqa: ANN001
    trace = synthetic_trace(tmp_path / "trace.csv", seconds=1800)
    assert main(["--trace", str(trace), "--variants", "base", "--cold-starts", "60,300"]) == 0
    out = capsys.readouterr().out
    assert "split: tune = first half" in out
    assert out.count("== [tune] variant base") == 2 and out.count("== [test] variant base") == 2
    names = ("ours-L/3", "ours", "ours-3L", "hpa-keda", "kpa", "aibrix-apa", "fixed", "oracle-heur", "fixed@ours")
    rows = re.findall(r"^  (\S+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\S+)\s+(\S+)$", out, re.M)
    assert [r[0] for r in rows] == list(names) * 4
    for _name, att, gpuh, peak, _ups, _lb, _ratio in rows:
        assert 0.0 <= float(att) <= 1.0
        assert 0.0 < float(gpuh) <= int(peak) * 900 / 3600 + 1e-3
    for name, _att, gpuh, _peak, _ups, lb, _ratio in rows:  # the bound is below every row it applies to
        if not name.startswith("fixed") and lb != "unreach":
            assert float(lb) <= float(gpuh) + 1e-3
    assert out.count("vs bound") == 4 and out.count("vs hpa-keda") == 4 and out.count("vs fixed ") == 4


def test_fixed_at_is_the_smallest_fleet_reaching_the_attainment() -> None:
    from bench.autoscaling.run import fixed_at

    # 20 arrivals/s of 1.1 s requests: 22 busy slots, so 3 replicas of 8 serve all at once
    reqs = [Request(i * 0.05, 800, 25) for i in range(2000)]
    model = FleetModel(cold_start=60)
    full = fixed_at(reqs, model, 1.0, 0.0, peak=8)
    assert full.name == "fixed@ours" and full.peak == 3 and full.attainment == 1.0
    assert fixed_at(reqs, model, 1.0, 0.0, peak=2).peak == 2  # capped at the peak given
    assert fixed_at(reqs, model, 0.0, 0.0, peak=8).peak == 1


@pytest.mark.parametrize("cold", [60.0, 300.0])
def test_closed_loop_step_load_no_overshoot(cold: float) -> None:
    """A step to 20 req/s (2.75 replicas of work) from one warm replica: the policy stays
    within twice the need (the extra drains the backlog built while loading), while the
    HPA-like baseline on the same queue signal overshoots far beyond."""
    from bench.autoscaling.policies import HpaLike, Ours
    from bench.autoscaling.run import our_behaviour

    reqs = [Request(i * 0.05, 800, 25) for i in range(int(1500 / 0.05))]
    model = FleetModel(cold_start=cold)
    ours = simulate(reqs, model, Ours(our_behaviour(), load_guess=cold), 1)
    hpa = simulate(reqs, model, HpaLike(2.0, 1, 64), 1)
    assert 3 <= ours.max_replicas <= 6
    assert hpa.max_replicas > 2 * ours.max_replicas
    assert ours.scale_ups <= 1500 / cold + 1
    assert ours.gpu_hours < hpa.gpu_hours


def test_the_bench_runs_ours_with_the_operator_defaults() -> None:
    """The settings tune.py chose are what a user gets without setting them: the bench's
    ``TUNED`` equals the policy defaults that come from the CR's declared defaults."""
    from llmops.autoscaling.policy import Behaviour

    from bench.autoscaling.run import TUNED

    d = Behaviour()
    assert {k: float(getattr(d, k)) for k in TUNED} == TUNED
