"""Controllers the simulator drives: ours (the operator's own ``decide``, at the operator's
scrape cadence) and the baselines.

Baselines are re-implementations of the published algorithms with their documented defaults,
reduced to what matters here (see /work/shared/reference/inference-anchors.md section 2):
- ``hpa-keda``: the KEDA recipe on ``vllm:num_requests_waiting`` (vLLM production-stack's
  Helm default: threshold 5 per replica, minReplicaCount 1), acted on by the HPA KEDA
  generates, with HPA's default behaviour: ``desired = ceil(sum / target)`` outside a 10 %
  tolerance (an External AverageValue metric: loading pods add no capacity), scale-up at
  most ``max(100 %, 4 pods)`` per 15 s sync, scale-down to the highest recommendation of
  the last 300 s. The metric is read fresh each sync (no Prometheus scrape lag: that
  favours the baseline).
- ``kpa``: Knative's KPA as KServe Serverless runs vLLM: concurrency (running + held)
  per pod, target 70 % of ``containerConcurrency`` = ``max_num_seqs``; 60 s stable and 6 s
  panic windows; panic when the panic desire >= 2x ready pods, no scale-down while
  panicking (and 60 s after); scale-down at most halves the ready pods per 2 s tick;
  KServe's minReplicas 1.
- ``aibrix-apa``: see ``AibrixApaLike``.
- ``fixed``: a fixed fleet sized from the past: the smallest count that met the SLO for 95 %
  of requests on the tune half (same variant). ``fixed@ours`` (hindsight: the smallest count
  reaching our attainment on the data reported) is a reference, not a baseline.
- ``oracle-heur``: a heuristic that knows every future arrival (not a bound; the bound is
  ``bound.py``). Offered load per 30 s bucket (sum of service times / bucket length) ->
  ``ceil(load / (rho * max_num_seqs))`` replicas; desired at t is the largest need over
  ``[t, t + cold_start + bucket]`` so replicas are started one cold start ahead.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace

from llmops.autoscaling.policy import AutoscaleInputs, Behaviour, FleetSample, PolicyState, decide
from llmops.plan.inference import REQUEUE_SECONDS

from bench.autoscaling.sim import FleetModel, Request

__all__ = ["AibrixApaLike", "HpaLike", "KpaLike", "Oracle", "Ours", "Static", "oracle_needs"]


@dataclass
class Ours:
    """The operator's policy at the operator's cadence. It learns the load time as the
    operator does: ``load_guess`` (the operator's default before any load is measured) until
    a replica it started becomes ready, then the measured loads (last, and the nearest-rank
    p95 with the previous p95 counted as one sample, as ``llmops.plan.inference`` keeps it).
    The replicas present at t = 0 count as unmeasured (a restarted operator, or a fresh
    deployment whose first pods' readiness was not observed): the guess matters until the
    first scale-up lands."""

    behaviour: Behaviour
    load_guess: float
    sync: float = REQUEUE_SECONDS  # the operator's scrape-and-decide cadence
    name: str = "ours"
    state: PolicyState = field(default_factory=PolicyState)
    history: deque = field(default_factory=lambda: deque(maxlen=64))
    reasons: dict = field(default_factory=dict)
    loads: list = field(default_factory=list)
    p95: float | None = None

    def observe_ready(self, started: float, ready_at: float) -> None:
        self.loads.append(ready_at - started)
        values = sorted(self.loads[-20:] + ([self.p95] if self.p95 is not None else []))
        self.p95 = values[max(0, math.ceil(0.95 * len(values)) - 1)]

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        self.history.append(sample)
        last = self.loads[-1] if self.loads else None
        b = self.behaviour if self.loads else replace(self.behaviour, default_load_seconds=self.load_guess)
        inputs = AutoscaleInputs(now, tuple(self.history), ready, loading_since, last, self.p95)
        d, self.state = decide(inputs, b, self.state)
        self.reasons[d.reason.value] = self.reasons.get(d.reason.value, 0) + 1
        return d.desired


@dataclass
class HpaLike:
    target: float
    min_replicas: int
    max_replicas: int
    sync: float = 15.0
    stabilization: float = 300.0
    tolerance: float = 0.1
    name: str = "hpa-keda"
    recs: deque = field(default_factory=deque)

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        current = ready + len(loading_since)
        total = sample.waiting  # queue signal; loading pods contribute 0
        pods = max(current, 1)
        ratio = (total / pods) / self.target
        rec = current if abs(ratio - 1) <= self.tolerance and current else math.ceil(total / self.target - 1e-9)
        rec = max(self.min_replicas, min(self.max_replicas, rec))
        self.recs.append((now, rec))
        while self.recs and now - self.recs[0][0] > self.stabilization:
            self.recs.popleft()
        if rec > current:
            return min(rec, max(2 * current, current + 4))
        return min(current, max(r for _, r in self.recs))


@dataclass
class KpaLike:
    target_concurrency: float
    min_replicas: int
    max_replicas: int
    sync: float = 2.0
    stable_window: float = 60.0
    panic_window: float = 6.0
    name: str = "kpa"
    obs: deque = field(default_factory=deque)
    panic_until: float = -1.0

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        conc = sample.running + sample.waiting
        self.obs.append((now, conc))
        while self.obs and now - self.obs[0][0] > self.stable_window:
            self.obs.popleft()
        stable = sum(c for _, c in self.obs) / len(self.obs)
        pw = [c for t, c in self.obs if now - t <= self.panic_window]
        panic = sum(pw) / len(pw)
        d_stable = math.ceil(stable / self.target_concurrency - 1e-9)
        d_panic = math.ceil(panic / self.target_concurrency - 1e-9)
        current = ready + len(loading_since)
        if d_panic >= 2 * max(ready, 1) and d_panic > 0:
            self.panic_until = now + self.stable_window
        if now < self.panic_until:
            desired = max(current, d_panic, d_stable)
        else:
            desired = max(d_stable, math.floor(ready / 2)) if d_stable < current else d_stable
        return max(self.min_replicas, min(self.max_replicas, desired))


@dataclass
class AibrixApaLike:
    """AIBrix's APA as its docs describe it (inference-anchors.md 2.4): a dead-band rule on a
    per-pod metric, ``r = usage per pod / target``; above ``1 + 0.1``: ``min(ceil(N r),
    ceil(2 N))``; below ``1 - 0.1``: ``max(ceil(N r), floor(N / 2))``; scale-down cooldown
    300 s, scale-up cooldown 0. The metric is the docs' example, ``gpu_cache_usage_perc``
    with target 0.5, averaged over the ready pods; N is the Deployment's replicas (loading
    ones included: the pending-replica guard of aibrix#2671 is not in the documented
    release). Assumed, not documented: a 15 s sync, and the cooldown counted from the last
    scaling event."""

    target: float
    min_replicas: int
    max_replicas: int
    sync: float = 15.0
    tolerance: float = 0.1
    max_up_rate: float = 2.0
    max_down_rate: float = 2.0
    down_cooldown: float = 300.0
    name: str = "aibrix-apa"
    last_change: float = -1e18

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        n = ready + len(loading_since)
        if not sample.replicas:
            return max(n, self.min_replicas, 1 if sample.waiting else 0)
        use = sum(r.kv_cache_usage for r in sample.replicas) / len(sample.replicas)
        r = use / self.target
        desired = n
        if r > 1 + self.tolerance:
            desired = min(math.ceil(n * r - 1e-9), math.ceil(self.max_up_rate * n))
        elif r < 1 - self.tolerance and now - self.last_change >= self.down_cooldown:
            desired = max(math.ceil(n * r - 1e-9), math.floor(n / self.max_down_rate))
        desired = max(self.min_replicas, min(self.max_replicas, desired))
        if desired != n:
            self.last_change = now
        return desired


@dataclass
class Static:
    replicas: int
    sync: float = 60.0
    name: str = "static-peak"

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        return self.replicas


def oracle_needs(requests: list[Request], model: FleetModel, bucket: float, rho: float) -> list[int]:
    """Replicas each bucket needs, from the offered load (known in advance)."""
    if not requests:
        return [0]
    n = int(requests[-1].arrival // bucket) + 1
    load = [0.0] * n
    for r in requests:
        load[int(r.arrival // bucket)] += model.service(r)
    return [math.ceil(x / bucket / (rho * model.max_num_seqs) - 1e-9) for x in load]


@dataclass
class Oracle:
    needs: list[int]
    bucket: float
    lookahead: float  # cold start + one bucket
    min_replicas: int
    sync: float = 5.0
    name: str = "oracle-heur"

    def want(self, t: float) -> int:
        lo = int(max(t, 0) // self.bucket)
        hi = int((t + self.lookahead) // self.bucket)
        window = self.needs[lo : hi + 1]
        return max([self.min_replicas, *window]) if window else self.min_replicas

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        if int(now // self.bucket) >= len(self.needs):  # past the trace: serve what is left
            return max(ready + len(loading_since), self.min_replicas, 1 if sample.waiting else 0)
        return self.want(now)
