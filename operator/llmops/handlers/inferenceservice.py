"""InferenceService: what the reconcile driver needs (``handlers.driver``); every decision is in
``llmops.plan.inference.plan``.

Observed: the Deployment, the server pods, the replicas the builtin autoscaler decides
(``llmops.serving.autoscaler``: they go on the Deployment, never on the CR spec), the
adapters wanted (spec.adapters plus what the namespace's FinetuneJobs publish) and their
state in the replicas, which ``llmops.serving.adapter_client`` pushes them into. The plan
requeues every REQUEUE_SECONDS to scrape, and sooner while an adapter loads.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from llmops import API_VERSION
from llmops.api import labels
from llmops.api.inference import AutoscalingEngine, InferenceService, parse_inference_service
from llmops.builders import inference as B
from llmops.controller import Context
from llmops.handlers import metrics
from llmops.handlers.driver import ApplyMemory
from llmops.kube.children import ChildKey
from llmops.kube.client import ApiError
from llmops.plan import inference as P
from llmops.serving import autoscaler
from llmops.serving.adapter_client import sync_adapters

logger = logging.getLogger(__name__)
PODMONITORS = "monitoring.coreos.com/v1/podmonitors"


class InferenceServiceKind:
    kind = "InferenceService"
    tolerate_refused_updates = False
    parse = staticmethod(parse_inference_service)
    plan = staticmethod(P.plan)
    forget = staticmethod(metrics.forget_inference)

    def record(self, ctx: Context, svc: InferenceService, body: dict[str, Any], plan: P.Plan, observed: P.Observed) -> None:
        metrics.record_inference(ctx, svc, observed.pods, observed.decision)

    def child_kinds(self, ctx: Context, svc: InferenceService) -> tuple[tuple[str, str], ...]:
        """Child kinds to list and prune; KEDA's only where it is served or asked for. autoscaling/v2
        is built in: always listed, so a dropped HPA is pruned."""
        served, engine = ctx.served or set(), svc.spec.autoscaling.engine if svc.spec.autoscaling else None
        kinds = [*B.CHILD_KINDS, B.AUTOSCALER_KINDS[0]]
        if engine == AutoscalingEngine.KEDA or "keda.sh/v1alpha1/scaledobjects" in served:
            kinds.append(B.AUTOSCALER_KINDS[1])
        if PODMONITORS in served:
            kinds.append(B.MONITOR_KIND)
        return tuple(kinds)

    def observe(self, ctx: Context, svc: InferenceService, owned: dict[ChildKey, dict[str, Any]], memory: ApplyMemory) -> P.Observed:
        ns, name = svc.metadata.namespace or "default", svc.metadata.name
        deployment = next((o for (_, k, n), o in owned.items() if k == "Deployment" and n == B.deployment_name(name)), None)
        # the server pods carry the owner labels too: with managed-by the pod cache answers
        selector = f"{B.selector_string(svc)},{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE}"
        pods = [P.PodView.from_pod(p) for p in ctx.kube.list("v1", "Pod", ns, selector)]
        desired, decision = autoscaler.desired_replicas(svc, deployment, pods, ctx.clock())
        wanted = P.wanted_adapters(svc, _finetune_jobs(ctx, ns))
        return P.Observed(deployment=deployment, pods=tuple(pods), desired_replicas=desired, decision=decision,
                          wanted=wanted, adapters=sync_adapters(svc, pods, wanted), pod_monitor_served=PODMONITORS in (ctx.served or ()),
                          operator_namespace=os.environ.get("POD_NAMESPACE") or B.DEFAULT_OPERATOR_NAMESPACE, refusal=memory.refusal())


def _finetune_jobs(ctx: Context, namespace: str) -> list[dict[str, Any]]:
    """The namespace's FinetuneJobs (raw bodies: one invalid job must not break serving)."""
    try:
        return list(ctx.kube.list(API_VERSION, "FinetuneJob", namespace))
    except ApiError as exc:
        logger.debug("listing FinetuneJobs in %s failed: %s", namespace, exc)
        return []
