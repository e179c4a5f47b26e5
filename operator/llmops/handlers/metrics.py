"""What each kind's reconcile records in the operator's Prometheus metrics (``llmops.metrics``),
and what it forgets when the object is gone."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

from llmops.api import conditions as C
from llmops.api.finetune import FinetuneJobStatus
from llmops.api.inference import InferenceService, ScaleDecision
from llmops.api.training import TrainingJob, TrainingJobStatus
from llmops.controller import Context
from llmops.plan import inference, training
from llmops.serving import autoscaler


def _true(conditions: list[C.Condition]) -> tuple[str, ...]:
    return tuple(sorted(c.type for c in conditions if c.status == C.ConditionStatus.TRUE))


def record_training(ctx: Context, job: TrainingJob, stored: dict[str, Any], status: TrainingJobStatus,
                    observed: training.Observed) -> None:
    """Jobs by condition, restarts by cause (the increase since the ``stored`` status), time to
    first step (once per attempt), goodput and checkpoint age."""
    ns, name, m = job.metadata.namespace, job.metadata.name, ctx.metrics
    m.set_job_conditions("TrainingJob", ns, name, _true(status.conditions))
    before = (stored.get("restarts") or {}).get("byCause") or {}
    for cause, count in status.restarts.by_cause.items():
        if count > before.get(cause, 0):
            m.restarts.labels(ns, name, cause).inc(count - before.get(cause, 0))
    first = training.time_to_first_step(observed.progress, observed.pods, status.attempt)
    m.observe_time_to_first_step("TrainingJob", ns, name, status.attempt, first)
    report = observed.progress if observed.progress is not None and observed.progress.attempt == status.attempt else None
    ratio = training.goodput(report, status.resumed_from_step, status.start_time)
    if ratio is not None:
        m.goodput.labels(ns, name).set(ratio)
    if status.checkpoint and status.checkpoint.time:
        age = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC) - C.parse_time(status.checkpoint.time)
        m.checkpoint_age.labels(ns, name).set(max(0.0, age.total_seconds()))


def forget_training(ctx: Context, namespace: str, name: str) -> None:
    ctx.metrics.set_job_conditions("TrainingJob", namespace, name, ())


def record_finetune(ctx: Context, ns: str, name: str, status: FinetuneJobStatus) -> None:
    """Jobs by condition (kind FinetuneJob), validation loss (latest, best, base), perplexity and
    dataset tokens: what an admin compares across finetunes without opening each status."""
    m = ctx.metrics
    m.set_job_conditions("FinetuneJob", ns, name, _true(status.conditions))
    ev = status.evaluation
    if ev is not None:
        for which, value in (("latest", ev.validation_loss), ("best", ev.best_validation_loss), ("base", ev.base_validation_loss)):
            if value is not None:
                m.finetune_validation_loss.labels(ns, name, which).set(value)
        if ev.perplexity is not None:
            m.finetune_perplexity.labels(ns, name).set(ev.perplexity)
    if status.dataset is not None and status.dataset.tokens is not None:
        m.finetune_dataset_tokens.labels(ns, name).set(status.dataset.tokens)


def forget_finetune(ctx: Context, namespace: str, name: str) -> None:
    m = ctx.metrics
    m.set_job_conditions("FinetuneJob", namespace, name, ())
    series = [(m.finetune_validation_loss, (namespace, name, w)) for w in ("latest", "best", "base")]
    series += [(m.finetune_perplexity, (namespace, name)), (m.finetune_dataset_tokens, (namespace, name))]
    for gauge, labels in series:
        with contextlib.suppress(KeyError):  # never set
            gauge.remove(*labels)


def record_inference(ctx: Context, svc: InferenceService, pods: Sequence[inference.PodView], decision: ScaleDecision | None) -> None:
    """Each replica's measured load time once (per operator process), each replica change once."""
    ns, name = svc.metadata.namespace or "default", svc.metadata.name
    mem = autoscaler.memory(ns, name, svc.metadata.uid or "")
    for p in pods:
        seconds = inference.pod_load_seconds(p) if p.ready else None
        if seconds is not None and p.name not in mem.loads_recorded:
            ctx.metrics.model_load_seconds.labels(ns, name).observe(seconds)
            mem.loads_recorded.add(p.name)
    mem.loads_recorded &= {p.name for p in pods}  # forget replaced pods (bounded memory)
    if decision is not None:
        direction = "up" if decision.to > decision.from_ else "down"
        ctx.metrics.scale_decisions.labels(ns, name, direction, decision.reason.split(" (")[0]).inc()


def forget_inference(ctx: Context, namespace: str, name: str) -> None:
    autoscaler.forget(namespace, name)
