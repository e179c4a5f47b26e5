"""TrainingJob reconcile: parse, observe, plan (pure), apply + prune, events, one status write.

All decisions are in llmops.status.training.plan; this module only gathers facts and
executes the plan through llmops.kube.
"""

from __future__ import annotations

import datetime as dt
import logging

from llmops import API_VERSION
from llmops.api import conditions as C
from llmops.api.common import ApiValidationError
from llmops.api.training import TrainingJob, parse_training_job
from llmops.builders.training import CHILD_KINDS, GANG_KINDS, gang_name
from llmops.controller import Context
from llmops.kube.children import list_owned, sync_children
from llmops.kube.client import ApiError
from llmops.kube.events import emit
from llmops.status.training import Observed, plan

logger = logging.getLogger(__name__)
KIND = "TrainingJob"
ALL_KINDS = tuple(CHILD_KINDS) + tuple(GANG_KINDS)


def reconcile(ctx: Context, namespace: str, name: str) -> float | None:
    kube = ctx.kube
    body = kube.get(API_VERSION, KIND, namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None  # children go with the owner (garbage collection); nothing to do
    now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
    try:
        job = parse_training_job(body)
    except ApiValidationError as exc:
        _invalid(ctx, body, exc, now)
        return None

    owned = list_owned(kube, body, ALL_KINDS)
    try:
        nodes = kube.list("v1", "Node", None)
    except ApiError as exc:  # no RBAC to read nodes: node rules are off, not an error
        logger.warning("cannot list nodes: %s", exc)
        nodes = None
    observed = _observe(job, owned, nodes, ctx.served, ())
    result = plan(job, observed, now)
    sync = sync_children(kube, body, result.desired, owned, ALL_KINDS)
    if sync.foreign:  # a name we need is held by another owner: say so in status, adopt nothing
        foreign = tuple(f"{kind}/{n}" for _, kind, n in sync.foreign)
        result = plan(job, _observe(job, owned, nodes, ctx.served, foreign), now)

    status = result.status.wire()
    for event in result.events:
        emit(kube, body, event.type, event.reason, event.message, f"{status.get('attempt', 0)}/{event.message}", now)
    if status != (body.get("status") or {}):
        try:
            kube.replace_status(API_VERSION, KIND, namespace, name, status, body["metadata"]["resourceVersion"])
        except ApiError as exc:
            if exc.status in (409, 422):  # the object moved under us: re-read at once, no backoff
                return 0.0
            raise
    _record_metrics(ctx, job, body.get("status") or {}, result.status)
    return result.requeue_after


def _observe(job: TrainingJob, owned: dict, nodes: list | None, served: set[str], foreign: tuple[str, ...]) -> Observed:
    pods = [o for (_, kind, _), o in owned.items() if kind == "Pod"]
    lease = next((o for (_, kind, _), o in owned.items() if kind == "Lease"), None)
    current_gang = gang_name(job.metadata.name, job.status.attempt)
    gang = next((o for (av, kind, n), o in owned.items() if kind == "PodGroup" and n == current_gang), None)
    return Observed.from_objects(
        pods=pods, nodes=nodes, lease=lease, gang_object=gang, served=served, foreign_children=foreign,
    )


def _invalid(ctx: Context, body: dict, exc: ApiValidationError, now: dt.datetime) -> None:
    """A CR that passed the CRD but not the typed model: Failed/InvalidSpec, one Event."""
    meta = body["metadata"]
    prev = body.get("status") or {}
    message = "; ".join(f"{path}: {msg}" for path, msg in exc.errors)[:1024]
    conds = [C.Condition.model_validate(c) for c in prev.get("conditions") or []]
    conds = C.set_condition(conds, C.Condition(
        type=C.FAILED, status=C.ConditionStatus.TRUE, reason=C.INVALID_SPEC, message=message,
        observed_generation=meta.get("generation"), last_transition_time=C.rfc3339(now)), now)
    status = {**prev, "conditions": [c.model_dump(by_alias=True, exclude_none=True, mode="json") for c in conds],
              "observedGeneration": meta.get("generation")}
    if status != prev:
        emit(ctx.kube, body, "Warning", C.INVALID_SPEC, message, f"gen{meta.get('generation')}", now)
        ctx.kube.replace_status(API_VERSION, KIND, meta["namespace"], meta["name"], status)


def _record_metrics(ctx: Context, job: TrainingJob, prev: dict, status) -> None:  # noqa: ANN001
    """Restarts by cause (the increase since the last status), checkpoint age, job conditions."""
    ns, name = job.metadata.namespace, job.metadata.name
    before = ((prev.get("restarts") or {}).get("byCause") or {})
    for cause, count in status.restarts.by_cause.items():
        if count > before.get(cause, 0):
            ctx.metrics.restarts.labels(ns, name, cause).inc(count - before.get(cause, 0))
    if status.checkpoint and status.checkpoint.time:
        committed = dt.datetime.fromisoformat(status.checkpoint.time.replace("Z", "+00:00"))
        age = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC) - committed
        ctx.metrics.checkpoint_age.labels(ns, name).set(max(0.0, age.total_seconds()))
