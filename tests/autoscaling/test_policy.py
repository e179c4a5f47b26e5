"""The load-time-aware autoscaling policy (llmops.autoscaling.policy.decide), table-driven:
no overshoot while replicas load, one scale-up per load time under sustained load, the
scale-down hold sized from the load time (with its floor), opt-in scale-to-zero after idle +
load allowance, scale-from-zero, min/max clamps, the rate bound on backlog-driven scale-up,
overdue loaders, the scale-up stabilisation that grows with the load time (and is dropped
for a recurring shortage), missing metrics, determinism and input validation."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from llmops.autoscaling.policy import (
    AutoscaleInputs,
    Behaviour,
    FleetSample,
    PolicyState,
    Reason,
    ReplicaSignal,
    SignalKind,
    decide,
)


def fleet(
    t: float, ready: int, waiting_each: float = 0.0, running_each: float = 0.0, completed: float | None = None, kv: float = 0.0
) -> FleetSample:
    reps = tuple(ReplicaSignal(waiting=waiting_each, running=running_each, kv_cache_usage=kv) for _ in range(ready))
    return FleetSample(t, reps, completed=completed)


def inputs(now: float, ready: int, *samples: FleetSample, loading: tuple[float, ...] = (), load: float | None = 300.0) -> AutoscaleInputs:
    return AutoscaleInputs(now, samples, ready, loading, load, load)


B = Behaviour(min_replicas=1, max_replicas=20, target=2.0)
# the load-time-scaled scale-up stabilisation (off by default) at a tenth of L
B_SCALED = dataclasses.replace(B, scale_up_stabilization_load_time_fraction=0.1)


@pytest.mark.parametrize(
    "name,ready,waiting_each,loading,last_up,expect_n,expect_reason",
    [
        # 2 ready, 2 loading (started 60 s ago by our own scale-up): the queue is still high
        # but the loaders had no time to help -> hold at 4, do not go to 8.
        ("overshoot guard", 2, 8.0, (940.0, 940.0), 940.0, 4, Reason.WAITING_FOR_LOADING),
        # queue asks for 3, 2 ready + 2 loading already cover it
        ("covered by loading", 2, 3.0, (940.0, 940.0), 940.0, 4, Reason.COVERED_BY_LOADING),
        # a load time after the last scale-up, loaders finished: a still-high queue may add again
        ("window over", 4, 4.0, (), 600.0, 8, Reason.SCALE_UP),
        # replicas loaded faster than L (none loading any more): no reason to wait
        ("loaders already ready", 4, 4.0, (), 990.0, 8, Reason.SCALE_UP),
        ("first scale-up", 2, 4.0, (), None, 4, Reason.SCALE_UP),
        ("in tolerance band", 2, 2.1, (), None, 2, Reason.STABLE),
    ],
)
def test_scale_up_rules(name, ready, waiting_each, loading, last_up, expect_n, expect_reason):
    st = PolicyState(last_scale_up_at=last_up, first_seen_at=0.0)
    d, _ = decide(inputs(1000.0, ready, fleet(1000.0, ready, waiting_each, 8), loading=loading), B, st)
    assert (d.desired, d.reason) == (expect_n, expect_reason), name


@pytest.mark.parametrize("load", [60.0, 300.0, 1800.0])
def test_sustained_load_scales_up_once_per_load_time(load: float) -> None:
    """Closed loop: replicas become ready exactly `load` s after being added; the queue stays
    high throughout (demand far above any capacity). Scale-ups are >= L apart, and the
    fleet grows per load time instead of 2 -> 4 -> 8 -> 16 per sync."""
    b = Behaviour(min_replicas=1, max_replicas=1000, target=2.0)
    st = PolicyState()
    ready, loading = 2, []
    ups: list[float] = []
    t = 0.0
    while t <= 3 * load:
        ready += sum(1 for s in loading if t - s >= load)
        loading = [s for s in loading if t - s < load]
        d, st = decide(inputs(t, ready, fleet(t, ready, 10.0, 8), loading=tuple(loading), load=load), b, st)
        if d.desired > ready + len(loading):
            ups.append(t)
            loading += [t] * (d.desired - ready - len(loading))
        t += 15.0
    assert len(ups) >= 2
    assert all(b2 - a >= load for a, b2 in itertools.pairwise(ups)), ups
    assert len(ups) <= 4


@pytest.mark.parametrize(
    "load,mult,floor,expect_hold",
    [(60.0, 3.0, 300.0, 300.0), (300.0, 3.0, 300.0, 900.0), (1800.0, 2.0, 300.0, 3600.0), (100.0, 0.0, 120.0, 120.0)],
)
def test_scale_down_only_after_hold(load, mult, floor, expect_hold) -> None:
    b = Behaviour(min_replicas=1, max_replicas=20, target=2.0, scale_down_hold_load_time_multiple=mult, scale_down_min_hold_seconds=floor)
    st = PolicyState()
    # a busy period at 6 replicas, then nothing at all
    d, st = decide(inputs(0.0, 6, fleet(0.0, 6, 2.0, 8), load=load), b, st)
    assert d.desired == 6 and d.hold_seconds == expect_hold
    t = 15.0
    reasons = []
    while t < expect_hold + 60:
        d, st = decide(inputs(t, 6, fleet(t, 6), load=load), b, st)
        reasons.append((t, d.desired, d.reason))
        t += 15.0
    before = [r for r in reasons if r[0] < expect_hold]
    after = [r for r in reasons if r[0] >= expect_hold]
    assert all(n == 6 and why == Reason.HOLD_SCALE_DOWN for _, n, why in before)
    assert after[0][1] == 1 and after[0][2] == Reason.SCALE_DOWN


def test_scale_down_goes_to_the_largest_need_in_the_hold() -> None:
    """A replica carrying 8 running (the saturated concurrency seen) still needs its replica."""
    st = PolicyState()
    d, st = decide(inputs(0.0, 6, fleet(0.0, 6, 1.0, 8)), B, st)  # saturation seen: 8 per replica
    for t in range(15, 2000, 15):
        d, st = decide(inputs(float(t), 6, FleetSample(float(t), (ReplicaSignal(running=8),) * 3 + (ReplicaSignal(),) * 3)), B, st)
    assert d.desired == 3 and d.reason == Reason.SCALE_DOWN


@pytest.mark.parametrize(
    "enabled,min_r,idle,load,t_idle,expect",
    [
        (False, 1, 900.0, 300.0, 5000.0, 1),  # not opted in: never below min 1
        (True, 0, 900.0, 300.0, 1199.0, 1),  # opted in, idle < idle + L: keep one warm
        (True, 0, 900.0, 300.0, 1200.0, 0),  # idle == idle + L: zero
        (True, 0, 900.0, 1800.0, 2600.0, 1),  # a long load needs a longer idle
        (True, 0, 900.0, 1800.0, 2700.0, 0),
        (True, 1, 900.0, 300.0, 5000.0, 1),  # opted in but min 1 wins
    ],
)
def test_scale_to_zero_opt_in_after_idle_plus_load(enabled, min_r, idle, load, t_idle, expect) -> None:
    b = Behaviour(min_replicas=min_r, max_replicas=4, target=2.0, scale_to_zero_enabled=enabled, scale_to_zero_idle_seconds=idle,
                  scale_down_min_hold_seconds=60, scale_down_hold_load_time_multiple=0)
    st = PolicyState()
    d, st = decide(inputs(0.0, 1, fleet(0.0, 1, 0, 1), load=load), b, st)  # last activity at 0
    t = 30.0
    while t < t_idle:
        d, st = decide(inputs(t, 1, fleet(t, 1), load=load), b, st)
        assert d.desired == 1
        t += 30.0
    d, st = decide(inputs(t_idle, 1, fleet(t_idle, 1), load=load), b, st)
    assert d.desired == expect
    if expect == 0:
        assert d.reason == Reason.SCALE_TO_ZERO


def test_scale_from_zero_on_held_requests() -> None:
    b = Behaviour(min_replicas=0, max_replicas=4, target=2.0, scale_to_zero_enabled=True)
    d, st = decide(inputs(10.0, 0, FleetSample(10.0, (), unrouted_waiting=0)), b, PolicyState())
    assert (d.desired, d.reason) == (0, Reason.STABLE)
    d, st = decide(inputs(20.0, 0, FleetSample(20.0, (), unrouted_waiting=3)), b, st)
    assert d.desired == 2 and d.reason == Reason.SCALE_FROM_ZERO
    d, _ = decide(inputs(30.0, 0, FleetSample(30.0, (), unrouted_waiting=5), loading=(20.0, 20.0)), b, st)
    assert d.desired == 2  # the loading pair covers/waits; no second scale-up


@pytest.mark.parametrize(
    "ready,waiting_each,min_r,max_r,expect,reason",
    [(2, 20.0, 1, 5, 5, Reason.AT_MAX), (5, 10.0, 1, 5, 5, Reason.AT_MAX), (1, 0.0, 3, 5, 3, Reason.AT_MIN)],
)
def test_min_max_clamps(ready, waiting_each, min_r, max_r, expect, reason) -> None:
    b = Behaviour(min_replicas=min_r, max_replicas=max_r, target=2.0)
    d, _ = decide(inputs(0.0, ready, fleet(0.0, ready, waiting_each, 8)), b, PolicyState())
    assert (d.desired, d.reason) == (expect, reason)


def test_rate_bound_sizes_scale_up_by_arrivals_not_backlog() -> None:
    """4 saturated replicas complete 8 req/s; the queue grew 8 -> 200 in 60 s (3.2 req/s more
    than served): arrivals ~11.2 req/s need 6 replicas, not ceil(200/2) = 100."""
    s0 = FleetSample(0.0, tuple(ReplicaSignal(waiting=2, running=8) for _ in range(4)), completed=1000.0)
    s1 = FleetSample(60.0, tuple(ReplicaSignal(waiting=50, running=8) for _ in range(4)), completed=1480.0)
    b = Behaviour(min_replicas=1, max_replicas=200, target=2.0)
    d, _ = decide(AutoscaleInputs(60.0, (s0, s1), 4, (), 300.0, 300.0), b, PolicyState())
    assert (d.desired, d.reason) == (6, Reason.SCALE_UP)
    # without the completion counter the HPA rule stands
    s0n, s1n = FleetSample(0.0, s0.replicas), FleetSample(60.0, s1.replicas)
    d, _ = decide(AutoscaleInputs(60.0, (s0n, s1n), 4, (), 300.0, 300.0), b, PolicyState())
    assert d.desired == 100


def test_overdue_loader_does_not_count_as_capacity() -> None:
    # one replica has been loading for 3 L: presumed stuck, so the queue adds a fresh one
    d, _ = decide(inputs(1000.0, 2, fleet(1000.0, 2, 3.0, 8), loading=(100.0,)), B, PolicyState(first_seen_at=0.0))
    assert d.reason == Reason.SCALE_UP and d.desired == 4  # 3 needed + the overdue one kept


@pytest.mark.parametrize("history_age", [None, 500.0])
def test_no_or_stale_metrics_keep_current(history_age) -> None:
    hist = () if history_age is None else (fleet(1000.0 - history_age, 3, 50.0, 8),)
    d, _ = decide(AutoscaleInputs(1000.0, hist, 3, (990.0,), None, None), B, PolicyState())
    assert (d.desired, d.reason, d.load_seconds) == (4, Reason.NO_METRICS, 300.0)


@pytest.mark.parametrize(
    "signal,target,value_each,ready,expect",
    [(SignalKind.KV_CACHE, 0.5, 0.9, 2, 4), (SignalKind.KV_CACHE, 0.5, 0.1, 4, 4), (SignalKind.TTFT, 1.0, 3.0, 2, 6)],
)
def test_other_signals_proportional(signal, target, value_each, ready, expect) -> None:
    b = Behaviour(min_replicas=1, max_replicas=10, signal=signal, target=target)
    reps = tuple(ReplicaSignal(kv_cache_usage=value_each, ttft_seconds=value_each, running=1) for _ in range(ready))
    d, _ = decide(AutoscaleInputs(0.0, (FleetSample(0.0, reps),), ready, (), 60.0, 60.0), b, PolicyState())
    assert d.desired == expect  # low kv at t=0: the hold keeps 4


def _run_burst(load: float, burst_starts: list[float], burst_len: float, until: float, sync: float = 10.0) -> list[tuple[float, int]]:
    """Closed loop on a 2-replica fleet: a queue of 10 per replica during each burst, none
    otherwise. Returns (time, new desired) of every scale-up."""
    st, hist, ups = PolicyState(first_seen_at=0.0), [], []
    ready, loading, t = 2, [], 0.0
    while t <= until:
        ready += sum(1 for s in loading if t - s >= load)
        loading = [s for s in loading if t - s < load]
        waiting = 10.0 if any(s <= t < s + burst_len for s in burst_starts) else 0.0
        hist = [*hist, fleet(t, ready, waiting, 8 if waiting else 2)][-64:]
        d, st = decide(AutoscaleInputs(t, tuple(hist), ready, tuple(loading), load, load), B_SCALED, st)
        if d.desired > ready + len(loading):
            ups.append((t, d.desired))
            loading += [t] * (d.desired - ready - len(loading))
        t += sync
    return ups


@pytest.mark.parametrize(
    "load,burst_len,expect_up",
    [
        (60.0, 20.0, True),  # window 6 s < one scrape: a short shortage still buys a replica
        (1800.0, 60.0, False),  # a 1 min burst is over long before a 30 min load ends
        (1800.0, 240.0, True),  # lasting longer than a tenth of the load: worth a replica
        (300.0, 20.0, False),
        (300.0, 60.0, True),
    ],
)
def test_scale_up_stabilisation_grows_with_load_time(load, burst_len, expect_up) -> None:
    ups = _run_burst(load, [100.0], burst_len, 100.0 + burst_len + 30)
    assert bool(ups) is expect_up, ups
    if ups:  # not before a tenth of the load had passed with the fleet short
        assert ups[0][0] - 100.0 >= 0.1 * load - 10.0


def test_recurring_shortage_scales_up_without_waiting() -> None:
    """Two 20 s bursts 4 min apart with L = 300 s (hold 900 s): the first is too short to
    buy a replica, the second is a pattern and buys one at once."""
    ups = _run_burst(300.0, [100.0, 340.0], 20.0, 400.0)
    assert [t for t, _ in ups] == [340.0], ups


def test_shortages_forgotten_after_the_hold() -> None:
    """A burst after the hold has passed is a first shortage again."""
    ups = _run_burst(300.0, [100.0, 100.0 + 900.0 + 50.0], 20.0, 1100.0)
    assert ups == []


def test_deterministic() -> None:
    seq = [fleet(float(t), 3, (t % 7) * 1.5, 8, completed=float(t * 3)) for t in range(0, 3000, 15)]

    def run() -> list[tuple[int, str]]:
        st, out = PolicyState(), []
        for i, s in enumerate(seq):
            d, st = decide(AutoscaleInputs(s.time, tuple(seq[max(0, i - 8) : i + 1]), 3, (), 120.0, 200.0), B, st)
            out.append((d.desired, d.reason.value))
        return out

    assert run() == run()


@pytest.mark.parametrize(
    "kw",
    [dict(min_replicas=0), dict(min_replicas=3, max_replicas=2), dict(target=0), dict(scale_up_max_step=0),
     dict(scale_up_stabilization_load_time_fraction=-0.1)],
)
def test_behaviour_validation(kw) -> None:
    with pytest.raises(ValueError):
        Behaviour(**kw)


def test_backlog_after_scale_from_zero_is_no_rate() -> None:
    """A replica just loaded after a scale from zero faces 1000 held requests; it has completed
    nothing yet, so the backlog must not size the fleet (it did: straight to maxReplicas)."""
    b = Behaviour(min_replicas=0, max_replicas=64, target=4.0, scale_to_zero_enabled=True)
    hist = tuple(FleetSample(float(t), (), unrouted_waiting=900.0 + t, completed=50.0) for t in range(0, 60, 10))
    hist += (FleetSample(60.0, (ReplicaSignal(waiting=1000.0, running=8.0),), completed=50.0),)
    st = PolicyState(first_seen_at=0.0, last_scale_up_at=-1800.0)
    d, st = decide(AutoscaleInputs(60.0, hist, 1, (), 1800.0, 1800.0), b, st)
    assert d.desired == 2, d
    # once completions show the rate (5 per second, the queue shrinking), it sizes by that
    hist += (FleetSample(70.0, (ReplicaSignal(waiting=955.0, running=8.0),), completed=100.0),)
    d, _ = decide(AutoscaleInputs(70.0, hist, 1, (), 1800.0, 1800.0), b, st)
    assert d.desired <= 2, d
