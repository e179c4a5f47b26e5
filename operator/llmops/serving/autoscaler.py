"""The builtin autoscaler's runner: scrape the ready replicas, keep the per-service history
and policy state in this process's memory, and ask ``llmops.autoscaling.decide`` (the same
function the fleet simulator runs) for the Deployment's replicas.

The memory is per service uid: a recreated service starts afresh, and a restarted operator
starts from the current replica count. It never adds replicas while a server pod is failing:
they would run the same template.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import urllib.error
from collections import deque
from dataclasses import dataclass, field

from llmops.api import conditions as C
from llmops.api.conditions import parse_time
from llmops.api.inference import AutoscalingEngine, InferenceService, ScaleDecision
from llmops.autoscaling import AutoscaleInputs, Behaviour, FleetSample, PolicyState, decide, parse_vllm_metrics
from llmops.autoscaling.metrics import replica_signal
from llmops.autoscaling.policy import Reason
from llmops.builders import inference as B
from llmops.plan import inference as S
from llmops.serving.podhttp import call as get

logger = logging.getLogger(__name__)
HISTORY_SECONDS = 600.0


@dataclass
class Memory:
    """Per-service autoscaler memory (process-local)."""

    state: PolicyState = field(default_factory=PolicyState)
    history: deque = field(default_factory=lambda: deque(maxlen=256))
    last_scrape: dict[str, dict[str, float]] = field(default_factory=dict)  # pod -> parsed metrics
    completed: float = 0.0  # cumulative vllm:request_success_total increases over pods
    loads_recorded: set[str] = field(default_factory=set)  # pods whose load time went into the histogram


_MEMORY: dict[tuple[str, str, str], Memory] = {}
_LOCK = threading.Lock()


def memory(ns: str, name: str, uid: str) -> Memory:
    with _LOCK:
        for key in [k for k in _MEMORY if k[:2] == (ns, name) and k[2] != uid]:
            del _MEMORY[key]  # a recreated service starts afresh
        return _MEMORY.setdefault((ns, name, uid), Memory())


def forget(ns: str, name: str) -> None:
    with _LOCK:
        for key in [k for k in _MEMORY if k[:2] == (ns, name)]:
            del _MEMORY[key]


def scrape(pods: list[S.PodView]) -> dict[str, dict[str, float]]:
    out = {}
    for p in pods:
        if not (p.ready and p.ip and not p.deleting):
            continue
        try:
            text = get(f"http://{p.ip}:{B.PORT}/metrics")
        except (OSError, urllib.error.URLError) as exc:
            logger.debug("scrape of %s failed: %s", p.name, exc)
            continue
        parsed = parse_vllm_metrics(text)
        for line in text.splitlines():  # completions, for the policy's arrival-rate estimate
            if line.startswith("vllm:request_success_total"):
                parsed["success"] = parsed.get("success", 0.0) + float(line.rsplit(" ", 1)[-1])
        out[p.name] = parsed
    return out


def autoscale(svc: InferenceService, pods: list[S.PodView], current: int, now: float) -> tuple[int, ScaleDecision | None]:
    mem = memory(svc.metadata.namespace or "default", svc.metadata.name, svc.metadata.uid or "")
    scraped = scrape(pods)
    for pod, m in scraped.items():
        before = mem.last_scrape.get(pod, {}).get("success")
        if before is not None and m.get("success", 0.0) >= before:
            mem.completed += m.get("success", 0.0) - before
    signals = tuple(replica_signal(m, mem.last_scrape.get(pod)) for pod, m in sorted(scraped.items()))
    mem.last_scrape = scraped
    if scraped:
        mem.history.append(FleetSample(time=now, replicas=signals, completed=mem.completed))
    while mem.history and mem.history[0].time < now - HISTORY_SECONDS:
        mem.history.popleft()
    ready = sum(1 for p in pods if p.ready and not p.deleting)
    # Loading: started (or only created) but not ready, and not failing (a crash-looping pod is
    # no capacity on its way). The policy's replicas must be the Deployment's: at most
    # current - ready loading ones (the newest; a rollout's surge pod is no extra replica), and
    # slots the Deployment has no pod for yet count as loading since now, so a pending
    # scale-up is never repeated.
    loading = sorted(parse_time(p.start_time or p.created).timestamp() for p in pods
                     if not p.ready and not p.deleting and not p.failing and (p.start_time or p.created))
    slots = max(0, current - ready)
    loading = loading[len(loading) - min(slots, len(loading)):]
    failing = sum(1 for p in pods if p.failing)
    loading += [now] * max(0, slots - len(loading) - failing)
    loading = tuple(sorted(loading))
    ls = svc.status.load_seconds
    inputs = AutoscaleInputs(now=now, history=tuple(mem.history), ready_replicas=ready, loading_since=loading,
                             load_seconds_last=ls.last if ls else None, load_seconds_p95=ls.p95 if ls else None)
    previous_scale_up = mem.state.last_scale_up_at
    decision, mem.state = decide(inputs, Behaviour.from_spec(svc.spec), mem.state)
    desired = current if decision.reason == Reason.NO_METRICS else decision.desired
    desired = max(svc.spec.min_replicas, min(svc.spec.max_replicas, desired))
    blocked = S.scale_up_blocked(pods) if desired > current else None
    if blocked:
        # A new replica would run the failing template too: keep the count (and do not record
        # a scale-up in the policy state, so the next healthy decision is not held back by it).
        logger.info("%s/%s: not scaling up %d -> %d: %s", svc.metadata.namespace, svc.metadata.name, current, desired, blocked)
        mem.state = dataclasses.replace(mem.state, last_scale_up_at=previous_scale_up)
        return current, None
    if desired == current:
        return current, None
    when = C.rfc3339(dt.datetime.fromtimestamp(now, dt.UTC))
    return desired, ScaleDecision(time=when, **{"from": current}, to=desired, signal=svc.spec.autoscaling.signal.value,
                                  value=None if decision.signal_value is None else round(decision.signal_value, 4),
                                  reason=f"{decision.reason.value} (load time {decision.load_seconds:.0f}s)")


def desired_replicas(svc: InferenceService, deployment: dict | None, pods: list[S.PodView], now: float) -> tuple[int, ScaleDecision | None]:
    spec = svc.spec
    a = spec.autoscaling
    if a is None:
        return max(spec.min_replicas, 1), None
    if a.engine != AutoscalingEngine.BUILTIN:
        return (spec.replicas if spec.replicas is not None else spec.min_replicas), None
    current = int((deployment or {}).get("spec", {}).get("replicas", spec.min_replicas)) if deployment else max(spec.min_replicas, 1)
    current = max(spec.min_replicas, min(spec.max_replicas, current))
    return autoscale(svc, pods, current, now)
