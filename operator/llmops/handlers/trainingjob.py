"""TrainingJob reconcile: parse, observe, plan (pure), apply + prune, events, one status write.

All decisions are in llmops.status.training.plan; this module only gathers facts and
executes the plan through llmops.kube.
"""

from __future__ import annotations

import datetime as dt
import logging

from llmops import API_VERSION
from llmops.api import conditions as C
from llmops.api.errors import ApiValidationError
from llmops.api.training import TrainingJob, parse_training_job
from llmops.builders.training import CHILD_KINDS, GANG_KINDS, gang_name
from llmops.controller import Context
from llmops.failures import Refusal
from llmops.handlers.invalid import report_invalid
from llmops.handlers.writeback import write_back
from llmops.kube.children import list_owned, sync_children
from llmops.kube.client import ApiError
from llmops.kube.workqueue import Backoff
from llmops.status.training import Observed, goodput, plan, time_to_first_step

logger = logging.getLogger(__name__)
KIND = "TrainingJob"
ALL_KINDS = tuple(CHILD_KINDS) + tuple(GANG_KINDS)


def reconcile(ctx: Context, namespace: str, name: str) -> float | Backoff | None:
    kube = ctx.kube
    body = kube.get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        ctx.metrics.set_job_conditions(KIND, namespace, name, ())
        return None  # children go with the owner (garbage collection); nothing to do
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
    try:
        job = parse_training_job(body)
    except ApiValidationError as exc:
        report_invalid(ctx, KIND, body, exc, now)
        return None

    owned = list_owned(kube, body, ALL_KINDS)
    try:
        nodes = kube.list("v1", "Node", None)
    except ApiError as exc:  # no RBAC to read nodes: node rules are off, not an error
        logger.warning("cannot list nodes: %s", exc)
        nodes = None
    observed = _observe(ctx, job, owned, nodes, ())
    result = plan(job, observed, now)
    # Pods are create-once: a pod's spec is immutable, so re-applying an existing one is at best
    # a wasted write per reconcile and at worst (a mutable CR field such as totalSteps reaches
    # the pod env) a 422 that breaks every reconcile. Changes reach the pods with the next
    # attempt. Existing desired pods are neither applied nor pruned.
    kept = {k for k in map(_child_key, result.desired) if k[1] == "Pod" and k in owned}
    sync = sync_children(kube, body, [d for d in result.desired if _child_key(d) not in kept],
                         {k: v for k, v in owned.items() if k not in kept}, ALL_KINDS)
    if sync.foreign or sync.refused:
        # A name we need is held by another owner (adopt nothing), or the API server said no
        # (admission, discovery, validation): the status says why.
        foreign = tuple(f"{kind}/{n}" for _, kind, n in sync.foreign)
        result = plan(job, _observe(ctx, job, owned, nodes, foreign, refusal=sync.refused), now)

    if not write_back(kube, body, result.status.wire(), result.events, now):
        return 0.0  # the object moved under us: re-read at once, no backoff
    _record_metrics(ctx, job, body.get("status") or {}, result.status, observed)
    if sync.refused and not sync.refused.permanent:
        return Backoff(sync.refused.reason)
    return result.requeue_after


def _child_key(obj: dict) -> tuple[str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def _observe(ctx: Context, job: TrainingJob, owned: dict, nodes: list | None, foreign: tuple[str, ...],
             refusal: Refusal | None = None) -> Observed:
    pods = [o for (_, kind, _), o in owned.items() if kind == "Pod"]
    lease = next((o for (_, kind, _), o in owned.items() if kind == "Lease"), None)
    current_gang = gang_name(job.metadata.name, job.status.attempt)
    gang = next((o for (av, kind, n), o in owned.items() if kind == "PodGroup" and n == current_gang), None)
    return Observed.from_objects(
        pods=pods, nodes=nodes, lease=lease, gang_object=gang, served=ctx.served, foreign_children=foreign,
        refusal=refusal, startup_grace_seconds=ctx.startup_grace_seconds, node_lost_grace_seconds=ctx.node_lost_grace_seconds,
    )


def _record_metrics(ctx: Context, job: TrainingJob, prev: dict, status, observed: Observed) -> None:  # noqa: ANN001
    """Jobs by condition, restarts by cause (the increase since the last status), time to first
    step (once per attempt), goodput and checkpoint age."""
    ns, name = job.metadata.namespace, job.metadata.name
    m = ctx.metrics
    m.set_job_conditions(KIND, ns, name, tuple(sorted(c.type for c in status.conditions if c.status == C.ConditionStatus.TRUE)))
    before = ((prev.get("restarts") or {}).get("byCause") or {})
    for cause, count in status.restarts.by_cause.items():
        if count > before.get(cause, 0):
            m.restarts.labels(ns, name, cause).inc(count - before.get(cause, 0))
    m.observe_time_to_first_step(KIND, ns, name, status.attempt, time_to_first_step(observed.progress, observed.pods, status.attempt))
    report = observed.progress if observed.progress is not None and observed.progress.attempt == status.attempt else None
    ratio = goodput(report, status.resumed_from_step, status.start_time)
    if ratio is not None:
        m.goodput.labels(ns, name).set(ratio)
    if status.checkpoint and status.checkpoint.time:
        committed = C.parse_time(status.checkpoint.time)
        age = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC) - committed
        m.checkpoint_age.labels(ns, name).set(max(0.0, age.total_seconds()))
