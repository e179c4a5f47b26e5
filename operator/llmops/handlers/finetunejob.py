"""FinetuneJob: what the reconcile driver needs (``handlers.driver``); every decision is in
``llmops.plan.finetune.plan``.

Observed: the child TrainingJob, its progress Lease and the InferenceService ``serve`` names.
The InferenceService is created (``Plan.creates``), never applied: it is not a child (no
owner), and once it exists its spec belongs to its users (the adapter reaches it through the
publish contract, ``llmops.plan.finetune.published_adapters``).
"""

from __future__ import annotations

from typing import Any

from llmops import API_VERSION
from llmops.api.finetune import FinetuneJob, parse_finetune_job
from llmops.api.inference import KIND as ISVC_KIND
from llmops.builders import finetune as B
from llmops.builders.training import lease_name
from llmops.controller import Context
from llmops.failures import Refusal
from llmops.handlers import metrics
from llmops.handlers.driver import ApplyMemory
from llmops.kube.children import ChildKey, controller_uid
from llmops.plan import finetune as P


class FinetuneJobKind:
    kind = "FinetuneJob"
    tolerate_refused_updates = True  # e.g. an edit the running child refuses (immutable fields)
    parse = staticmethod(parse_finetune_job)
    plan = staticmethod(P.plan)
    forget = staticmethod(metrics.forget_finetune)

    def record(self, ctx: Context, job: FinetuneJob, body: dict[str, Any], plan: P.Plan, observed: P.Observed) -> None:
        metrics.record_finetune(ctx, job.metadata.namespace or "default", job.metadata.name, plan.status)

    def child_kinds(self, ctx: Context, job: FinetuneJob) -> tuple[tuple[str, str], ...]:
        return B.CHILD_KINDS

    def observe(self, ctx: Context, job: FinetuneJob, owned: dict[ChildKey, dict[str, Any]], memory: ApplyMemory) -> P.Observed:
        ns, serve = job.metadata.namespace or "default", job.spec.serve
        child = owned.get((API_VERSION, "TrainingJob", B.training_job_name(job.metadata.name)))
        lease = ctx.kube.get("coordination.k8s.io/v1", "Lease", ns, lease_name(child["metadata"]["name"])) if child else None
        service_key = (API_VERSION, ISVC_KIND, serve.inference_service_name) if serve else None
        create_error = memory.met.get(service_key) if service_key else None
        return P.Observed.from_objects(
            training_job=child,
            lease=lease if lease is not None and child and controller_uid(lease) == child["metadata"].get("uid") else None,
            inference_service=ctx.kube.get(*service_key[:2], ns, service_key[2]) if service_key else None,
            service_create_error=create_error.message if isinstance(create_error, Refusal) else None,
            foreign_children=memory.foreign, refusal=memory.refusal(exclude=[service_key] if service_key else []),
        )
