"""InferenceService reconcile: parse, observe (Deployment, server pods, metrics of the ready
pods), decide replicas, plan (pure), apply + prune, events, one status write.

With ``autoscaling.engine: builtin`` the operator runs ``llmops.autoscaling.decide`` (the same
function the fleet simulator runs) on each reconcile and puts the result on the Deployment's
replicas (never on the CR spec). The policy state and the scrape history live in this process's
memory, per service uid; a restarted operator starts from the current replica count. The
reconcile requeues every REQUEUE_SECONDS to scrape.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field

from llmops import API_VERSION
from llmops.api import conditions as C
from llmops.api.common import ApiValidationError
from llmops.api.inference import AutoscalingEngine, InferenceService, ScaleDecision, parse_inference_service
from llmops.autoscaling import AutoscaleInputs, Behaviour, FleetSample, PolicyState, SignalKind, decide, parse_vllm_metrics
from llmops.autoscaling.metrics import replica_signal
from llmops.autoscaling.policy import Reason
from llmops.builders import inference as B
from llmops.controller import Context
from llmops.kube.children import list_owned, sync_children
from llmops.kube.client import ApiError
from llmops.kube.events import emit
from llmops.status import inference as S

logger = logging.getLogger(__name__)
KIND = "InferenceService"
SCRAPE_TIMEOUT_SECONDS = 1.0
HISTORY_SECONDS = 600.0


@dataclass
class _Memory:
    """Per-service autoscaler memory (process-local)."""

    state: PolicyState = field(default_factory=PolicyState)
    history: deque = field(default_factory=lambda: deque(maxlen=256))
    last_scrape: dict[str, dict[str, float]] = field(default_factory=dict)  # pod -> parsed metrics
    completed: float = 0.0  # cumulative vllm:request_success_total increases over pods


_MEMORY: dict[tuple[str, str, str], _Memory] = {}
_LOCK = threading.Lock()


def _memory(ns: str, name: str, uid: str) -> _Memory:
    with _LOCK:
        for key in [k for k in _MEMORY if k[:2] == (ns, name) and k[2] != uid]:
            del _MEMORY[key]  # a recreated service starts afresh
        return _MEMORY.setdefault((ns, name, uid), _Memory())


def _forget(ns: str, name: str) -> None:
    with _LOCK:
        for key in [k for k in _MEMORY if k[:2] == (ns, name)]:
            del _MEMORY[key]


def _kinds(svc: InferenceService, served: set[str]) -> tuple[tuple[str, str], ...]:
    """Child kinds to list and prune; KEDA's only where it is served or asked for."""
    engine = svc.spec.autoscaling.engine if svc.spec.autoscaling else None
    out = [*B.CHILD_KINDS, B.AUTOSCALER_KINDS[0]]  # autoscaling/v2 is built in: always listed, so a dropped HPA is pruned
    if engine == AutoscalingEngine.KEDA or "keda.sh/v1alpha1/scaledobjects" in served:
        out.append(B.AUTOSCALER_KINDS[1])
    return tuple(out)


def _http(url: str, body: dict | None = None) -> str:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=SCRAPE_TIMEOUT_SECONDS) as resp:  # noqa: S310 (pod IPs only)
        return resp.read().decode()


def _scrape(pods: list[S.PodView]) -> dict[str, dict[str, float]]:
    out = {}
    for p in pods:
        if not (p.ready and p.ip and not p.deleting):
            continue
        try:
            text = _http(f"http://{p.ip}:{B.PORT}/metrics")
        except (OSError, urllib.error.URLError) as exc:
            logger.debug("scrape of %s failed: %s", p.name, exc)
            continue
        parsed = parse_vllm_metrics(text)
        for line in text.splitlines():  # completions, for the policy's arrival-rate estimate
            if line.startswith("vllm:request_success_total"):
                parsed["success"] = parsed.get("success", 0.0) + float(line.rsplit(" ", 1)[-1])
        out[p.name] = parsed
    return out


def _behaviour(svc: InferenceService) -> Behaviour:
    a = svc.spec.autoscaling
    assert a is not None
    return Behaviour(
        min_replicas=svc.spec.min_replicas, max_replicas=svc.spec.max_replicas,
        signal=SignalKind(a.signal.value), target=a.target,
        scale_up_stabilization_seconds=a.scale_up.stabilization_seconds, scale_up_max_step=a.scale_up.max_step,
        scale_down_hold_load_time_multiple=a.scale_down.hold_load_time_multiple,
        scale_down_min_hold_seconds=a.scale_down.min_hold_seconds,
        scale_to_zero_enabled=a.scale_to_zero.enabled, scale_to_zero_idle_seconds=a.scale_to_zero.idle_seconds,
    )


def _autoscale(svc: InferenceService, pods: list[S.PodView], current: int, now: float) -> tuple[int, ScaleDecision | None]:
    mem = _memory(svc.metadata.namespace or "default", svc.metadata.name, svc.metadata.uid or "")
    scraped = _scrape(pods)
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
    # Loading: started (or only created) but not ready; replicas the Deployment has no pod for
    # yet count as loading since now, so a pending scale-up is never repeated.
    loading = [S._parse_time(p.start_time or p.created).timestamp() for p in pods  # noqa: SLF001
               if not p.ready and not p.deleting and (p.start_time or p.created)]
    live = sum(1 for p in pods if not p.deleting)
    loading += [now] * max(0, current - live)
    loading = tuple(sorted(loading))
    ls = svc.status.load_seconds
    inputs = AutoscaleInputs(now=now, history=tuple(mem.history), ready_replicas=ready, loading_since=loading,
                             load_seconds_last=ls.last if ls else None, load_seconds_p95=ls.p95 if ls else None)
    decision, mem.state = decide(inputs, _behaviour(svc), mem.state)
    desired = current if decision.reason == Reason.NO_METRICS else decision.desired
    desired = max(svc.spec.min_replicas, min(svc.spec.max_replicas, desired))
    if desired == current:
        return current, None
    when = C.rfc3339(dt.datetime.fromtimestamp(now, dt.UTC))
    return desired, ScaleDecision(time=when, **{"from": current}, to=desired, signal=svc.spec.autoscaling.signal.value,
                                  value=None if decision.signal_value is None else round(decision.signal_value, 4),
                                  reason=f"{decision.reason.value} (load time {decision.load_seconds:.0f}s)")


def _desired_replicas(svc: InferenceService, deployment: dict | None, pods: list[S.PodView], now: float) -> tuple[int, ScaleDecision | None]:
    spec = svc.spec
    a = spec.autoscaling
    if a is None:
        return max(spec.min_replicas, 1), None
    if a.engine != AutoscalingEngine.BUILTIN:
        return (spec.replicas if spec.replicas is not None else spec.min_replicas), None
    current = int((deployment or {}).get("spec", {}).get("replicas", spec.min_replicas)) if deployment else max(spec.min_replicas, 1)
    current = max(spec.min_replicas, min(spec.max_replicas, current))
    return _autoscale(svc, pods, current, now)


def _adapters(svc: InferenceService, pods: list[S.PodView], uris: dict[str, str]) -> dict[str, tuple[bool, str]]:
    """Load missing adapters into every ready replica (vLLM's runtime LoRA API); readiness."""
    if not svc.spec.adapters:
        return {}
    ready = [p for p in pods if p.ready and p.ip and not p.deleting]
    out: dict[str, tuple[bool, str]] = {}
    for a in svc.spec.adapters:
        if not (a.uri or uris.get(a.name)):
            continue
        ok, msg = bool(ready), "" if ready else "no ready replica"
        for p in ready:
            base = f"http://{p.ip}:{B.PORT}"
            try:
                models = {m.get("id") for m in json.loads(_http(f"{base}/v1/models")).get("data", [])}
                if a.name not in models:
                    _http(f"{base}/v1/load_lora_adapter", {"lora_name": a.name, "lora_path": B.adapter_path(svc.metadata.name, a.name)})
            except urllib.error.HTTPError as exc:
                ok, msg = False, f"pod {p.name}: {exc.read().decode(errors='replace')[:500]}"
            except OSError as exc:
                ok, msg = False, f"pod {p.name}: {exc}"
        out[a.name] = (ok, msg)
    return out


def reconcile(ctx: Context, namespace: str, name: str) -> float | None:
    kube = ctx.kube
    body = kube.get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        _forget(namespace, name)
        return None
    now_s = ctx.clock()
    now = dt.datetime.fromtimestamp(now_s, dt.UTC)
    try:
        svc = parse_inference_service(body)
    except ApiValidationError as exc:
        _invalid(ctx, body, exc, now)
        return None

    kinds = _kinds(svc, ctx.served)
    owned = list_owned(kube, body, kinds)
    deployment = next((o for (_, k, n), o in owned.items() if k == "Deployment" and n == B.deployment_name(name)), None)
    pods = [S.PodView.from_pod(p) for p in kube.list("v1", "Pod", namespace, B.selector_string(svc))]
    desired, decision = _desired_replicas(svc, deployment, pods, now_s)
    uris = {a.name: a.uri for a in svc.spec.adapters if a.uri}
    observed = S.Observed(deployment=deployment, pods=tuple(pods), desired_replicas=desired, decision=decision,
                          adapters=_adapters(svc, pods, uris), adapter_uris=uris)
    result = S.plan(svc, observed, now)
    sync_children(kube, body, result.desired, owned, kinds)

    status = result.status.wire()
    rv = body["metadata"].get("resourceVersion")
    for event in result.events:  # keyed by the observed resourceVersion: a retried reconcile re-emits nothing
        emit(kube, body, event.type, event.reason, event.message, f"{rv}/{event.message}", now)
    if status != (body.get("status") or {}):
        try:
            kube.replace_status(API_VERSION, KIND, namespace, name, status, body["metadata"]["resourceVersion"])
        except ApiError as exc:
            if exc.status in (409, 422):
                return 0.0
            raise
    return result.requeue_after


def _invalid(ctx: Context, body: dict, exc: ApiValidationError, now: dt.datetime) -> None:
    """A CR that passed the CRD but not the typed model: Ready False/InvalidSpec, one Event."""
    meta = body["metadata"]
    prev = body.get("status") or {}
    message = "; ".join(f"{path}: {msg}" for path, msg in exc.errors)[:1024]
    conds = [C.Condition.model_validate(c) for c in prev.get("conditions") or []]
    conds = C.set_condition(conds, C.Condition(type=C.READY, status=C.ConditionStatus.FALSE, reason=C.INVALID_SPEC,
                                               message=message, observed_generation=meta.get("generation")), now)
    status = {**prev, "conditions": [c.wire() for c in conds], "observedGeneration": meta.get("generation")}
    if status != prev:
        emit(ctx.kube, body, "Warning", C.INVALID_SPEC, message, f"gen{meta.get('generation')}", now)
        ctx.kube.replace_status(API_VERSION, KIND, meta["namespace"], meta["name"], status)
