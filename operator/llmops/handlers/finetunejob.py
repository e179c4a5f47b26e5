"""FinetuneJob reconcile: parse, observe (child TrainingJob, its progress Lease, the
InferenceService named by serve), plan (pure), apply + prune, create the InferenceService when
``serve.create`` asks, events, one status write.

All decisions are in llmops.status.finetune.plan; this module only gathers facts and executes
the plan through llmops.kube. The InferenceService is created, never applied: it is not a
child (no owner), and once it exists its spec belongs to its users (the adapter reaches it
through the publish contract, see llmops.status.finetune.published_adapters).
"""

from __future__ import annotations

import datetime as dt
import logging

from llmops import API_VERSION
from llmops.api import conditions as C
from llmops.api.errors import ApiValidationError
from llmops.api.finetune import FinetuneJob, FinetuneJobStatus, parse_finetune_job
from llmops.api.inference import KIND as ISVC_KIND
from llmops.builders import finetune as B
from llmops.builders.training import lease_name
from llmops.controller import Context
from llmops.handlers.invalid import report_invalid
from llmops.handlers.writeback import write_back
from llmops.kube.children import controller_uid, list_owned, sync_children
from llmops.kube.client import ApiError
from llmops.kube.events import emit
from llmops.kube.workqueue import Backoff
from llmops.status import finetune as S

logger = logging.getLogger(__name__)
KIND = "FinetuneJob"


def reconcile(ctx: Context, namespace: str, name: str) -> float | Backoff | None:
    kube = ctx.kube
    body = kube.get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        _forget_metrics(ctx, namespace, name)
        return None  # the child TrainingJob goes with its owner (garbage collection)
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
    try:
        job = parse_finetune_job(body)
    except ApiValidationError as exc:
        report_invalid(ctx, KIND, body, exc, now)
        return None

    owned = list_owned(kube, body, B.CHILD_KINDS)
    tj_key = (API_VERSION, "TrainingJob", B.training_job_name(name))
    child = owned.get(tj_key)
    service = _service(ctx, job)
    observed = S.Observed.from_objects(training_job=child, lease=_lease(ctx, namespace, child), inference_service=service)
    result = S.plan(job, observed, now)

    sync = sync_children(kube, body, result.desired, owned, B.CHILD_KINDS)
    refusal = sync.refused
    if refusal is not None and sync.refused_existing:
        # e.g. an edit the running child refuses (immutable fields): it keeps running as it is
        logger.warning("FinetuneJob %s/%s: applying the TrainingJob was refused: %s", namespace, name, refusal.message)
        refusal = None
    if sync.foreign or refusal is not None:
        foreign = tuple(f"{kind}/{n}" for _, kind, n in sync.foreign)
        observed = S.Observed.from_objects(training_job=child, lease=_lease(ctx, namespace, child),
                                           inference_service=service, foreign_children=foreign, refusal=refusal)
        result = S.plan(job, observed, now)

    created, error = None, None
    if result.create_service is not None:
        created, error = _create_service(ctx, result.create_service)
        observed = S.Observed(training_job=observed.training_job, report=observed.report, inference_service=created,
                              service_create_error=error, foreign_children=observed.foreign_children, refusal=refusal)
        result = S.plan(job, observed, now)

    _record_metrics(ctx, namespace, name, result.status)
    if created is not None and error is None:
        svc = result.status.served.inference_service_name if result.status.served else ""
        emit(kube, body, "Normal", "InferenceServiceCreated", f"created InferenceService {svc} for the base model (serve.create; not owned by this job)", f"create/{svc}", now)
    if not write_back(kube, body, result.status.wire(), result.events, now):
        return 0.0  # the object moved under us: re-read at once
    if refusal is not None and not refusal.permanent:
        return Backoff(refusal.reason)
    return result.requeue_after


def _record_metrics(ctx: Context, namespace: str, name: str, status: FinetuneJobStatus) -> None:
    """Jobs by condition (kind FinetuneJob), validation loss (latest, best, base), perplexity and
    dataset tokens: what an admin compares across finetunes without opening each status."""
    m = ctx.metrics
    m.set_job_conditions(KIND, namespace, name, tuple(sorted(c.type for c in status.conditions if c.status == C.ConditionStatus.TRUE)))
    ev = status.evaluation
    if ev is not None:
        for which, value in (("latest", ev.validation_loss), ("best", ev.best_validation_loss), ("base", ev.base_validation_loss)):
            if value is not None:
                m.finetune_validation_loss.labels(namespace, name, which).set(value)
        if ev.perplexity is not None:
            m.finetune_perplexity.labels(namespace, name).set(ev.perplexity)
    if status.dataset is not None and status.dataset.tokens is not None:
        m.finetune_dataset_tokens.labels(namespace, name).set(status.dataset.tokens)


def _forget_metrics(ctx: Context, namespace: str, name: str) -> None:
    m = ctx.metrics
    m.set_job_conditions(KIND, namespace, name, ())
    series = [(m.finetune_validation_loss, (namespace, name, w)) for w in ("latest", "best", "base")]
    series += [(m.finetune_perplexity, (namespace, name)), (m.finetune_dataset_tokens, (namespace, name))]
    for gauge, labels in series:
        try:
            gauge.remove(*labels)
        except KeyError:
            pass  # never set


def _service(ctx: Context, job: FinetuneJob) -> dict | None:
    serve = job.spec.serve
    if serve is None:
        return None
    return ctx.kube.get(API_VERSION, ISVC_KIND, job.metadata.namespace or "default", serve.inference_service_name)


def _lease(ctx: Context, namespace: str, child: dict | None) -> dict | None:
    """The child's progress Lease, when the child controls it (the report's owner check is in status)."""
    if child is None:
        return None
    lease = ctx.kube.get("coordination.k8s.io/v1", "Lease", namespace, lease_name(child["metadata"]["name"]))
    if lease is not None and controller_uid(lease) != child["metadata"].get("uid"):
        return None
    return lease


def _create_service(ctx: Context, obj: dict) -> tuple[dict | None, str | None]:
    """Create the InferenceService; (object, None), or (existing, None) after a race, or (None, why)."""
    meta = obj["metadata"]
    try:
        return ctx.kube.create(obj), None
    except ApiError as exc:
        if exc.status == 409:  # someone else created it meanwhile: use theirs, never overwrite
            return ctx.kube.get(API_VERSION, ISVC_KIND, meta["namespace"], meta["name"]), None
        if exc.status in (400, 403, 422):
            return None, (exc.message or exc.reason or str(exc))[:1024]
        raise


