"""Choose our policy's settings on the tune half only (the test half is never read here).

    python -m bench.autoscaling.tune [--trace PATH] [--variants base,rate4,time4,long6] [--cold-starts 60,300,1800]

For every point of a small grid (scale-up stabilisation fraction of L, scale-down hold
multiple of L, hold floor, queue target), ours runs on every tune cell (variant x cold
start), with the true load time as its first guess. A point scores, first, the number of
cells where ours meets every online baseline (attainment at least theirs at no more
GPU-hours) and, second, the mean ratio of its GPU-hours to the lower bound at its
attainment (lower is better). The best point is printed; ``run.TUNED`` holds it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from bench.autoscaling.bound import lower_bound
from bench.autoscaling.policies import Ours
from bench.autoscaling.run import (
    DEFAULT_TRACE,
    FIXED_PAST_ATTAINMENT,
    MAX_REPLICAS,
    MIN_REPLICAS,
    ONLINE,
    fixed_size,
    our_behaviour,
    run_cell,
)
from bench.autoscaling.sim import FleetModel, simulate
from bench.autoscaling.trace import load_trace, split_halves, variant

GRID = {
    "scale_up_stabilization_load_time_fraction": (0.0, 0.1, 0.3),
    "scale_down_hold_load_time_multiple": (1.0, 3.0),
    "scale_down_min_hold_seconds": (120.0, 300.0, 900.0),
    "target": (2.0, 4.0),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.autoscaling.tune", description=__doc__.split("\n")[0])
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    p.add_argument("--variants", default="base,rate4,time4,long6")
    p.add_argument("--cold-starts", default="60,300,1800")
    p.add_argument("--slo", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    tune = split_halves(load_trace(a.trace))["tune"]
    cells = []
    for v in a.variants.split(","):
        reqs = variant(tune, v, seed=a.seed)
        fixed_n = fixed_size(reqs, FleetModel(), FIXED_PAST_ATTAINMENT, a.slo)
        for cold in (float(x) for x in a.cold_starts.split(",")):
            rows, _ = run_cell(reqs, cold, a.slo, fixed_n)
            base = {r.name: r for r in rows if r.name in ONLINE}
            bound = lower_bound(reqs, FleetModel(cold_start=cold), a.slo, MIN_REPLICAS, MAX_REPLICAS, MIN_REPLICAS)
            cells.append((v, cold, reqs, base, bound))
    keys = list(GRID)
    scored = []
    for point in itertools.product(*(GRID[k] for k in keys)):
        settings = dict(zip(keys, point, strict=True))
        met, ratios = 0, []
        for _v, cold, reqs, base, bound in cells:
            res = simulate(reqs, FleetModel(cold_start=cold), Ours(our_behaviour(**settings), load_guess=cold), MIN_REPLICAS)
            att = res.attainment(a.slo)
            met += sum(att >= b.attainment - 1e-9 and res.gpu_hours <= b.gpu_hours + 1e-9 for b in base.values())
            ratios.append(res.gpu_hours / max(bound.gpu_hours(att), 1e-9))
        mean_ratio = sum(ratios) / len(ratios)
        scored.append((-met, mean_ratio, settings))
        print(f"{settings}  (cell, baseline) pairs met {met}/{len(cells) * len(ONLINE)}  mean GPU-h/bound {mean_ratio:.3f}", flush=True)
    scored.sort(key=lambda x: (x[0], x[1]))
    print(f"\nchosen: {scored[0][2]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
