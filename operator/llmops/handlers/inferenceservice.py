"""InferenceService reconcile: parse, observe (Deployment, server pods, metrics of the ready
pods), decide replicas, plan (pure), apply + prune, events, one status write.

With ``autoscaling.engine: builtin`` the operator runs ``llmops.autoscaling.decide`` (the same
function the fleet simulator runs) on each reconcile and puts the result on the Deployment's
replicas (never on the CR spec). The policy state and the scrape history live in this process's
memory, per service uid; a restarted operator starts from the current replica count. The
reconcile requeues every REQUEUE_SECONDS to scrape (and so picks up FinetuneJob outputs). It
never adds replicas while a server pod is failing: they would run the same template.

Adapters: the wanted set (``S.wanted_adapters``: spec.adapters plus what FinetuneJobs publish)
is pushed into every replica whose server is up: vLLM's ``/v1/models`` says what a replica has
(and from which path); the pod's adapter agent (``llmops_runtime.serve.adapters``) is asked to
unload what is not wanted, then to fetch-and-load what is missing (it answers at once; the next
reconcile, ADAPTER_REQUEUE_SECONDS later while loading, sees the result). A replica that is not
Ready yet is then told the full list: its agent's startup gate opens once those loads settle,
so a new replica never takes traffic for an adapter it does not serve yet.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import threading
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from llmops import API_VERSION
from llmops.api import conditions as C
from llmops.api.common import ApiValidationError
from llmops.api.inference import AutoscalingEngine, InferenceService, LoraMode, ScaleDecision, parse_inference_service
from llmops.autoscaling import AutoscaleInputs, Behaviour, FleetSample, PolicyState, SignalKind, decide, parse_vllm_metrics
from llmops.autoscaling.metrics import replica_signal
from llmops.autoscaling.policy import Reason
from llmops.builders import inference as B
from llmops.controller import Context
from llmops.handlers.invalid import report_invalid
from llmops.handlers.writeback import write_back
from llmops.kube.children import list_owned, sync_children
from llmops.kube.client import ApiError
from llmops.kube.workqueue import Backoff
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
    loads_recorded: set[str] = field(default_factory=set)  # pods whose load time went into the histogram


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
    if "monitoring.coreos.com/v1/podmonitors" in served:
        out.append(B.MONITOR_KIND)
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
    # Loading: started (or only created) but not ready, and not failing (a crash-looping pod is
    # no capacity on its way). The policy's replicas must be the Deployment's: at most
    # current - ready loading ones (the newest; a rollout's surge pod is no extra replica), and
    # slots the Deployment has no pod for yet count as loading since now, so a pending
    # scale-up is never repeated.
    loading = sorted(S._parse_time(p.start_time or p.created).timestamp() for p in pods  # noqa: SLF001
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
    decision, mem.state = decide(inputs, _behaviour(svc), mem.state)
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


def _post_agent(ip: str, path: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a call to a pod's adapter agent; HTTP errors are answers too."""
    try:
        return 200, json.loads(_http(f"{B.adapter_agent_url(ip)}{path}", body) or "{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read().decode(errors="replace") or "{}")
        except ValueError:
            return exc.code, {"message": str(exc)}


def _sync_adapters(svc: InferenceService, pods: list[S.PodView], wanted: tuple[S.WantedAdapter, ...]) -> dict[str, S.AdapterState]:
    """Make every serving replica hold exactly the admitted wanted adapters; their state on the
    ready ones (status speaks of the replicas in the Service). A replica whose server is up but
    which is not Ready yet (its adapter agent gates it until the adapters are in) gets them too."""
    want = {w.name: w for w in wanted if w.admitted and w.uri}
    if not wanted and svc.spec.engine.lora != LoraMode.ENABLED:
        return {}  # LoRA off: no agent, nothing to load
    serving = sorted((p for p in pods if (p.ready or p.server_ready) and p.ip and not p.deleting), key=lambda p: p.name)
    loaded = dict.fromkeys(want, 0)
    failed: dict[str, str] = {}
    loading: dict[str, str] = {}
    asked = 0
    for p in serving:
        states = _push_adapters(p, want, svc.metadata.name)
        if not p.ready:
            continue
        asked += 1
        for n, (state, why) in states.items():
            if state == "loaded":
                loaded[n] += 1
            elif state == "failed":
                failed.setdefault(n, why)
            else:
                loading.setdefault(n, why)
    return {n: S.AdapterState(replicas=asked, loaded=loaded[n], failed=failed.get(n, ""), loading=loading.get(n, "")) for n in want}


def _push_adapters(p: S.PodView, want: dict[str, S.WantedAdapter], service: str) -> dict[str, tuple[str, str]]:
    """Bring one replica to hold exactly ``want``: vLLM's ``/v1/models`` says what it has, its
    agent unloads the rest and fetches-and-loads what is missing. Per adapter: (``loaded`` |
    ``loading`` | ``failed``, why). A replica not Ready yet is then told the full list: the
    agent's startup gate opens once those loads settle."""
    try:
        models = json.loads(_http(f"http://{p.ip}:{B.PORT}/v1/models")).get("data") or []
    except (OSError, ValueError) as exc:
        return {n: ("loading", f"pod {p.name}: /v1/models: {exc}") for n in want}
    served = {str(m.get("id")): str(m.get("root") or "") for m in models if m.get("parent")}
    # By cache entry name: in a sandbox pod vLLM reports the path under the pod root.
    out = {n: ("loaded", "") for n, w in want.items() if PurePosixPath(served.get(n) or "/").name == PurePosixPath(w.path(service)).name}
    try:
        for extra in sorted(set(served) - set(want)):  # unload first: the limit counts them
            _post_agent(p.ip, "/adapters/unload", {"name": extra})
        for n, w in want.items():
            if n in out:
                continue
            body = {"name": n, "uri": w.uri, "path": w.path(service)}
            if w.manifest_sha256:
                body["manifestSha256"] = w.manifest_sha256
            code, rec = _post_agent(p.ip, "/adapters", body)
            if rec.get("state") == "failed" or code >= 400:
                why = f"{rec.get('reason')}: {rec.get('message')}" if rec.get("reason") else str(rec.get("message") or f"HTTP {code}")
                out[n] = ("failed", f"pod {p.name}: {why}")
            else:
                out[n] = ("loading", f"loading on pod {p.name}")
        if not p.ready:
            _post_agent(p.ip, "/adapters/sync", {"names": sorted(want)})
    except OSError as exc:  # the agent is not up yet (or gone): try again next time
        for n in want:
            out.setdefault(n, ("loading", f"pod {p.name}: adapter agent: {exc}"))
    return out


def _finetune_jobs(kube, namespace: str) -> list[dict]:  # noqa: ANN001
    """The namespace's FinetuneJobs (raw bodies: one invalid job must not break serving)."""
    try:
        return list(kube.list(API_VERSION, "FinetuneJob", namespace))
    except ApiError as exc:
        logger.debug("listing FinetuneJobs in %s failed: %s", namespace, exc)
        return []


def reconcile(ctx: Context, namespace: str, name: str) -> float | Backoff | None:
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
        report_invalid(ctx, KIND, body, exc, now)
        return None

    served = ctx.served or set()
    kinds = _kinds(svc, served)
    owned = list_owned(kube, body, kinds)
    deployment = next((o for (_, k, n), o in owned.items() if k == "Deployment" and n == B.deployment_name(name)), None)
    pods = [S.PodView.from_pod(p) for p in kube.list("v1", "Pod", namespace, B.selector_string(svc))]
    desired, decision = _desired_replicas(svc, deployment, pods, now_s)
    wanted = S.wanted_adapters(svc, _finetune_jobs(kube, namespace))
    observed = S.Observed(deployment=deployment, pods=tuple(pods), desired_replicas=desired, decision=decision,
                          wanted=wanted, adapters=_sync_adapters(svc, pods, wanted),
                          pod_monitor_served="monitoring.coreos.com/v1/podmonitors" in served,
                          operator_namespace=os.environ.get("POD_NAMESPACE") or B.DEFAULT_OPERATOR_NAMESPACE)
    result = S.plan(svc, observed, now)
    sync = sync_children(kube, body, result.desired, owned, kinds)
    if sync.refused:  # the API server said no to a child: the status says why
        result = S.plan(svc, dataclasses.replace(observed, refusal=sync.refused), now)
    _record_metrics(ctx, svc, pods, decision)

    if not write_back(kube, body, result.status.wire(), result.events, now):
        return 0.0  # the object moved under us: re-read at once
    if sync.refused and not sync.refused.permanent:
        return Backoff(sync.refused.reason)
    return result.requeue_after


def _record_metrics(ctx: Context, svc: InferenceService, pods: list[S.PodView], decision: ScaleDecision | None) -> None:
    """Each replica's measured load time once (per operator process), each replica change once."""
    ns, name = svc.metadata.namespace or "default", svc.metadata.name
    mem = _memory(ns, name, svc.metadata.uid or "")
    for p in pods:
        seconds = S.pod_load_seconds(p) if p.ready else None
        if seconds is not None and p.name not in mem.loads_recorded:
            ctx.metrics.model_load_seconds.labels(ns, name).observe(seconds)
            mem.loads_recorded.add(p.name)
    mem.loads_recorded &= {p.name for p in pods}  # forget replaced pods (bounded memory)
    if decision is not None:
        direction = "up" if decision.to > decision.from_ else "down"
        ctx.metrics.scale_decisions.labels(ns, name, direction, decision.reason.split(" (")[0]).inc()


