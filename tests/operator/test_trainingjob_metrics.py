"""TrainingJob metrics: the pure measurements (time to first step, goodput) table-tested, and
the reconcile's recording into a private ``Metrics()`` registry read back through the
Prometheus text exposition (jobs by condition, restarts by cause, time to first step once per
attempt, goodput, checkpoint age; a deleted job leaves the jobs gauge).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cr_factories import make_training_job, pod, running
from llmops.api.progress import CommittedCheckpoint, ProgressReport
from llmops.controller import Context
from llmops.handlers import metrics as recorders
from llmops.metrics import Metrics
from llmops.plan import Observed, plan
from llmops.plan.training import goodput, time_to_first_step
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def iso(seconds: float) -> str:
    return (T0 + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def report(step: int, beat: float, first: float | None, attempt: int = 0, **kw: object) -> ProgressReport:
    return ProgressReport(attempt=attempt, step=step, heartbeat=iso(beat), first_step_time=iso(first) if first is not None else None, **kw)


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(m.registry).decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize(
    ("rep", "created", "attempt", "want"),
    [
        (report(1, 40, first=40), [10, 12], 0, 30.0),  # from the first pod's creation
        (report(1, 40, first=None), [10], 0, None),  # no first step yet
        (report(1, 40, first=40, attempt=0), [10], 1, None),  # an older attempt's report
        (report(1, 40, first=40), [], 0, None),  # pods not seen
    ],
)
def test_time_to_first_step(rep, created, attempt, want) -> None:  # noqa: ANN001
    pods = tuple(dataclasses.replace(pod("t", r, attempt), created=iso(c)) for r, c in enumerate(created))
    assert time_to_first_step(rep, pods, attempt) == want


@pytest.mark.parametrize(
    ("rep", "resumed", "start", "want"),
    [
        # started at 0, first step ended at 10, 10 more steps by 110: 10 s/step, 11 steps useful
        (report(11, 110, first=10), None, 0, 11 * 10 / 110),
        # no time lost at all: goodput 1 (clamped)
        (report(11, 100, first=0), None, 0, 1.0),
        # resumed from step 20 after a restart: step 21 ended at 250, 31 at 350 -> 10 s/step,
        # 31 useful steps over 350 s of wall time (the restart and the redone steps are lost)
        (report(31, 350, first=250, attempt=1), 20, 0, 31 * 10 / 350),
        (report(1, 100, first=100), None, 0, None),  # one step: no step time to measure
        (report(11, 110, first=10), None, None, None),  # never started
    ],
)
def test_goodput(rep, resumed, start, want) -> None:  # noqa: ANN001
    got = goodput(rep, resumed, iso(start) if start is not None else None)
    assert got == (pytest.approx(want) if want is not None else None)


def lease(rep: ProgressReport) -> dict:
    from llmops.api.labels import PROGRESS_ANNOTATION

    return {"metadata": {"name": "t-progress", "annotations": {PROGRESS_ANNOTATION: rep.model_dump_json(by_alias=True, exclude_none=True)}},
            "spec": {"renewTime": rep.heartbeat}}


def reconcile_once(ctx: Context, job, pods: tuple, rep: ProgressReport | None, now: float):  # noqa: ANN001, ANN201
    obs = dataclasses.replace(Observed.from_objects(lease=lease(rep) if rep else None), pods=pods)
    p = plan(job, obs, T0 + dt.timedelta(seconds=now))
    prev = job.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    recorders.record_training(ctx, job, prev, p.status, obs)
    return job.model_copy(update={"status": p.status})


def test_reconcile_records_job_metrics() -> None:
    m = Metrics()
    clock = {"t": 0.0}
    ctx = Context(kube=None, metrics=m, clock=lambda: T0.timestamp() + clock["t"])  # type: ignore[arg-type]
    job = make_training_job("t").nodes(2).checkpoint(uri="s3://ck/t", every_steps=10).build()
    pods = tuple(running(dataclasses.replace(pod("t", r, 0), created=iso(0))) for r in range(2))

    job = reconcile_once(ctx, job, pods, None, 0)
    s = samples(m)
    assert s[("llmops_jobs", (("condition", "Running"), ("kind", "TrainingJob")))] == 1
    assert ("llmops_job_goodput_ratio", (("job", "t"), ("namespace", "ml"))) not in s

    ck = CommittedCheckpoint(id="step-00000010", step=10, uri="s3://ck/t/step-00000010", time=iso(100))
    rep = report(11, 120, first=20, checkpoint=ck)  # 10 s/step, 11 steps in 120 s
    clock["t"] = 130
    for _ in range(2):  # the same facts twice: time to first step is observed once
        job = reconcile_once(ctx, job, pods, rep, 130)
    s = samples(m)
    assert s[("llmops_time_to_first_step_seconds_count", (("kind", "TrainingJob"),))] == 1
    assert s[("llmops_time_to_first_step_seconds_sum", (("kind", "TrainingJob"),))] == 20
    ratio = s[("llmops_job_goodput_ratio", (("job", "t"), ("namespace", "ml")))]
    assert job.status.start_time == iso(0)
    assert ratio == pytest.approx(11 * 10 / 120)
    assert s[("llmops_checkpoint_age_seconds", (("job", "t"), ("namespace", "ml")))] == 30

    # A worker OOMKilled: one restart by that cause; the job counts under Restarting.
    from llmops.observe.pods import ContainerFacts

    oomkilled = ContainerFacts("trainer", "terminated", exit_code=137, reason="OOMKilled")
    oom = dataclasses.replace(pods[1], containers=(oomkilled,), phase="Failed")
    job = reconcile_once(ctx, job, (pods[0], oom), rep, 140)
    job = reconcile_once(ctx, job, (pods[0], oom), rep, 141)  # no double count
    s = samples(m)
    assert s[("llmops_job_restarts_total", (("cause", "OOMKilled"), ("job", "t"), ("namespace", "ml")))] == 1
    assert s[("llmops_jobs", (("condition", "Restarting"), ("kind", "TrainingJob")))] == 1
    assert s[("llmops_jobs", (("condition", "Running"), ("kind", "TrainingJob")))] == 0

    m.set_job_conditions("TrainingJob", "ml", "t", ())  # what the reconcile does for a deleted job
    s = samples(m)
    assert all(v == 0 for (name, _), v in s.items() if name == "llmops_jobs")
