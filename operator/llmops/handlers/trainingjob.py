"""TrainingJob: what the reconcile driver needs (``handlers.driver``); every decision is in
``llmops.plan.training.plan``."""

from __future__ import annotations

import logging
from typing import Any

from llmops.api.training import TrainingJob, parse_training_job
from llmops.builders.training import CHILD_KINDS, GANG_KINDS, gang_name
from llmops.controller import Context
from llmops.handlers import metrics
from llmops.handlers.driver import ApplyMemory
from llmops.kube.children import ChildKey
from llmops.kube.client import ApiError
from llmops.plan.training import Observed, Plan, plan

logger = logging.getLogger(__name__)


class TrainingJobKind:
    kind = "TrainingJob"
    tolerate_refused_updates = False
    parse = staticmethod(parse_training_job)
    plan = staticmethod(plan)
    forget = staticmethod(metrics.forget_training)

    def record(self, ctx: Context, job: TrainingJob, body: dict[str, Any], plan: Plan, observed: Observed) -> None:
        metrics.record_training(ctx, job, body.get("status") or {}, plan.status, observed)

    def child_kinds(self, ctx: Context, job: TrainingJob) -> tuple[tuple[str, str], ...]:
        return (*CHILD_KINDS, *GANG_KINDS)

    def observe(self, ctx: Context, job: TrainingJob, owned: dict[ChildKey, dict[str, Any]], memory: ApplyMemory) -> Observed:
        try:
            nodes = ctx.kube.list("v1", "Node", None)
        except ApiError as exc:  # no RBAC to read nodes: node rules are off, not an error
            logger.warning("cannot list nodes: %s", exc)
            nodes = None
        current_gang = gang_name(job.metadata.name, job.status.attempt)
        return Observed.from_objects(
            pods=[o for (_, kind, _), o in owned.items() if kind == "Pod"], nodes=nodes,
            lease=next((o for (_, kind, _), o in owned.items() if kind == "Lease"), None),
            gang_object=next((o for (_, kind, n), o in owned.items() if kind == "PodGroup" and n == current_gang), None),
            served=ctx.served, foreign_children=memory.foreign, refusal=memory.refusal(),
            startup_grace_seconds=ctx.startup_grace_seconds, node_lost_grace_seconds=ctx.node_lost_grace_seconds,
        )

