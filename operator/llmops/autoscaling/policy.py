"""The load-time-aware replica policy for InferenceService (engine ``builtin``).

Why another autoscaler
----------------------
A vLLM replica is useless until its model is loaded, and that takes from one minute to most
of an hour. Autoscalers built on fixed timers (HPA's 300 s scale-down stabilisation, KPA's
60 s window) make two mistakes with such replicas. They keep adding while the first added
replicas still load, because the queue keeps growing until new capacity arrives: 2 -> 4 ->
8 -> 16. And they scale down after a lull shorter than a load, so the next burst waits a
whole load time in the queue. This policy feeds the *measured* load time ``L`` (p95 when
known, else the last, else a configured default) into every decision.

The decision, in order
----------------------
1. Demand. From the newest scrape of the ready replicas (``FleetSample``) compute an
   HPA-style recommendation ``up = ceil(ready * mean(signal) / target)`` (for the queue
   signal that is ``ceil(total waiting / target)``), skipped inside a +-tolerance band. The
   smallest recommendation of a scale-up stabilisation window is used, so a shortage must
   last before it buys a replica. The window is ``max(scale_up_stabilization_seconds,
   scale_up_stabilization_load_time_fraction * L)``: a replica arrives a load time later, so
   the longer the load, the longer a shortage may be required to last to be worth one (a
   30 s burst is over long before a 30 min load ends). The fraction defaults to 0 (chosen on
   the bench's tune half; see docs/autoscaling.md). A shortage that *recurs* within the scale-down
   hold is a pattern, not a blip: from the second shortage episode in the hold on, the
   window is the configured seconds only, and the replica bought then bridges to the next
   burst. A queue is a backlog, not a rate, so for the
   queue signal, when the caller also passes the fleet's completed-request counter, the
   recommendation is capped by the arrival rate: arrivals = completions + queue growth
   over ``rate_window_seconds``, divided by what one saturated replica completes per
   second (learned from windows where the queue never emptied), and at least one more than
   now while the queue is over target so the backlog drains. For scale-down a second
   figure estimates how many replicas the *running* requests need: ``running / c`` where
   ``c`` is the highest per-replica concurrency seen while requests were waiting (what one
   saturated replica carries); before any saturation was seen it is the current size.
2. Loading replicas count. Capacity is ``ready + loading``, where a loading replica counts
   until it has loaded for ``overdue_factor * L`` (after that it is presumed stuck). A
   recommendation already covered by that capacity adds nothing.
3. One scale-up per load time. After a scale-up, no further one while any replica started
   less than ``L`` ago is still loading: those replicas have not had time to show their
   effect, and the queue that grows meanwhile is exactly what they are coming to drain.
   When they are ready (or the window passed), a still-high signal scales up again. A single
   step may be capped by ``scale_up_max_step``.
4. Scale-down hold. Every decision records its need (max of the two figures above). The
   replica count only drops to the largest need recorded over the last
   ``H = max(scale_down_min_hold_seconds, scale_down_hold_load_time_multiple * L)``
   seconds, and never within ``H`` of the last scale-up: giving a replica back is cheap,
   getting it back costs ``L`` of queueing.
5. Scale to zero (opt-in, and only with ``min_replicas == 0``). Zero only after no request
   ran or waited for ``scale_to_zero_idle_seconds + L``: the longer a cold start, the more
   idle time it takes to be worth it. From zero, requests held in front of the fleet
   (``FleetSample.unrouted_waiting``) bring one replica (or the recommendation) back.
6. Clamp to ``[min_replicas, max_replicas]``.

Everything is an argument: the time (``now``), the metric history and the previous
``PolicyState``; the function returns the decision and the next state. Same inputs, same
output; the operator's timer and the bench's simulator call the very same function.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Any

from llmops.api.inference import Autoscaling, InferenceServiceSpec, ScaleDown, ScaleToZero, ScaleUp


def _default(model: Any, name: str) -> Any:
    """A ``spec.autoscaling`` field's default, from the API model (one place declares it)."""
    return model.model_fields[name].default

__all__ = [
    "AutoscaleInputs",
    "Behaviour",
    "Decision",
    "FleetSample",
    "PolicyState",
    "Reason",
    "ReplicaSignal",
    "SignalKind",
    "decide",
    "load_estimate",
]


class SignalKind(str, enum.Enum):
    """Signal names as in the CR (``spec.autoscaling.signal``)."""

    QUEUE = "queue"  # vllm:num_requests_waiting per replica
    KV_CACHE = "kvCache"  # KV-cache usage fraction 0..1 per replica
    TTFT = "ttft"  # time to first token, seconds


class Reason(str, enum.Enum):
    """Stable CamelCase reasons (they go into status.lastScaleDecision.reason)."""

    STABLE = "Stable"
    NO_METRICS = "NoMetrics"
    SCALE_UP = "ScaleUp"
    COVERED_BY_LOADING = "CoveredByLoadingReplicas"
    WAITING_FOR_LOADING = "WaitingForLoadingReplicas"
    HOLD_SCALE_DOWN = "HoldScaleDown"
    SCALE_DOWN = "ScaleDown"
    SCALE_TO_ZERO = "ScaleToZero"
    SCALE_FROM_ZERO = "ScaleFromZero"
    KEEP_WARM = "KeepWarm"
    AT_MAX = "AtMaxReplicas"
    AT_MIN = "AtMinReplicas"


@dataclass(frozen=True)
class ReplicaSignal:
    """One ready replica's scrape (see ``parse_vllm_metrics``)."""

    waiting: float = 0.0
    running: float = 0.0
    kv_cache_usage: float = 0.0
    ttft_seconds: float | None = None  # mean TTFT over the scrape interval, if any finished


@dataclass(frozen=True)
class FleetSample:
    """One scrape of all ready replicas at ``time``.

    ``unrouted_waiting``: requests held in front of the fleet (a router or activator holding
    requests while no replica is ready); the only demand signal at zero replicas.
    """

    time: float
    replicas: tuple[ReplicaSignal, ...] = ()
    unrouted_waiting: float = 0.0
    # Cumulative finished requests of the fleet (sum of per-pod vllm:request_success_total
    # increases, kept by the caller), or None when unknown. Lets the policy size a scale-up
    # by the arrival rate instead of by the backlog.
    completed: float | None = None

    @property
    def waiting(self) -> float:
        return sum(r.waiting for r in self.replicas) + self.unrouted_waiting

    @property
    def running(self) -> float:
        return sum(r.running for r in self.replicas)


@dataclass(frozen=True)
class Behaviour:
    """Policy parameters; names follow ``spec.autoscaling`` (camelCase there)."""

    min_replicas: int = 1
    max_replicas: int = 1
    signal: SignalKind = SignalKind.QUEUE
    target: float = _default(Autoscaling, "target")
    scale_up_stabilization_seconds: float = _default(ScaleUp, "stabilization_seconds")
    # Not in the CR: the stabilisation window may grow with the load time (see step 1). 0 (off)
    # was chosen on the tune half of the bench's trace (docs/autoscaling.md): with the
    # arrival-rate cap and one scale-up per load time, waiting a fraction of L bought less
    # than it cost in attainment.
    scale_up_stabilization_load_time_fraction: float = 0.0
    scale_up_max_step: int | None = None
    scale_down_hold_load_time_multiple: float = _default(ScaleDown, "hold_load_time_multiple")
    scale_down_min_hold_seconds: float = _default(ScaleDown, "min_hold_seconds")
    scale_to_zero_enabled: bool = _default(ScaleToZero, "enabled")
    scale_to_zero_idle_seconds: float = _default(ScaleToZero, "idle_seconds")
    # Not in the CR: operator settings with sensible defaults.
    default_load_seconds: float = 300.0  # before any load was measured
    tolerance: float = 0.1  # HPA's dead band around the target
    overdue_factor: float = 2.0  # a replica loading longer than this many L stops counting
    metrics_max_age_seconds: float = 120.0  # an older newest sample means "no metrics"
    rate_window_seconds: float = 60.0  # window for the arrival-rate estimate (queue signal)

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(self.min_replicas, 1):
            raise ValueError("need 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if self.min_replicas == 0 and not self.scale_to_zero_enabled:
            raise ValueError("min_replicas 0 needs scale_to_zero_enabled (scale-to-zero is opt-in)")
        if self.scale_up_stabilization_load_time_fraction < 0:
            raise ValueError("scale_up_stabilization_load_time_fraction must be >= 0")
        if self.target <= 0:
            raise ValueError("target must be > 0")
        if self.scale_up_max_step is not None and self.scale_up_max_step < 1:
            raise ValueError("scale_up_max_step must be >= 1")

    @classmethod
    def from_spec(cls, spec: InferenceServiceSpec) -> Behaviour:
        """The policy parameters an InferenceService's spec sets (``spec.autoscaling`` present)."""
        a = spec.autoscaling
        if a is None:
            raise ValueError("spec.autoscaling is not set")
        return cls(
            min_replicas=spec.min_replicas, max_replicas=spec.max_replicas,
            signal=SignalKind(a.signal.value), target=a.target,
            scale_up_stabilization_seconds=a.scale_up.stabilization_seconds, scale_up_max_step=a.scale_up.max_step,
            scale_down_hold_load_time_multiple=a.scale_down.hold_load_time_multiple,
            scale_down_min_hold_seconds=a.scale_down.min_hold_seconds,
            scale_to_zero_enabled=a.scale_to_zero.enabled, scale_to_zero_idle_seconds=a.scale_to_zero.idle_seconds,
        )


@dataclass(frozen=True)
class AutoscaleInputs:
    """What the operator (or the simulator) observed at ``now``."""

    now: float
    history: tuple[FleetSample, ...]  # oldest first; the policy reads the window it needs
    ready_replicas: int
    loading_since: tuple[float, ...] = ()  # start times of replicas started but not ready
    load_seconds_last: float | None = None
    load_seconds_p95: float | None = None


@dataclass(frozen=True)
class PolicyState:
    """Carried from one decision to the next (the operator keeps it in memory/status)."""

    last_scale_up_at: float | None = None
    last_active_at: float | None = None  # last time a request ran or waited
    needs: tuple[tuple[float, int], ...] = ()  # (time, need) within the scale-down hold
    first_seen_at: float | None = None
    saturated_concurrency: float = 0.0  # highest per-replica running seen while waiting > 0
    replica_rate: float = 0.0  # highest per-replica completions/s seen while saturated throughout
    short: bool = False  # the last decision saw demand above capacity
    shortages: tuple[float, ...] = ()  # start times of shortage episodes within the scale-down hold


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: Reason
    signal_value: float | None  # mean per-replica signal used (None without metrics)
    load_seconds: float  # the load time the decision assumed
    hold_seconds: float = 0.0


def load_estimate(inputs: AutoscaleInputs, behaviour: Behaviour) -> float:
    """p95 of measured loads when known, else the last one, else the configured default."""
    for v in (inputs.load_seconds_p95, inputs.load_seconds_last):
        if v is not None and v > 0:
            return float(v)
    return behaviour.default_load_seconds


def _mean_signal(sample: FleetSample, signal: SignalKind) -> float | None:
    reps = sample.replicas
    if signal is SignalKind.QUEUE:
        # Held requests count too: they are waiting for this fleet.
        return sample.waiting / max(len(reps), 1)
    if not reps:
        return None
    if signal is SignalKind.KV_CACHE:
        return sum(r.kv_cache_usage for r in reps) / len(reps)
    vals = [r.ttft_seconds for r in reps if r.ttft_seconds is not None]
    return sum(vals) / len(vals) if vals else 0.0


def _recommend(sample: FleetSample, b: Behaviour) -> tuple[int, float | None]:
    """HPA's proportional rule on one sample, with its tolerance band."""
    value = _mean_signal(sample, b.signal)
    ready = len(sample.replicas)
    if value is None:
        return ready, None
    if b.signal is SignalKind.QUEUE:
        total = sample.waiting
        if ready and abs(value / b.target - 1.0) <= b.tolerance:
            return ready, value
        return math.ceil(total / b.target - 1e-9), value
    if ready == 0:
        return 0, value
    ratio = value / b.target
    if abs(ratio - 1.0) <= b.tolerance:
        return ready, value
    return math.ceil(ready * ratio - 1e-9), value


def _rate_bound(samples: list[FleetSample], now: float, b: Behaviour, up: int, known_rate: float) -> tuple[int, float]:
    """Replicas the arrival rate needs, when completions are known; and the per-replica rate.

    A queue is a backlog, not a rate: a queue of 300 in front of 4 saturated replicas says
    the fleet is short, not that 150 replicas are needed (the HPA rule with target 2). With
    the completion counter, arrivals = completions + queue growth over the window, and one
    replica serves ``r`` requests/s, where ``r`` is the highest per-replica completion rate
    seen over a window in which the queue never emptied (a saturated replica's rate; before
    one was seen, the current rate, which understates it and so errs towards more replicas).
    The bound is arrivals / r, at least one more than now while the queue is over target (the
    backlog must drain). Completions known but none in the window: one more than now. Without
    the data: no bound.
    """
    latest = samples[-1]
    ready = len(latest.replicas)
    if latest.completed is None or ready == 0:
        return up, known_rate
    win = [s for s in samples if now - s.time <= b.rate_window_seconds and s.completed is not None]
    if len(win) < 2:
        return up, known_rate
    first = win[0]
    dt = latest.time - first.time
    served = (latest.completed - first.completed) / dt if dt > 0 else 0.0  # type: ignore[operator]
    if served <= 0:
        # Ready replicas that have completed nothing yet (just loaded, e.g. after a scale from
        # zero in front of a held backlog) give no rate: a backlog is no rate either, so add
        # at most one replica until completions say how fast the fleet drains it.
        return min(up, ready + 1), known_rate
    # replicas that were serving over the window (the count may have changed inside it)
    per_replica = served / (sum(len(s.replicas) for s in win[1:]) / (len(win) - 1) or 1)
    if first.waiting > 0 and latest.waiting > 0:  # queue never seen empty at the ends: saturated
        known_rate = max(known_rate, per_replica)
    growth = (latest.waiting - first.waiting) / dt
    need = math.ceil((served + max(growth, 0.0)) / max(per_replica, known_rate) - 1e-9)
    return max(need, ready + 1), known_rate


def _clamp(n: int, b: Behaviour) -> int:
    return max(b.min_replicas, min(b.max_replicas, n))


def decide(inputs: AutoscaleInputs, behaviour: Behaviour, state: PolicyState) -> tuple[Decision, PolicyState]:
    """One decision: desired Deployment replicas, why, and the next state. Pure."""
    b = behaviour
    now = inputs.now
    L = load_estimate(inputs, b)
    hold = max(b.scale_down_min_hold_seconds, b.scale_down_hold_load_time_multiple * L)
    loading_counted = sum(1 for t in inputs.loading_since if now - t < b.overdue_factor * L)
    loading_recent = sum(1 for t in inputs.loading_since if now - t < L)
    capacity = inputs.ready_replicas + loading_counted
    current = inputs.ready_replicas + len(inputs.loading_since)
    first_seen = state.first_seen_at if state.first_seen_at is not None else now

    samples = [s for s in inputs.history if s.time <= now]
    if not samples or now - samples[-1].time > b.metrics_max_age_seconds:
        keep = _clamp(current, b)
        d = Decision(keep, Reason.NO_METRICS, None, L, hold)
        return d, replace(state, first_seen_at=first_seen)
    latest = samples[-1]

    # 1. demand
    short = _recommend(latest, b)[0] > capacity
    shortages = tuple(t for t in state.shortages if now - t < hold) + ((now,) if short and not state.short else ())
    stabilization = b.scale_up_stabilization_seconds
    if len(shortages) < 2:  # a first shortage must last; a recurring one is a pattern
        stabilization = max(stabilization, b.scale_up_stabilization_load_time_fraction * L)
    window = [s for s in samples if now - s.time <= stabilization] or [latest]
    recs = [_recommend(s, b) for s in window]
    up = min(r for r, _ in recs)
    rate = state.replica_rate
    if b.signal is SignalKind.QUEUE:
        bound, rate = _rate_bound(samples, now, b, up, rate)
        up = min(up, bound)
    value = _recommend(latest, b)[1]
    sat = state.saturated_concurrency
    if latest.replicas and any(r.waiting > 0 for r in latest.replicas):
        sat = max(sat, max(r.running for r in latest.replicas))
    work = latest.running + latest.waiting
    if b.signal is SignalKind.QUEUE:
        # The queue says nothing about how few replicas would do; in-flight work does.
        in_flight = math.ceil(latest.running / sat - 1e-9) if sat > 0 else current
        need = max(up, in_flight) if work > 0 else up
    else:
        need = up
    active = work > 0
    last_active = now if active else state.last_active_at
    needs = (*((t, n) for t, n in state.needs if now - t < hold), (now, need))
    base = replace(state, short=short, shortages=shortages, last_active_at=last_active, needs=needs, first_seen_at=first_seen,
                   saturated_concurrency=sat, replica_rate=rate)

    def out(n: int, reason: Reason, **kw: object) -> tuple[Decision, PolicyState]:
        clamped = _clamp(n, b)
        if clamped < n:
            reason = Reason.AT_MAX
        elif clamped > n and reason is not Reason.SCALE_DOWN:  # scaling down to min is a scale-down
            reason = Reason.AT_MIN
        return Decision(clamped, reason, value, L, hold), replace(base, **kw)

    # 5a. scale from zero
    if current == 0:
        if latest.waiting > 0:
            return out(max(1, up), Reason.SCALE_FROM_ZERO, last_scale_up_at=now)
        return out(0, Reason.STABLE)

    # 2./3. scale up
    if up > capacity:
        in_window = state.last_scale_up_at is not None and now - state.last_scale_up_at < L
        if in_window and loading_recent > 0:
            return out(max(current, capacity), Reason.WAITING_FOR_LOADING)
        target = up if b.scale_up_max_step is None else min(up, capacity + b.scale_up_max_step)
        # Overdue loaders stay in the Deployment (they may still come up) but add nothing.
        target += current - capacity
        if _clamp(target, b) <= current:
            return out(current, Reason.AT_MAX)
        return out(target, Reason.SCALE_UP, last_scale_up_at=now)
    if up > inputs.ready_replicas and up <= capacity and loading_counted > 0:
        return out(current, Reason.COVERED_BY_LOADING)

    # 5b. scale to zero (opt-in, after idle + load allowance)
    idle_needed = b.scale_to_zero_idle_seconds + L
    idle_since = last_active if last_active is not None else first_seen
    if b.scale_to_zero_enabled and b.min_replicas == 0 and not active and now - idle_since >= idle_needed:
        return out(0, Reason.SCALE_TO_ZERO)

    # 4. scale down after the hold
    floor_n = max(n for _, n in needs)
    if b.scale_to_zero_enabled and b.min_replicas == 0:
        floor_n = max(floor_n, 1)  # zero only through the idle rule above
    if _clamp(need, b) < current:
        since_up = now - state.last_scale_up_at if state.last_scale_up_at is not None else math.inf
        observed = now - first_seen
        if floor_n < current and since_up >= hold and observed >= hold:
            reason = Reason.SCALE_DOWN
            if floor_n <= 1 and b.min_replicas == 0 and b.scale_to_zero_enabled:
                reason = Reason.KEEP_WARM
            return out(floor_n, reason)
        return out(current, Reason.HOLD_SCALE_DOWN)
    return out(current, Reason.STABLE)
