"""The one way every kind reports a CR that passed the CRD but not the typed model.

The CRD's schema and CEL rules catch almost everything at admission; what is left (a rule the
schema cannot express, or a CR stored before a stricter operator was installed) is reported
as a condition with reason InvalidSpec naming the fields, one Event per transition, and
nothing is created. Jobs get ``Failed=True`` (and count as Failed in ``llmops_jobs``: a fixed
spec starts them); an InferenceService gets ``Ready=False``.
"""

from __future__ import annotations

import datetime as dt

from llmops.api import conditions as C
from llmops.api.errors import ApiValidationError
from llmops.controller import Context
from llmops.handlers.writeback import write_back
from llmops.plan.conditions import Event

JOB_KINDS = ("TrainingJob", "FinetuneJob")


def report_invalid(ctx: Context, kind: str, body: dict, exc: ApiValidationError, now: dt.datetime) -> bool:
    """Report; False when the object moved under us (the caller re-reads)."""
    meta = body["metadata"]
    prev = body.get("status") or {}
    message = "; ".join(f"{path}: {msg}" for path, msg in exc.errors)[:1024]
    job = kind in JOB_KINDS
    conds = [C.Condition.model_validate(c) for c in prev.get("conditions") or []]
    conds = C.set_condition(conds, C.Condition(
        type=C.FAILED if job else C.READY, status=C.ConditionStatus.TRUE if job else C.ConditionStatus.FALSE,
        reason=C.INVALID_SPEC, message=message, observed_generation=meta.get("generation")), now)
    if job:
        ctx.metrics.set_job_conditions(kind, meta["namespace"], meta["name"], (C.FAILED,))
    state, reason = (C.job_state if job else C.service_state)(conds)
    status = {**prev, "conditions": [c.wire() for c in conds], "observedGeneration": meta.get("generation"),
              "state": state, "stateReason": reason}
    return status == prev or write_back(ctx.kube, body, status, [Event("Warning", C.INVALID_SPEC, message)], now)
