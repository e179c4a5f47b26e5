"""FinetuneJob metrics recorded by the reconcile into a private ``Metrics()`` registry and read
back through the Prometheus text exposition: the job under its True conditions (kind
FinetuneJob), validation loss latest/best/base, perplexity and dataset tokens; a deleted job
leaves every series (no cluster needed: the recording step is called directly)."""

from __future__ import annotations

from llmops.api import conditions as C
from llmops.api.finetune import DatasetStats, EvaluationStatus, FinetuneJobStatus
from llmops.controller import Context
from llmops.handlers import metrics as recorders
from llmops.metrics import Metrics
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(generate_latest(m.registry).decode()) for s in fam.samples}


def status(condition: str, **kw: object) -> FinetuneJobStatus:
    cond = C.Condition(type=condition, status=C.ConditionStatus.TRUE, reason=condition)
    return FinetuneJobStatus(conditions=[cond], **kw)


def test_finetune_metrics_follow_the_status_and_go_with_the_job() -> None:
    m = Metrics()
    ctx = Context(kube=None, metrics=m)  # type: ignore[arg-type]
    recorders.record_finetune(ctx, "ml", "legal", status(C.RUNNING, dataset=DatasetStats(examples=100, tokens=51200)))
    s = samples(m)
    assert s[("llmops_jobs", (("condition", "Running"), ("kind", "FinetuneJob")))] == 1
    assert s[("llmops_finetune_dataset_tokens", (("job", "legal"), ("namespace", "ml")))] == 51200
    assert not any(name == "llmops_finetune_validation_loss" for name, _ in s)  # nothing evaluated yet

    ev = EvaluationStatus(base_validation_loss=5.5, validation_loss=3.25, perplexity=25.79, best_step=40, best_validation_loss=3.0)
    recorders.record_finetune(ctx, "ml", "legal", status(C.SUCCEEDED, evaluation=ev))
    s = samples(m)
    loss = {dict(labels)["which"]: v for (name, labels), v in s.items() if name == "llmops_finetune_validation_loss"}
    assert loss == {"latest": 3.25, "best": 3.0, "base": 5.5}
    assert s[("llmops_finetune_perplexity", (("job", "legal"), ("namespace", "ml")))] == 25.79
    assert s[("llmops_jobs", (("condition", "Running"), ("kind", "FinetuneJob")))] == 0
    assert s[("llmops_jobs", (("condition", "Succeeded"), ("kind", "FinetuneJob")))] == 1

    recorders.forget_finetune(ctx, "ml", "legal")  # what the reconcile does for a deleted job
    s = samples(m)
    assert not any(name.startswith("llmops_finetune_") for name, _ in s)
    assert all(v == 0 for (name, _), v in s.items() if name == "llmops_jobs")
    recorders.forget_finetune(ctx, "ml", "legal")  # twice is harmless
