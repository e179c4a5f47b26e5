"""Controllers the simulator drives: ours (the operator's own ``decide``, at the operator's
scrape cadence) and the baselines.

Baselines are re-implementations of the published algorithms, reduced to what matters here
(see /work/shared/reference/inference-anchors.md §2):
- HPA-like: 15 s sync; Pods metric on the same signal and target as ours; pods without a
  metric (still loading) count as 0 (what the replica calculator does on scale-up);
  ``desired = ceil(sum / target)`` outside a 10 % tolerance; scale-up at most
  ``max(100 %, 4 pods)`` per sync; scale-down to the highest recommendation of the last 300 s.
- KPA-like: 2 s tick; concurrency (running + held/waiting) per pod with target
  ``0.7 * max_num_seqs`` (Knative's 70 % utilisation); 60 s stable and 6 s panic windows;
  panic when the panic desire >= 2x ready pods, no scale-down while panicking (and 60 s
  after); scale-down at most halves the ready pods per tick.
- Static: a fixed count, ready from t=0: the oracle's peak (``static-peak``), or the smallest
  count reaching our attainment, found by replaying (``fixed@ours``, hindsight).
- Oracle: knows every future arrival. Offered load per 30 s bucket (sum of service times /
  bucket length) -> ``ceil(load / (rho * max_num_seqs))`` replicas; desired at t is the
  largest need over ``[t, t + cold_start + bucket]`` so replicas are started one cold start
  ahead and gaps shorter than a cold start are bridged (reloading would cost as much).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from llmops.autoscaling.policy import AutoscaleInputs, Behaviour, FleetSample, PolicyState, decide
from llmops.plan.inference import REQUEUE_SECONDS

from bench.autoscaling.sim import FleetModel, Request

__all__ = ["HpaLike", "KpaLike", "Oracle", "Ours", "Static", "oracle_needs"]


@dataclass
class Ours:
    behaviour: Behaviour
    load_seconds: float | None  # what the operator measured on earlier loads
    sync: float = REQUEUE_SECONDS  # the operator's scrape-and-decide cadence
    name: str = "ours"
    state: PolicyState = field(default_factory=PolicyState)
    history: deque = field(default_factory=lambda: deque(maxlen=64))
    reasons: dict = field(default_factory=dict)

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        self.history.append(sample)
        inputs = AutoscaleInputs(now, tuple(self.history), ready, loading_since, self.load_seconds, self.load_seconds)
        d, self.state = decide(inputs, self.behaviour, self.state)
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
    name: str = "hpa"
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
    name: str = "oracle"

    def want(self, t: float) -> int:
        lo = int(max(t, 0) // self.bucket)
        hi = int((t + self.lookahead) // self.bucket)
        window = self.needs[lo : hi + 1]
        return max([self.min_replicas, *window]) if window else self.min_replicas

    def step(self, now: float, sample: FleetSample, ready: int, loading_since: tuple[float, ...]) -> int:
        if int(now // self.bucket) >= len(self.needs):  # past the trace: serve what is left
            return max(ready + len(loading_since), self.min_replicas, 1 if sample.waiting else 0)
        return self.want(now)
