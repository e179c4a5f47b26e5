"""Replay a request trace through our policy, the baselines users run, and a lower bound.

    python -m bench.autoscaling [--trace PATH] [--halves tune,test] [--variants base,rate4,time4,long6]
                                [--cold-starts 60,300,1800] [--slo 2] [--limit-seconds N] [--seed 1]

The trace (any CSV with the Azure trace's columns) is split in two halves by time: our
settings were chosen on ``tune`` (``python -m bench.autoscaling.tune``) and are reported on
``test``; both are printed, each labelled. Variants per half are described in ``trace.py``
(``longH`` is an H-hour seeded synthesis). Every policy starts from what a deployment has:
``minReplicas`` (1) ready replica; none but ``oracle-heur`` sees a future arrival. Ours
learns its load time (see ``policies.Ours``) and runs three times, with its first guess at
1/3, 1 and 3 times the true cold start. ``bound`` is a lower bound on the GPU-hours of any
schedule reaching a given attainment (``bound.py``); every row shows its GPU-hours over the
bound at that row's attainment. Attainment = share of requests whose queueing delay is at
most the SLO. Deterministic.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # python bench/autoscaling/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "operator"))

from llmops.autoscaling.policy import Behaviour, SignalKind  # noqa: E402

from bench.autoscaling.bound import Bound, lower_bound  # noqa: E402
from bench.autoscaling.policies import AibrixApaLike, HpaLike, KpaLike, Oracle, Ours, Static, oracle_needs  # noqa: E402
from bench.autoscaling.sim import FleetModel, Request, SimResult, simulate  # noqa: E402
from bench.autoscaling.trace import load_trace, split_halves, variant  # noqa: E402

__all__ = ["DEFAULT_TRACE", "TUNED", "fixed_at", "load_trace", "main", "our_behaviour", "run_cell", "variant"]

# The trace lives in shared/ beside the repository (LLMOPS_SHARED overrides).
_SHARED = Path(os.environ.get("LLMOPS_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
DEFAULT_TRACE = _SHARED / "data" / "azure-llm-inference-2023-code.csv"
MIN_REPLICAS = 1  # what every policy starts from, ready at t = 0
MAX_REPLICAS = 64
KEDA_WAITING_THRESHOLD = 5.0  # production-stack Helm default trigger: vllm:num_requests_waiting > 5
BUCKET = 30.0
RHO = 0.8
FIXED_PAST_ATTAINMENT = 0.95  # the fixed fleet: the smallest that met this on the tune half
GUESSES = ((1 / 3, "ours-L/3"), (1.0, "ours"), (3.0, "ours-3L"))
ONLINE = ("hpa-keda", "kpa", "aibrix-apa", "fixed")

# Our settings, chosen by `python -m bench.autoscaling.tune` on the tune half only (see
# docs/autoscaling.md, "Where every setting comes from").
TUNED = {
    "target": 4.0,
    "scale_up_stabilization_load_time_fraction": 0.0,
    "scale_down_hold_load_time_multiple": 1.0,
    "scale_down_min_hold_seconds": 900.0,
}


def our_behaviour(zero: bool = False, **overrides: float) -> Behaviour:
    """The knobs a user would set in spec.autoscaling (and the operator defaults tuned here)."""
    s = {**TUNED, **overrides}
    return Behaviour(
        min_replicas=0 if zero else MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        signal=SignalKind.QUEUE,
        target=s["target"],
        scale_up_stabilization_load_time_fraction=s["scale_up_stabilization_load_time_fraction"],
        scale_down_hold_load_time_multiple=s["scale_down_hold_load_time_multiple"],
        scale_down_min_hold_seconds=s["scale_down_min_hold_seconds"],
        scale_to_zero_enabled=zero,
    )


@dataclass(frozen=True)
class Row:
    name: str
    attainment: float
    gpu_hours: float
    peak: int
    scale_ups: int


def _row(res: SimResult, slo: float, name: str | None = None) -> Row:
    return Row(name or res.name, res.attainment(slo), res.gpu_hours, res.max_replicas, res.scale_ups)


def fixed_size(reqs: list[Request], model: FleetModel, attainment: float, slo: float, cap: int = MAX_REPLICAS) -> int:
    """The smallest fixed fleet reaching ``attainment`` on ``reqs`` (``cap`` if none does);
    bisection (attainment grows with the fleet)."""
    lo, hi = 1, cap
    if simulate(reqs, model, Static(cap), cap).attainment(slo) < attainment - 1e-9:
        return cap
    while lo < hi:
        mid = (lo + hi) // 2
        if simulate(reqs, model, Static(mid), mid).attainment(slo) >= attainment - 1e-9:
            hi = mid
        else:
            lo = mid + 1
    return lo


def fixed_at(reqs: list[Request], model: FleetModel, attainment: float, slo: float, peak: int) -> Row:
    """The smallest fixed fleet, chosen in hindsight, that reaches ``attainment`` (else
    ``peak``): a reference for what always-warm capacity costs on this trace."""
    n = fixed_size(reqs, model, attainment, slo, max(peak, 1))
    return _row(simulate(reqs, model, Static(n, name="fixed@ours"), n), slo)


def run_cell(reqs: list[Request], cold: float, slo: float, fixed_n: int, zero: bool = False) -> tuple[list[Row], Bound]:
    model = FleetModel(cold_start=cold)
    ctls: list = [Ours(our_behaviour(), load_guess=f * cold, name=name) for f, name in GUESSES]
    if zero:
        ctls.append(Ours(our_behaviour(zero=True), load_guess=cold, name="ours-zero"))
    ctls += [
        HpaLike(KEDA_WAITING_THRESHOLD, MIN_REPLICAS, MAX_REPLICAS),
        KpaLike(0.7 * model.max_num_seqs, MIN_REPLICAS, MAX_REPLICAS),
        AibrixApaLike(0.5, MIN_REPLICAS, MAX_REPLICAS),
        Static(fixed_n, name="fixed"),
        Oracle(oracle_needs(reqs, model, BUCKET, RHO), BUCKET, cold + BUCKET, MIN_REPLICAS),
    ]
    rows = [_row(simulate(reqs, model, c, fixed_n if isinstance(c, Static) else MIN_REPLICAS), slo) for c in ctls]
    ours = next(r for r in rows if r.name == "ours")
    rows.append(fixed_at(reqs, model, ours.attainment, slo, MAX_REPLICAS))
    bound = lower_bound(reqs, model, slo, MIN_REPLICAS, MAX_REPLICAS, MIN_REPLICAS)
    return rows, bound


def verdict(rows: list[Row], bound: Bound) -> list[str]:
    by = {r.name: r for r in rows}
    ours = by["ours"]
    lines = []
    for b in ONLINE:
        o = by[b]
        att = ours.attainment >= o.attainment - 1e-9
        gpu = ours.gpu_hours <= o.gpu_hours + 1e-9
        lines.append(f"  vs {b:<11} attainment {ours.attainment - o.attainment:+.4f}  "
                     f"GPU-h ratio {ours.gpu_hours / max(o.gpu_hours, 1e-9):.3f}  "
                     f"{'MET' if att and gpu else 'MISSED'}{'' if att else ' (attainment)'}{'' if gpu else ' (GPU-h)'}")
    lb = bound.gpu_hours(ours.attainment)
    ratio = ours.gpu_hours / lb if lb > 0 and math.isfinite(lb) else math.inf
    lines.append(f"  vs {'bound':<11} at our attainment {lb:.3f} GPU-h  ratio {ratio:.3f}  "
                 f"{'MET' if ratio <= 1.25 else 'MISSED'} (target <= 1.25)")
    return lines


def _fmt_bound(x: float) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:.3f}" if math.isfinite(x) else "unreach"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.autoscaling", description=__doc__.split("\n")[0])
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    p.add_argument("--halves", default="tune,test", help="which halves to report (tune: where settings were chosen)")
    p.add_argument("--variants", default="base,rate4,time4,long6")
    p.add_argument("--cold-starts", default="60,300,1800")
    p.add_argument("--slo", type=float, default=2.0, help="queueing-delay SLO, seconds")
    p.add_argument("--seed", type=int, default=1, help="seed of the long-run synthesis")
    p.add_argument("--limit-seconds", type=float, default=None, help="replay only the first N seconds of each variant")
    a = p.parse_args(argv)
    halves = split_halves(load_trace(a.trace))
    colds = [float(x) for x in a.cold_starts.split(",")]
    fm = FleetModel()
    print(f"fleet: prefill {fm.prefill_tok_s:.0f} tok/s, decode {fm.decode_tok_s:.0f} tok/s/seq, max_num_seqs {fm.max_num_seqs}, "
          f"KV {fm.kv_tokens} tokens; SLO: queueing delay <= {a.slo:g} s; start: {MIN_REPLICAS} ready replica; ours: {TUNED}")
    print(f"split: tune = first half ({len(halves['tune'])} requests), test = second half ({len(halves['test'])} requests); "
          "settings were chosen on tune only")

    def cut(reqs: list[Request]) -> list[Request]:
        return [r for r in reqs if r.arrival <= a.limit_seconds] if a.limit_seconds is not None else reqs

    for v in a.variants.split(","):
        tune_reqs = cut(variant(halves["tune"], v, seed=a.seed))
        # the fixed fleet a user would size from the past: the tune half of the same variant
        fixed_n = fixed_size(tune_reqs, FleetModel(), FIXED_PAST_ATTAINMENT, a.slo)
        for half in a.halves.split(","):
            reqs = tune_reqs if half == "tune" else cut(variant(halves[half], v, seed=a.seed))
            for cold in colds:
                rows, bound = run_cell(reqs, cold, a.slo, fixed_n, zero=v.startswith("long"))
                print(f"\n== [{half}] variant {v} ({len(reqs)} requests, {reqs[-1].arrival / 60:.1f} min), cold start {cold:g} s")
                print(f"  {'policy':<12}{'attainment':>11}{'GPU-hours':>11}{'peak':>6}{'ups':>6}{'bound@att':>11}{'GPU-h/bound':>13}")
                for r in rows:
                    # the fixed fleets start with more than minReplicas warm: the bound (from
                    # minReplicas) does not apply to them
                    lb = bound.gpu_hours(r.attainment) if not r.name.startswith("fixed") else math.nan
                    ratio = f"{r.gpu_hours / lb:.3f}" if lb > 0 and math.isfinite(lb) else "-"
                    print(f"  {r.name:<12}{r.attainment:>11.4f}{r.gpu_hours:>11.3f}{r.peak:>6}{r.scale_ups:>6}"
                          f"{_fmt_bound(lb):>11}{ratio:>13}")
                curve = "  ".join(f"{x:.2f}:{_fmt_bound(bound.gpu_hours(x))}" for x in (0.5, 0.8, 0.9, 0.95, 0.99))
                print(f"  bound (attainment:GPU-h)  {curve}")
                for line in verdict(rows, bound):
                    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
