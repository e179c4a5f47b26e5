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
* ``Degraded``: True when a replica is not ready because its pod failed (fewer ready than
  desired, or a new revision's pod failing beside the old one that keeps serving): the fetch
  reason, InsufficientGPUMemory for vLLM's out-of-memory / KV-cache-too-small text (the
  message quotes vLLM's line), or ServerFailed; else False/ReplicasLoading while fewer than
  desired are ready (none failing), False/ReplicasReady once all are.
* A child the API server refuses (``llmops.failures.classify_refusal``; the server pods'
  refusals arrive through the Deployment's ReplicaFailure condition): ``Degraded=True`` with
  the refusal's reason (ServiceAccountMissing, QuotaExceeded, ChildRejected, ...) and the
  server's words, and ``Ready=False`` with the same reason while too few replicas are ready.
* ``Progressing``: True/RolloutInProgress while the Deployment has not caught up with the
  template or the replica count; True/ScalingUp|ScalingDown right after an autoscaler
  change; else False/ReplicasReady.
* ``AdaptersReady``: True/AdaptersLoaded when every wanted LoRA adapter is loaded on every
  ready replica (True/NoAdapters without adapters); False/AdapterLimitExceeded when more are
  wanted than ``engine.maxLoras`` allows per replica (the first maxLoras are loaded, the
  message names the rest); False/AdapterNotReady when a load failed (the fetcher's reason or
  vLLM's text); else False/AdaptersLoading.

Wanted adapters (:func:`wanted_adapters`): ``spec.adapters`` in order (``uri``, or
``fromFinetuneJob`` resolved from that FinetuneJob's ``status.output`` once its Succeeded
condition is True), then every adapter FinetuneJobs of the namespace publish into this
service (``llmops.plan.finetune.published_adapter_details``), by name; a spec entry wins a
name clash. The first ``engine.maxLoras`` are admitted. The operator never writes the spec.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops.api import conditions as C
from llmops.api.conditions import Condition, ConditionStatus, parse_time
from llmops.api.inference import AdapterStatus, InferenceService, InferenceServiceStatus, LoadSeconds, ResolvedModel, ScaleDecision
from llmops.api.runtime_env import FETCH_OK_REASON, FETCH_REASONS, parse_termination_message
from llmops.builders import inference as B
from llmops.failures import REFUSAL_REASONS, Refusal, classify_refusal
from llmops.plan.conditions import Event, changed, merged
from llmops.plan.conditions import cond as _cond_any
from llmops.plan.finetune import published_adapter_details

INSUFFICIENT_GPU_MEMORY = C.INSUFFICIENT_GPU_MEMORY
SERVER_FAILED = C.SERVER_FAILED
STABLE = "Stable"
#: vLLM's stderr texts that mean "not enough GPU memory".
GPU_MEMORY_TEXTS = (
    "CUDA out of memory",
    "OutOfMemoryError",
    "larger than the maximum number of tokens that can be stored in KV cache",
    "No available memory for the cache blocks",
)
FETCH_FAILURE_REASONS = frozenset(v for v in FETCH_REASONS.values() if v != FETCH_OK_REASON)
REQUEUE_SECONDS = 10.0  # metrics scrape cadence of the builtin autoscaler; FinetuneJob outputs are picked up as often
ADAPTER_REQUEUE_SECONDS = 2.0  # while adapters load: look again soon
MAX_MESSAGE = 1024
MAX_ADAPTERS_LISTED = 64  # status.adapters bound


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
    server_ready: bool = False  # the server container passes its readiness probe (the pod may still wait for adapters)

    @property
    def failing(self) -> bool:
        """Not ready because something failed (fetch or server), and not going away."""
        fetch_failed = self.fetch is not None and self.fetch[0] != 0
        return not self.ready and not self.deleting and (fetch_failed or bool(self.server_failure))

    @staticmethod
    def from_pod(pod: Mapping[str, Any]) -> PodView:
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
        server_ready = False
        for cs in st.get("containerStatuses") or []:
            if cs.get("name") != B.SERVER_CONTAINER:
                continue
            server_ready = bool(cs.get("ready"))
            for term in ((cs.get("state") or {}).get("terminated"), (cs.get("lastState") or {}).get("terminated")):
                if term and int(term.get("exitCode", 0)) != 0:
                    failure = str(term.get("message") or term.get("reason") or f"exit code {term.get('exitCode')}")
                    break
        return PodView(
            name=meta.get("name", ""), phase=st.get("phase") or "Pending", ready=ready,
            deleting=bool(meta.get("deletionTimestamp")), start_time=st.get("startTime"), created=meta.get("creationTimestamp"),
            ready_time=(conds.get("Ready") or {}).get("lastTransitionTime") if ready else None,
            ip=st.get("podIP"), fetch=fetch, fetching=fetching, server_failure=failure, server_ready=server_ready,
        )


@dataclass(frozen=True)
class WantedAdapter:
    """One adapter the service should have loaded on every replica."""

    name: str
    uri: str | None  # None: not resolvable yet (``pending`` says why)
    manifest_sha256: str | None = None  # pin (a FinetuneJob's status.output.manifestSha256)
    finetune_job: str | None = None
    pending: str = ""
    admitted: bool = True  # within engine.maxLoras

    def path(self, service: str) -> str | None:
        """Where the replica loads it from (changes with uri/pin: see B.adapter_link)."""
        return B.adapter_path(service, self.name, self.uri, self.manifest_sha256) if self.uri else None


@dataclass(frozen=True)
class AdapterState:
    """One adapter across the ready replicas, as the reconcile found and pushed it."""

    replicas: int = 0  # ready replicas looked at
    loaded: int = 0  # of those, replicas vLLM lists it on (from the expected path)
    failed: str = ""  # "pod P: Reason: detail" of a failed fetch/load
    loading: str = ""  # what is under way / why not yet (agent unreachable, ...)


@dataclass(frozen=True)
class Observed:
    """Facts the reconcile gathered."""

    deployment: Mapping[str, Any] | None = None
    pods: tuple[PodView, ...] = ()
    desired_replicas: int = 1  # what the plan puts on the Deployment (autoscaler or fixed)
    decision: ScaleDecision | None = None  # a change made in this reconcile, if any
    wanted: tuple[WantedAdapter, ...] = ()  # wanted_adapters(svc, FinetuneJobs of the namespace)
    adapters: Mapping[str, AdapterState] = field(default_factory=dict)  # name -> state on the ready replicas
    pod_monitor_served: bool = False  # discovery: the Prometheus Operator's PodMonitor CRD is served
    operator_namespace: str = B.DEFAULT_OPERATOR_NAMESPACE
    refusal: Refusal | None = None  # the API server refused a child this reconcile (failures.classify_refusal)


@dataclass(frozen=True)
class Plan:
    status: InferenceServiceStatus
    desired: list[dict[str, Any]]
    events: tuple[Event, ...] = ()
    requeue_after: float | None = REQUEUE_SECONDS
    creates: tuple[dict[str, Any], ...] = ()  # objects to create that are not children (none for this kind)


def pod_load_seconds(p: PodView) -> float | None:
    start, ready = parse_time(p.start_time or None), parse_time(p.ready_time or None)
    if start is None or ready is None:
        return None
    return max(0.0, (ready - start).total_seconds())


def load_seconds(pods: Sequence[PodView], previous: LoadSeconds | None) -> LoadSeconds | None:
    """last = the most recently ready pod's start -> ready; p95 = nearest-rank p95 over the
    ready pods (the previous p95 counts as one sample, so replacing pods does not forget it)."""
    loads = sorted((p.ready_time or "", v) for p in pods if p.ready and (v := pod_load_seconds(p)) is not None)
    if not loads:
        return previous
    values = sorted([v for _, v in loads] + ([previous.p95] if previous and previous.p95 is not None else []))
    p95 = values[max(0, math.ceil(0.95 * len(values)) - 1)]
    return LoadSeconds(last=round(loads[-1][1], 3), p95=round(p95, 3))


def gpu_memory_failure(text: str) -> bool:
    return any(t in text for t in GPU_MEMORY_TEXTS)


def failure_line(text: str) -> str:
    """The line of a server's last output that says why it died: vLLM's GPU-memory line when
    there is one (its traceback may end with other lines), else the last non-empty line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if gpu_memory_failure(ln):
            return ln
    return lines[-1] if lines else ""


def scale_up_blocked(pods: Sequence[PodView]) -> str | None:
    """Why the autoscaler must not add replicas now: a server pod is failing (a new replica
    would run the same template and fail the same way). None when scaling up may help."""
    failing = sorted(p.name for p in pods if p.failing)
    return f"server pod(s) failing: {', '.join(failing[:3])}" if failing else None


# --- adapters ----------------------------------------------------------------------------------


def _succeeded(body: Mapping[str, Any]) -> bool:
    return any(c.get("type") == C.SUCCEEDED and c.get("status") == "True" for c in (body.get("status") or {}).get("conditions") or [])


def wanted_adapters(svc: InferenceService, finetune_job_bodies: Sequence[Mapping[str, Any]] = ()) -> tuple[WantedAdapter, ...]:
    """The effective adapter set (see the module docstring); pure, order-stable."""
    jobs = {(b.get("metadata") or {}).get("name"): b for b in finetune_job_bodies}
    out: list[WantedAdapter] = []
    for a in svc.spec.adapters:
        if a.uri:
            out.append(WantedAdapter(a.name, a.uri))
            continue
        job = a.from_finetune_job
        body = jobs.get(job)
        output = ((body or {}).get("status") or {}).get("output") or {}
        if body is None:
            out.append(WantedAdapter(a.name, None, finetune_job=job, pending=f"FinetuneJob {job} not found in the namespace"))
        elif not _succeeded(body) or not output.get("uri"):
            out.append(WantedAdapter(a.name, None, finetune_job=job, pending=f"FinetuneJob {job} has no published output yet"))
        else:
            out.append(WantedAdapter(a.name, str(output["uri"]), output.get("manifestSha256") or None, finetune_job=job))
    listed = {a.name for a in svc.spec.adapters}
    for name, pub in published_adapter_details(finetune_job_bodies, svc.metadata.name).items():
        if name not in listed:  # the service's own spec wins a name clash
            out.append(WantedAdapter(name, pub.uri, pub.manifest_sha256, finetune_job=pub.finetune_job))
    limit = svc.spec.engine.max_loras
    return tuple(WantedAdapter(w.name, w.uri, w.manifest_sha256, w.finetune_job, w.pending, i < limit) for i, w in enumerate(out))


def _adapter_statuses(wanted: Sequence[WantedAdapter], states: Mapping[str, AdapterState], limit: int) -> list[AdapterStatus]:
    out = []
    for w in wanted[:MAX_ADAPTERS_LISTED]:
        st = states.get(w.name)
        ready, loaded, msg = False, None, ""
        if not w.admitted:
            msg = f"not loaded: {len(wanted)} adapters wanted, engine.maxLoras allows {limit} per replica"
        elif w.uri is None:
            msg = w.pending
        elif st is None or st.replicas == 0:
            msg = "no ready replica to load it into"
        else:
            loaded = st.loaded
            ready = st.loaded == st.replicas
            msg = "" if ready else (st.failed or st.loading or f"loading: {st.loaded}/{st.replicas} replicas have it")
        out.append(AdapterStatus(name=w.name, uri=w.uri, finetune_job=w.finetune_job, ready=ready,
                                 loaded_replicas=loaded, message=msg[:MAX_MESSAGE]))
    return out


def _adapters_condition(wanted: Sequence[WantedAdapter], statuses: Sequence[AdapterStatus], states: Mapping[str, AdapterState],
                        limit: int, gen: int | None) -> Condition:
    if not wanted:
        return _cond(C.ADAPTERS_READY, True, C.NO_ADAPTERS, "no adapters", gen)
    over = [w.name for w in wanted if not w.admitted]
    if over:
        return _cond(C.ADAPTERS_READY, False, C.ADAPTER_LIMIT_EXCEEDED,
                     f"{len(wanted)} adapters wanted but engine.maxLoras allows {limit} per replica; "
                     f"not loaded: {', '.join(over)}", gen)
    failed = [(w.name, states[w.name].failed) for w in wanted if w.name in states and states[w.name].failed]
    if failed:
        name, why = failed[0]
        return _cond(C.ADAPTERS_READY, False, C.ADAPTER_NOT_READY, f"adapter {name}: {why}", gen)
    waiting = [s for s in statuses if not s.ready]
    if not waiting:
        replicas = max((st.replicas for st in states.values()), default=0)
        return _cond(C.ADAPTERS_READY, True, C.ADAPTERS_LOADED, f"{len(wanted)} adapter(s) loaded on {replicas} ready replica(s)", gen)
    return _cond(C.ADAPTERS_READY, False, C.ADAPTERS_LOADING, "; ".join(f"{s.name}: {s.message}" for s in waiting[:4]), gen)


def replica_failure(deployment: Mapping[str, Any]) -> Refusal | None:
    """The refusal behind a Deployment's ``ReplicaFailure`` condition: the ReplicaSet
    controller, not the operator, creates the server pods, so admission's answer (a missing
    ServiceAccount, quota) arrives there, in the API server's words."""
    for c in (deployment.get("status") or {}).get("conditions") or []:
        if c.get("type") != "ReplicaFailure" or c.get("status") != "True" or c.get("reason") != "FailedCreate":
            continue
        message = str(c.get("message") or "")
        status = 403 if "is forbidden" in message else 422 if "is invalid" in message else 0
        name = (deployment.get("metadata") or {}).get("name", "")
        return classify_refusal(status, message, "Deployment", name)
    return None


def _cond(type_: str, status: bool | None, reason: str, message: str, gen: int | None) -> Condition:
    """A condition with the short message an InferenceService shows (tests/plan/conftest.py checks its reasons)."""
    return _cond_any(type_, status, reason, message, gen, limit=MAX_MESSAGE)


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


@dataclass(frozen=True)
class _Counts:
    """Replicas as the Deployment reports them (or the pods, before it exists)."""

    desired: int
    ready: int
    replicas: int
    updated: int
    need: int  # ready replicas for Ready: min(desired, max(minReplicas, 1))

    @classmethod
    def of(cls, svc: InferenceService, observed: Observed) -> _Counts:
        dep, pods, desired = observed.deployment or {}, observed.pods, observed.desired_replicas
        dst = dep.get("status") or {}
        ready = int(dst.get("readyReplicas") or 0) if dep else sum(1 for p in pods if p.ready and not p.deleting)
        replicas = int(dst.get("replicas") or 0) if dep else sum(1 for p in pods if not p.deleting)
        return cls(desired, ready, replicas, int(dst.get("updatedReplicas") or 0), min(desired, max(svc.spec.min_replicas, 1)))


def compute_status(svc: InferenceService, observed: Observed, now: dt.datetime) -> InferenceServiceStatus:
    spec, prev, gen = svc.spec, svc.status, svc.metadata.generation
    n = _Counts.of(svc, observed)
    cached, fetch_reason, fetch_msg, fields = _fetch_state(observed.pods)
    if not cached and C.is_true(prev.conditions, C.MODEL_CACHED) and fetch_reason == C.MODEL_FETCHING:
        was = C.find_condition(prev.conditions, C.MODEL_CACHED)
        cached, fetch_reason, fetch_msg = True, C.MODEL_VERIFIED, was.message if was else ""
    wanted = [_cond(C.MODEL_CACHED, cached, fetch_reason, fetch_msg, gen)]
    if n.desired == 0:
        wanted.append(_cond(C.READY, False, C.SCALED_TO_ZERO, "scaled to zero (opt-in); the next request scales up", gen))
    elif n.ready >= n.need:
        wanted.append(_cond(C.READY, True, C.REPLICAS_READY, f"{n.ready}/{n.desired} replicas ready", gen))
    else:
        wanted.append(_cond(C.READY, False, C.REPLICAS_UNAVAILABLE, f"{n.ready}/{n.desired} replicas ready (need {n.need})", gen))
    failure = (fetch_reason, fetch_msg) if not cached and fetch_reason in FETCH_FAILURE_REASONS else _server_failure(observed.pods)
    wanted += _degraded(observed, n, failure, gen)
    wanted.append(_progressing(observed, n, gen))
    adapters = _adapter_statuses(observed.wanted, observed.adapters, spec.engine.max_loras)
    wanted.append(_adapters_condition(observed.wanted, adapters, observed.adapters, spec.engine.max_loras, gen))
    model_uri = spec.model.uri + (f"@{spec.model.revision}" if spec.model.revision else "")
    return InferenceServiceStatus(
        conditions=merged(prev.conditions, wanted, now, C.SERVING_TYPES),
        observed_generation=gen,
        url=B.url(svc),
        replicas=n.replicas,
        ready_replicas=n.ready,
        desired_replicas=n.desired,
        selector=B.selector_string(svc),
        load_seconds=load_seconds(observed.pods, prev.load_seconds),
        last_scale_decision=observed.decision if observed.decision is not None else prev.last_scale_decision,
        model=ResolvedModel(
            uri=model_uri, digest=fields.get("digest") or (prev.model.digest if prev.model and prev.model.uri == model_uri else None),
        ),
        adapters=adapters,
    )


def _server_failure(pods: Sequence[PodView]) -> tuple[str, str]:
    """(reason, message) of the first server pod that failed and is not ready, or ("", "")."""
    for p in sorted(pods, key=lambda p: p.name):
        if p.server_failure and not p.ready and not p.deleting:
            text = p.server_failure.strip()
            return INSUFFICIENT_GPU_MEMORY if gpu_memory_failure(text) else SERVER_FAILED, f"pod {p.name}: {failure_line(text)}"
    return "", ""


def _degraded(observed: Observed, n: _Counts, failure: tuple[str, str], gen: int | None) -> list[Condition]:
    """Degraded (and Ready, for a refusal). A failing pod degrades the service when replicas are
    missing, and also when it belongs to a new revision that cannot come up while the old pods
    keep serving (maxSurge)."""
    refusal = observed.refusal or replica_failure(observed.deployment or {})
    if refusal is not None:
        # The API server refused a child (or, via the Deployment, the server pods): the
        # service cannot become what its spec says until that changes.
        out = [_cond(C.DEGRADED, True, refusal.reason, refusal.message, gen)]
        return [*out, _cond(C.READY, False, refusal.reason, refusal.message, gen)] if n.ready < n.need else out
    if failure[0] and (n.ready < n.desired or any(p.failing for p in observed.pods)):
        return [_cond(C.DEGRADED, True, failure[0], failure[1], gen)]
    if n.ready < n.desired:  # not degraded: nothing failed, the rest are starting (reason says so)
        msg = f"{n.ready}/{n.desired} replicas ready, the others starting; none failing"
        return [_cond(C.DEGRADED, False, C.REPLICAS_LOADING, msg, gen)]
    return [_cond(C.DEGRADED, False, C.REPLICAS_READY, f"{n.ready}/{n.desired} replicas ready", gen)]


def _progressing(observed: Observed, n: _Counts, gen: int | None) -> Condition:
    dep, decision = observed.deployment or {}, observed.decision
    if decision is not None and decision.to != decision.from_:
        up = decision.to > decision.from_
        reason = C.SCALING_UP if up else C.SCALING_DOWN
        return _cond(C.PROGRESSING, True, reason, f"{decision.from_} -> {decision.to}: {decision.reason}", gen)
    observed_gen = int((dep.get("status") or {}).get("observedGeneration") or 0)
    behind = bool(dep) and observed_gen < int((dep.get("metadata") or {}).get("generation") or 0)
    if behind or (bool(dep) and (n.updated < n.desired or n.replicas != n.desired)):
        msg = f"{n.updated} updated, {n.replicas} current, {n.desired} desired replicas"
        return _cond(C.PROGRESSING, True, C.ROLLOUT_IN_PROGRESS, msg, gen)
    return _cond(C.PROGRESSING, False, STABLE, f"{n.replicas} replicas at the current revision", gen)


def _events(before: Sequence[Condition], after: Sequence[Condition], decision: ScaleDecision | None) -> tuple[Event, ...]:
    out: list[Event] = []
    for c, _ in changed(before, after):
        if c.type == C.PROGRESSING and c.reason in (C.SCALING_UP, C.SCALING_DOWN):
            continue  # the scale decision has its own event below
        if c.reason in REFUSAL_REASONS and any(e.reason == c.reason for e in out):
            continue  # one refusal flips Ready and Degraded together: one Event says it
        warning = (c.type == C.DEGRADED and c.status == ConditionStatus.TRUE) or c.reason in REFUSAL_REASONS or (
            c.type == C.MODEL_CACHED and c.reason in FETCH_FAILURE_REASONS) or (
            c.type == C.ADAPTERS_READY and c.reason in (C.ADAPTER_NOT_READY, C.ADAPTER_LIMIT_EXCEEDED))
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
        adapter_uris={w.name: w.uri for w in observed.wanted if w.uri and w.admitted},
        load_seconds_p95=status.load_seconds.p95 if status.load_seconds else None,
        pod_monitor_served=observed.pod_monitor_served,
        operator_namespace=observed.operator_namespace,
    )
    desired = B.build_inference_children(svc, inputs)
    # Look again soon only while a ready replica is loading an adapter (not while replicas start).
    loading = any(st.loaded < st.replicas and not st.failed for st in observed.adapters.values())
    requeue = ADAPTER_REQUEUE_SECONDS if loading else REQUEUE_SECONDS
    return Plan(status=status, desired=desired, events=_events(svc.status.conditions, status.conditions, observed.decision),
                requeue_after=requeue)
