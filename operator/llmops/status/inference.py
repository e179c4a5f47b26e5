"""InferenceService status and plan: (service, observed facts, now) -> status, children, events.

Pure and deterministic: the same inputs give the same status (conditions keep their
lastTransitionTime unless their status flips), so a reconcile with nothing new writes nothing.

Conditions:

* ``ModelCached``: True/ModelVerified once a server pod's fetch init container exited 0
  (its termination message carries the digest); False with the fetcher's reason
  (PickleNotAllowed, ModelDigestMismatch, ModelNotFound, ...) and its detail (naming the
  file) when one failed; False/ModelFetching while fetching.
* ``Ready``: True/ReplicasReady when at least min(desired, max(minReplicas, 1)) replicas are
  ready; False/ScaledToZero at zero desired; else False/ReplicasUnavailable.
* ``Degraded``: True when fewer replicas than desired are ready and a pod failed: the fetch
  reason, InsufficientGPUMemory for vLLM's out-of-memory / KV-cache-too-small text, or
  ServerFailed; else False/ReplicasReady.
* ``Progressing``: True/RolloutInProgress while the Deployment has not caught up with the
  template or the replica count; True/ScalingUp|ScalingDown right after an autoscaler
  change; else False/ReplicasReady.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops.api import conditions as C
from llmops.api.conditions import Condition, ConditionStatus
from llmops.api.inference import AdapterStatus, InferenceService, InferenceServiceStatus, LoadSeconds, ResolvedModel, ScaleDecision
from llmops.api.runtime_env import FETCH_OK_REASON, FETCH_REASONS, parse_termination_message
from llmops.builders import inference as B

INSUFFICIENT_GPU_MEMORY = "InsufficientGPUMemory"  # vLLM could not fit weights + KV cache
SERVER_FAILED = "ServerFailed"  # the server container exited for another reason
STABLE = "Stable"
#: vLLM's stderr texts that mean "not enough GPU memory".
GPU_MEMORY_TEXTS = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "larger than the maximum number of tokens that can be stored in KV cache",
    "No available memory for the cache blocks",
)
FETCH_FAILURE_REASONS = frozenset(v for v in FETCH_REASONS.values() if v != FETCH_OK_REASON)
REQUEUE_SECONDS = 10.0  # metrics scrape cadence of the builtin autoscaler
MAX_MESSAGE = 1024


@dataclass(frozen=True)
class PodView:
    """What status needs of one server pod."""

    name: str
    phase: str = "Pending"
    ready: bool = False
    deleting: bool = False
    start_time: str | None = None
    created: str | None = None  # metadata.creationTimestamp
    ready_time: str | None = None  # Ready condition's lastTransitionTime when ready
    ip: str | None = None
    fetch: tuple[int, str] | None = None  # (exit code, termination message) of fetch-model
    fetching: bool = False
    server_failure: str | None = None  # last termination message of the server when it exited non-zero

    @staticmethod
    def from_pod(pod: Mapping[str, Any]) -> "PodView":
        meta, st = pod.get("metadata") or {}, pod.get("status") or {}
        conds = {c.get("type"): c for c in st.get("conditions") or []}
        ready = (conds.get("Ready") or {}).get("status") == "True"
        fetch: tuple[int, str] | None = None
        fetching = False
        for cs in st.get("initContainerStatuses") or []:
            if cs.get("name") != B.FETCH_CONTAINER:
                continue
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if term:
                fetch = (int(term.get("exitCode", 0)), str(term.get("message") or ""))
            elif (cs.get("state") or {}).get("running"):
                fetching = True
        failure = None
        for cs in st.get("containerStatuses") or []:
            if cs.get("name") != B.SERVER_CONTAINER:
                continue
            for term in ((cs.get("state") or {}).get("terminated"), (cs.get("lastState") or {}).get("terminated")):
                if term and int(term.get("exitCode", 0)) != 0:
                    failure = str(term.get("message") or term.get("reason") or f"exit code {term.get('exitCode')}")
                    break
        return PodView(
            name=meta.get("name", ""), phase=st.get("phase") or "Pending", ready=ready,
            deleting=bool(meta.get("deletionTimestamp")), start_time=st.get("startTime"), created=meta.get("creationTimestamp"),
            ready_time=(conds.get("Ready") or {}).get("lastTransitionTime") if ready else None,
            ip=st.get("podIP"), fetch=fetch, fetching=fetching, server_failure=failure,
        )


@dataclass(frozen=True)
class Observed:
    """Facts the reconcile gathered."""

    deployment: Mapping[str, Any] | None = None
    pods: tuple[PodView, ...] = ()
    desired_replicas: int = 1  # what the plan puts on the Deployment (autoscaler or fixed)
    decision: ScaleDecision | None = None  # a change made in this reconcile, if any
    adapters: Mapping[str, tuple[bool, str]] = field(default_factory=dict)  # name -> (ready, message)
    adapter_uris: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    status: InferenceServiceStatus
    desired: list[dict[str, Any]]
    events: tuple[Event, ...] = ()
    requeue_after: float | None = REQUEUE_SECONDS


def _parse_time(s: str | None) -> dt.datetime | None:
    if not s:
        return None
    return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))


def pod_load_seconds(p: PodView) -> float | None:
    start, ready = _parse_time(p.start_time), _parse_time(p.ready_time)
    if start is None or ready is None:
        return None
    return max(0.0, (ready - start).total_seconds())


def load_seconds(pods: Sequence[PodView], previous: LoadSeconds | None) -> LoadSeconds | None:
    """last = the most recently ready pod's start -> ready; p95 = nearest-rank p95 over the
    ready pods (the previous p95 counts as one sample, so replacing pods does not forget it)."""
    loads = sorted(((p.ready_time or "", v) for p in pods if p.ready and (v := pod_load_seconds(p)) is not None))
    if not loads:
        return previous
    values = sorted([v for _, v in loads] + ([previous.p95] if previous and previous.p95 is not None else []))
    p95 = values[max(0, math.ceil(0.95 * len(values)) - 1)]
    return LoadSeconds(last=round(loads[-1][1], 3), p95=round(p95, 3))


def gpu_memory_failure(text: str) -> bool:
    return any(t in text for t in GPU_MEMORY_TEXTS)


def _cond(type_: str, status: bool | None, reason: str, message: str, gen: int | None) -> Condition:
    st = ConditionStatus.UNKNOWN if status is None else (ConditionStatus.TRUE if status else ConditionStatus.FALSE)
    return Condition(type=type_, status=st, reason=reason, message=message[:MAX_MESSAGE], observed_generation=gen)


def _fetch_state(pods: Sequence[PodView]) -> tuple[bool | None, str, str, dict[str, str]]:
    """(cached?, reason, message, fields of the verified marker)."""
    live = [p for p in pods if not p.deleting] or list(pods)
    ok = [p for p in live if p.fetch and p.fetch[0] == 0]
    if ok:
        _, detail, fields = parse_termination_message(ok[0].fetch[1])  # type: ignore[index]
        return True, C.MODEL_VERIFIED, detail, fields
    for p in sorted(live, key=lambda p: p.name):
        if p.fetch and p.fetch[0] != 0:
            reason, detail, _ = parse_termination_message(p.fetch[1])
            if reason not in FETCH_FAILURE_REASONS:
                reason, detail = "ModelFetchFailed", p.fetch[1] or f"fetch exited {p.fetch[0]}"
            return False, reason, detail, {}
    return False, C.MODEL_FETCHING, "fetching and verifying the model" if any(p.fetching for p in live) else "waiting for a server pod", {}


def compute_status(svc: InferenceService, observed: Observed, now: dt.datetime) -> InferenceServiceStatus:
    spec, prev, gen = svc.spec, svc.status, svc.metadata.generation
    pods = observed.pods
    dep = observed.deployment or {}
    dst = dep.get("status") or {}
    desired = observed.desired_replicas
    ready = int(dst.get("readyReplicas") or 0) if dep else sum(1 for p in pods if p.ready and not p.deleting)
    replicas = int(dst.get("replicas") or 0) if dep else sum(1 for p in pods if not p.deleting)
    updated = int(dst.get("updatedReplicas") or 0)

    cached, fetch_reason, fetch_msg, fields = _fetch_state(pods)
    prev_model_cached = C.is_true(prev.conditions, C.MODEL_CACHED)
    if not cached and prev_model_cached and fetch_reason == C.MODEL_FETCHING:
        cached, fetch_reason, fetch_msg = True, C.MODEL_VERIFIED, (C.find_condition(prev.conditions, C.MODEL_CACHED) or Condition(type="x", status=ConditionStatus.TRUE, reason="x")).message
    wanted = [_cond(C.MODEL_CACHED, cached, fetch_reason, fetch_msg, gen)]

    need = min(desired, max(spec.min_replicas, 1))
    if desired == 0:
        wanted.append(_cond(C.READY, False, C.SCALED_TO_ZERO, "scaled to zero (opt-in); the next request scales up", gen))
    elif ready >= need:
        wanted.append(_cond(C.READY, True, C.REPLICAS_READY, f"{ready}/{desired} replicas ready", gen))
    else:
        wanted.append(_cond(C.READY, False, C.REPLICAS_UNAVAILABLE, f"{ready}/{desired} replicas ready (need {need})", gen))

    failure_reason, failure_msg = "", ""
    if not cached and fetch_reason in FETCH_FAILURE_REASONS:
        failure_reason, failure_msg = fetch_reason, fetch_msg
    else:
        for p in sorted(pods, key=lambda p: p.name):
            if p.server_failure and not p.ready:
                text = p.server_failure.strip()
                failure_reason = INSUFFICIENT_GPU_MEMORY if gpu_memory_failure(text) else SERVER_FAILED
                failure_msg = f"pod {p.name}: {text.splitlines()[-1] if text else ''}"
                break
    if ready < desired and failure_reason:
        wanted.append(_cond(C.DEGRADED, True, failure_reason, failure_msg, gen))
    else:
        wanted.append(_cond(C.DEGRADED, False, C.REPLICAS_READY, f"{ready}/{desired} replicas ready", gen))

    dep_gen_behind = bool(dep) and int(dst.get("observedGeneration") or 0) < int((dep.get("metadata") or {}).get("generation") or 0)
    if observed.decision is not None and observed.decision.to != observed.decision.from_:
        up = observed.decision.to > observed.decision.from_
        wanted.append(_cond(C.PROGRESSING, True, C.SCALING_UP if up else C.SCALING_DOWN,
                            f"{observed.decision.from_} -> {observed.decision.to}: {observed.decision.reason}", gen))
    elif dep_gen_behind or (bool(dep) and (updated < desired or replicas != desired)):
        wanted.append(_cond(C.PROGRESSING, True, C.ROLLOUT_IN_PROGRESS,
                            f"{updated} updated, {replicas} current, {desired} desired replicas", gen))
    else:
        wanted.append(_cond(C.PROGRESSING, False, STABLE, f"{replicas} replicas at the current revision", gen))

    conditions = list(prev.conditions)
    for c in wanted:
        conditions = C.set_condition(conditions, c, now)
    order = {t: i for i, t in enumerate(C.SERVING_TYPES)}
    conditions.sort(key=lambda c: (order.get(c.type, len(order)), c.type))

    model_uri = spec.model.uri + (f"@{spec.model.revision}" if spec.model.revision else "")
    digest = fields.get("digest") or (prev.model.digest if prev.model and prev.model.uri == model_uri else None)
    adapters = []
    for a in spec.adapters:
        ok, msg = observed.adapters.get(a.name, (False, "not loaded yet"))
        if a.from_finetune_job and a.name not in observed.adapter_uris and not a.uri:
            ok, msg = False, f"FinetuneJob {a.from_finetune_job} has no published output yet"
        adapters.append(AdapterStatus(name=a.name, ready=ok, message="" if ok else msg[:MAX_MESSAGE]))

    return InferenceServiceStatus(
        conditions=conditions,
        observed_generation=gen,
        url=B.url(svc),
        replicas=replicas,
        ready_replicas=ready,
        desired_replicas=desired,
        selector=B.selector_string(svc),
        load_seconds=load_seconds(pods, prev.load_seconds),
        last_scale_decision=observed.decision if observed.decision is not None else prev.last_scale_decision,
        model=ResolvedModel(uri=model_uri, digest=digest),
        adapters=adapters,
    )


def _events(before: Sequence[Condition], after: Sequence[Condition], decision: ScaleDecision | None) -> tuple[Event, ...]:
    out: list[Event] = []
    prev = {c.type: c for c in before}
    for c in after:
        p = prev.get(c.type)
        if p is not None and p.status == c.status and p.reason == c.reason:
            continue
        if c.type == C.PROGRESSING and c.reason in (C.SCALING_UP, C.SCALING_DOWN):
            continue  # the scale decision has its own event below
        warning = (c.type == C.DEGRADED and c.status == ConditionStatus.TRUE) or (
            c.type == C.MODEL_CACHED and c.reason in FETCH_FAILURE_REASONS)
        out.append(Event("Warning" if warning else "Normal", c.reason, f"{c.type}={c.status.value}: {c.message}"[:MAX_MESSAGE]))
    if decision is not None and decision.to != decision.from_:
        reason = C.SCALING_UP if decision.to > decision.from_ else C.SCALING_DOWN
        out.append(Event("Normal", reason, f"replicas {decision.from_} -> {decision.to}: {decision.reason}"[:MAX_MESSAGE]))
    return tuple(out)


def plan(svc: InferenceService, observed: Observed, now: dt.datetime) -> Plan:
    """Status, children (Deployment replicas = observed.desired_replicas) and events."""
    status = compute_status(svc, observed, now)
    inputs = B.BuildInputs(
        replicas=observed.desired_replicas,
        adapter_uris=dict(observed.adapter_uris),
        load_seconds_p95=status.load_seconds.p95 if status.load_seconds else None,
    )
    desired = B.build_inference_children(svc, inputs)
    return Plan(status=status, desired=desired, events=_events(svc.status.conditions, status.conditions, observed.decision))
