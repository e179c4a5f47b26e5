"""InferenceService reconcile: parse, observe (Deployment, server pods), decide replicas,
push adapters, plan (pure), apply + prune, events, one status write.

With ``autoscaling.engine: builtin`` the replicas come from ``llmops.serving.autoscaler`` and
go on the Deployment (never on the CR spec); the reconcile requeues every REQUEUE_SECONDS to
scrape (and so picks up FinetuneJob outputs). Adapters (``S.wanted_adapters``: spec.adapters
plus what FinetuneJobs publish) are pushed into the replicas by
``llmops.serving.adapter_client``; while one loads, the next reconcile comes
ADAPTER_REQUEUE_SECONDS later and sees the result.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os

from llmops import API_VERSION
from llmops.api.errors import ApiValidationError
from llmops.api.inference import AutoscalingEngine, InferenceService, ScaleDecision, parse_inference_service
from llmops.builders import inference as B
from llmops.controller import Context
from llmops.handlers.invalid import report_invalid
from llmops.handlers.writeback import write_back
from llmops.kube.children import list_owned, sync_children
from llmops.kube.client import ApiError
from llmops.kube.workqueue import Backoff
from llmops.serving import autoscaler
from llmops.serving.adapter_client import sync_adapters
from llmops.status import inference as S

logger = logging.getLogger(__name__)
KIND = "InferenceService"


def _kinds(svc: InferenceService, served: set[str]) -> tuple[tuple[str, str], ...]:
    """Child kinds to list and prune; KEDA's only where it is served or asked for."""
    engine = svc.spec.autoscaling.engine if svc.spec.autoscaling else None
    out = [*B.CHILD_KINDS, B.AUTOSCALER_KINDS[0]]  # autoscaling/v2 is built in: always listed, so a dropped HPA is pruned
    if engine == AutoscalingEngine.KEDA or "keda.sh/v1alpha1/scaledobjects" in served:
        out.append(B.AUTOSCALER_KINDS[1])
    if "monitoring.coreos.com/v1/podmonitors" in served:
        out.append(B.MONITOR_KIND)
    return tuple(out)


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
        autoscaler.forget(namespace, name)
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
    desired, decision = autoscaler.desired_replicas(svc, deployment, pods, now_s)
    wanted = S.wanted_adapters(svc, _finetune_jobs(kube, namespace))
    observed = S.Observed(deployment=deployment, pods=tuple(pods), desired_replicas=desired, decision=decision,
                          wanted=wanted, adapters=sync_adapters(svc, pods, wanted),
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
    mem = autoscaler.memory(ns, name, svc.metadata.uid or "")
    for p in pods:
        seconds = S.pod_load_seconds(p) if p.ready else None
        if seconds is not None and p.name not in mem.loads_recorded:
            ctx.metrics.model_load_seconds.labels(ns, name).observe(seconds)
            mem.loads_recorded.add(p.name)
    mem.loads_recorded &= {p.name for p in pods}  # forget replaced pods (bounded memory)
    if decision is not None:
        direction = "up" if decision.to > decision.from_ else "down"
        ctx.metrics.scale_decisions.labels(ns, name, direction, decision.reason.split(" (")[0]).inc()


