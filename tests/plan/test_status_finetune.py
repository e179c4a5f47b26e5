"""FinetuneJob status and plan: the mirror of the child TrainingJob (conditions with their
reasons and times, attempt, restarts, progress, checkpoint, times), the runtime's own reason
for an exit-78 failure, the finetune report (dataset, evaluation, output) folded and kept,
the Lease owner check, finished jobs never restarting, the TTL deleting only the child, an
InvalidSpec failure giving way to a fixed spec, the Published table (Training, JobFailed,
WaitingForOutput, WaitingForService, serve.create, ServiceCreateFailed, AdapterNotReady,
OutputPublished), events once per transition, no churn, and the publish contract
(``published_adapters``) the InferenceService reconcile reads."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from cr_factories import make_finetune_job
from llmops.api import conditions as C
from llmops.api.labels import PROGRESS_ANNOTATION
from llmops.api.progress import FinetuneReport
from llmops.plan import finetune as S

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
TJ_UID = "tj-uid"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def cond(type_: str, status: bool, reason: str, message: str = "", t: float = 0) -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": iso(t), "observedGeneration": 1}


RUNNING = [cond("Queued", False, "AllPodsRunning", "all 2 worker pods are running (attempt 0)", 5),
           cond("Running", True, "AllPodsRunning", "all 2 worker pods are running (attempt 0)", 5)]
SUCCEEDED = [cond("Queued", False, "Completed", "rank 0 exited 0", 90), cond("Running", False, "Completed", "rank 0 exited 0", 90),
             cond("Restarting", False, "Completed", "rank 0 exited 0", 90), cond("Succeeded", True, "Completed", "rank 0 exited 0", 90)]
FAILED_78 = "pod ft-train-w0-a0 exited 78 (configuration error): DatasetFieldMissing: example 3 has no field 'text' (has ['content'])"
FAILED = [cond("Queued", False, "ConfigError", FAILED_78, 20), cond("Running", False, "ConfigError", FAILED_78, 20),
          cond("Failed", True, "ConfigError", FAILED_78, 20)]


def child(conditions: list[dict], **status: Any) -> dict[str, Any]:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "ft-train", "namespace": "ml", "uid": TJ_UID},
            "status": {"conditions": conditions, **status}}


def succeeded_child() -> dict[str, Any]:
    return child(SUCCEEDED, attempt=1, restarts={"total": 1, "counted": 1, "byCause": {"WorkerFailed": 1}},
                 progress={"step": 16, "totalSteps": 16, "loss": 1.5}, checkpoint={"id": "step-00000016", "step": 16, "uri": "s3://ck/x"},
                 startTime=iso(5), completionTime=iso(90), resumedFromStep=8)


OUTPUT = {"uri": "pvc://out/ft", "manifestSha256": "b" * 64, "sizeBytes": 1234, "baseModelRevision": "sha256:" + "c" * 64}


def report(output: bool = True, **over: Any) -> FinetuneReport:
    doc: dict[str, Any] = {
        "dataset": {"examples": 64, "validationExamples": 16, "tokens": 576, "sha256": "d" * 64},
        "evaluation": {"baseValidationLoss": 3.2, "validationLoss": 2.1, "perplexity": 8.17, "bestStep": 16, "bestValidationLoss": 2.1},
        **({"output": OUTPUT} if output else {}),
        **over,
    }
    return FinetuneReport.model_validate(doc)


def lease(rep: FinetuneReport | None, owner: str = TJ_UID, raw: str | None = None) -> dict[str, Any]:
    progress = raw if raw is not None else json.dumps({"attempt": 1, "step": 16, "heartbeat": iso(89),
                                                      **({"finetune": rep.model_dump(by_alias=True, exclude_none=True)} if rep else {})})
    return {"metadata": {"name": "ft-train-progress", "annotations": {PROGRESS_ANNOTATION: progress},
                         "ownerReferences": [{"controller": True, "uid": owner, "kind": "TrainingJob", "name": "ft-train"}]}}


def service(adapters: list[dict] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "svc", "namespace": "ml"}, "spec": {"model": {"uri": "pvc://models/tiny"}},
            "status": {"adapters": adapters or []}}


def reconcile(job, observed, now):  # noqa: ANN001, ANN201
    """One reconcile: the plan, and the job as it reads after the status write."""
    p = S.plan(job, observed, now)
    return job.model_copy(update={"status": p.status}), p


def find(status, type_: str):  # noqa: ANN001, ANN201
    return C.find_condition(status.conditions, type_)


def test_no_child_yet_creates_it_and_says_queued() -> None:
    job = make_finetune_job("ft").build()
    p = S.plan(job, S.Observed(), at(0))
    assert [o["metadata"]["name"] for o in p.desired] == ["ft-train"]
    q = find(p.status, C.QUEUED)
    assert (q.status.value, q.reason) == ("True", C.CREATED) and "ft-train" in q.message
    assert p.status.training_job_name == "ft-train" and p.status.observed_generation == 1
    assert p.requeue_after == S.WATCH_SECONDS and p.creates == ()


def test_mirrors_the_child() -> None:
    job = make_finetune_job("ft").build()
    p = S.plan(job, S.Observed.from_objects(training_job=succeeded_child()), at(100))
    st = p.status
    assert [(c.type, c.status.value, c.reason, c.last_transition_time) for c in st.conditions] == [
        ("Queued", "False", "Completed", iso(90)), ("Running", "False", "Completed", iso(90)),
        ("Restarting", "False", "Completed", iso(90)), ("Succeeded", "True", "Completed", iso(90))]
    assert all(c.observed_generation == 1 for c in st.conditions)
    assert st.attempt == 1 and st.restarts.total == 1 and st.restarts.by_cause == {"WorkerFailed": 1}
    assert (st.progress.step, st.progress.total_steps, st.checkpoint.step) == (16, 16, 16)
    assert (st.start_time, st.completion_time) == (iso(5), iso(90))
    assert p.requeue_after is None  # done, no serve, no TTL


def test_exit_78_shows_the_runtimes_reason_and_detail() -> None:
    job = make_finetune_job("ft").build()
    st = S.plan(job, S.Observed.from_objects(training_job=child(FAILED)), at(30)).status
    for type_ in (C.FAILED, C.RUNNING, C.QUEUED):
        c = find(st, type_)
        assert c.reason == "DatasetFieldMissing" and c.message == "example 3 has no field 'text' (has ['content'])", c


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (FAILED_78, ("DatasetFieldMissing", "example 3 has no field 'text' (has ['content'])")),
        ("pod p exited 78 (configuration error): ModelDigestMismatch: config.json: sha256 differs",
         ("ModelDigestMismatch", "config.json: sha256 differs")),
        ("pod p exited 78 (configuration error): log line\nTraceback\nInvalidFinetuneSpec: hyperparameters: bad",
         ("InvalidFinetuneSpec", "hyperparameters: bad")),
        ("pod p exited 78 (configuration error)", None),  # no termination message
        ("pod p exited 78 (configuration error): llmops runtime: CONFIG_ERROR: bad env", None),  # not a reason
        ("pod p: ContainerCannotRun: exec: not found", None),
    ],
)
def test_runtime_failure(message: str, expected) -> None:  # noqa: ANN001
    assert S.runtime_failure(message) == expected


def test_config_error_without_a_runtime_reason_stays() -> None:
    msg = "pod p: ContainerCannotRun: exec: python: not found"
    observed = S.Observed.from_objects(training_job=child([cond("Failed", True, "ConfigError", msg)]))
    st = S.plan(make_finetune_job("ft").build(), observed, at(1)).status
    assert (find(st, C.FAILED).reason, find(st, C.FAILED).message) == ("ConfigError", msg)


def test_report_is_folded_and_kept() -> None:
    job = make_finetune_job("ft").build()
    job, p = reconcile(job, S.Observed.from_objects(training_job=succeeded_child(), lease=lease(report())), at(100))
    st = p.status
    assert st.dataset.examples == 64 and st.dataset.sha256 == "d" * 64
    assert (st.evaluation.base_validation_loss, st.evaluation.validation_loss, st.evaluation.best_step) == (3.2, 2.1, 16)
    assert st.output.wire() == OUTPUT
    # the Lease is gone (TTL) or carries no report: what was seen stays
    _, p2 = reconcile(job, S.Observed.from_objects(training_job=succeeded_child()), at(110))
    assert p2.status == st and p2.events == ()


@pytest.mark.parametrize(
    "bad_lease",
    [lease(report(), owner="someone-else"), lease(None, raw="{not json"),
     {"metadata": {"ownerReferences": [{"controller": True, "uid": TJ_UID}]}}, None],
    ids=["foreign-owner", "garbage", "no-annotation", "absent"],
)
def test_reports_that_do_not_count(bad_lease) -> None:  # noqa: ANN001
    observed = S.Observed.from_objects(training_job=succeeded_child(), lease=bad_lease)
    assert observed.report is None
    assert S.plan(make_finetune_job("ft").build(), observed, at(100)).status.output is None


def test_evaluation_before_output() -> None:
    rep = report(output=False)
    st = S.plan(make_finetune_job("ft").build(), S.Observed.from_objects(training_job=child(RUNNING), lease=lease(rep)), at(10)).status
    assert st.evaluation.validation_loss == 2.1 and st.output is None


def test_finished_job_never_gets_a_new_child() -> None:
    job = make_finetune_job("ft").build()
    job, _ = reconcile(job, S.Observed.from_objects(training_job=succeeded_child(), lease=lease(report())), at(100))
    p = S.plan(job, S.Observed(), at(200))  # the child was deleted (by hand, or TTL)
    assert p.desired == [] and p.status == job.status and p.requeue_after is None


def test_ttl_deletes_the_child_and_keeps_the_status() -> None:
    job = make_finetune_job("ft").spec(runPolicy={"ttlSecondsAfterFinished": 60}).build()
    obs = S.Observed.from_objects(training_job=succeeded_child(), lease=lease(report()))
    job, p = reconcile(job, obs, at(100))  # completed at 90: 50 s left
    assert [o["kind"] for o in p.desired] == ["TrainingJob"] and p.requeue_after == pytest.approx(50)
    job, p = reconcile(job, obs, at(150))
    assert p.desired == [] and C.is_true(p.status.conditions, C.SUCCEEDED)
    _, p = reconcile(job, S.Observed(), at(151))
    assert p.desired == [] and p.status.output is not None and C.is_true(p.status.conditions, C.SUCCEEDED)


def test_invalid_spec_failure_gives_way_to_a_fixed_spec() -> None:
    failed = {"conditions": [cond("Failed", True, C.INVALID_SPEC, "spec.x: bad")], "observedGeneration": 1}
    job = make_finetune_job("ft").status(failed).build()
    p = S.plan(job, S.Observed(), at(5))
    assert [o["kind"] for o in p.desired] == ["TrainingJob"]
    assert find(p.status, C.FAILED) is None and C.is_true(p.status.conditions, C.QUEUED)


def test_foreign_child_is_reported() -> None:
    p = S.plan(make_finetune_job("ft").build(), S.Observed(foreign_children=("TrainingJob/ft-train",)), at(0))
    q = find(p.status, C.QUEUED)
    assert q.reason == S.FOREIGN_CHILD and "TrainingJob/ft-train" in q.message
    assert [e.type for e in p.events] == ["Warning"]


# --- publish -------------------------------------------------------------------------------------


def served_job(create: bool = False):  # noqa: ANN201
    return make_finetune_job("ft").serve("svc", adapter="legal", create=create).build()


@pytest.mark.parametrize(
    ("tj", "rep", "svc", "create", "create_error", "status", "reason", "requeue", "creates"),
    [
        (child(RUNNING), None, None, False, None, "False", C.TRAINING, S.WATCH_SECONDS, False),
        (child(FAILED), None, None, True, None, "False", C.JOB_FAILED, None, False),
        (succeeded_child(), None, None, True, None, "False", C.WAITING_FOR_OUTPUT, S.WAIT_SECONDS, False),
        (succeeded_child(), report(), None, False, None, "False", C.WAITING_FOR_SERVICE, S.WAIT_SECONDS * 6, False),
        (succeeded_child(), report(), None, True, None, "False", C.WAITING_FOR_SERVICE, S.WAIT_SECONDS, True),
        (succeeded_child(), report(), None, True, "admission webhook said no", "False", C.SERVICE_CREATE_FAILED, S.WAIT_SECONDS * 6, True),
        (succeeded_child(), report(), service(), True, None, "False", C.ADAPTER_NOT_READY, S.WAIT_SECONDS, False),
        (succeeded_child(), report(), service([{"name": "legal", "ready": False, "message": "no ready replica"}]),
         False, None, "False", C.ADAPTER_NOT_READY, S.WAIT_SECONDS, False),
        (succeeded_child(), report(), service([{"name": "other", "ready": True}, {"name": "legal", "ready": True}]),
         False, None, "True", C.OUTPUT_PUBLISHED, S.WATCH_SECONDS, False),
    ],
    ids=["training", "failed", "no-output-yet", "no-service", "create", "create-refused", "not-listed", "not-ready", "ready"],
)
def test_published(tj, rep, svc, create, create_error, status, reason, requeue, creates) -> None:  # noqa: ANN001, PLR0913
    observed = S.Observed(training_job=tj, report=rep, inference_service=svc, service_create_error=create_error)
    p = S.plan(served_job(create), observed, at(100))
    c = find(p.status, C.PUBLISHED)
    assert (c.status.value, c.reason) == (status, reason), c
    assert p.requeue_after == requeue
    assert bool(p.creates) == creates
    if creates:
        assert p.creates[0]["metadata"]["name"] == "svc" and "ownerReferences" not in p.creates[0]["metadata"]
    if rep is not None and rep.output is not None and C.is_true(p.status.conditions, C.SUCCEEDED):
        assert p.status.served.wire() == {"inferenceServiceName": "svc", "adapterName": "legal"}
    else:
        assert p.status.served is None
    if reason == C.SERVICE_CREATE_FAILED:
        assert "admission webhook said no" in c.message and ("Warning", C.SERVICE_CREATE_FAILED) in {(e.type, e.reason) for e in p.events}
    if reason == C.ADAPTER_NOT_READY and svc["status"]["adapters"]:
        assert "no ready replica" in c.message


def test_without_serve_there_is_no_published_condition() -> None:
    st = S.plan(make_finetune_job("ft").build(), S.Observed(training_job=succeeded_child(), report=report()), at(100)).status
    assert find(st, C.PUBLISHED) is None and st.served is None


def test_published_keeps_its_transition_time_and_events_once() -> None:
    job = served_job()
    job, p = reconcile(job, S.Observed(training_job=child(RUNNING)), at(10))
    assert find(p.status, C.PUBLISHED).last_transition_time == iso(10)
    job, p = reconcile(job, S.Observed(training_job=succeeded_child(), report=report(), inference_service=service()), at(100))
    assert find(p.status, C.PUBLISHED).last_transition_time == iso(10)  # still False: no flip
    assert [(e.type, e.reason) for e in p.events] == [("Normal", "Completed")]
    ready = service([{"name": "legal", "ready": True}])
    job, p = reconcile(job, S.Observed(training_job=succeeded_child(), report=report(), inference_service=ready), at(110))
    assert find(p.status, C.PUBLISHED).last_transition_time == iso(110)
    assert [(e.type, e.reason) for e in p.events] == [("Normal", C.OUTPUT_PUBLISHED)]
    _, again = reconcile(job, S.Observed(training_job=succeeded_child(), report=report(), inference_service=ready), at(120))
    assert again.status == job.status and again.events == ()  # no churn


def test_events_once_per_transition() -> None:
    job = make_finetune_job("ft").build()
    job, p = reconcile(job, S.Observed(training_job=child(RUNNING)), at(10))
    assert [e.reason for e in p.events] == ["AllPodsRunning"]
    job, p = reconcile(job, S.Observed(training_job=child(RUNNING)), at(20))
    assert p.events == ()
    job, p = reconcile(job, S.Observed(training_job=child(FAILED)), at(30))
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "DatasetFieldMissing")]


# --- the publish contract --------------------------------------------------------------------------


def ftj_body(name: str, service_name: str | None = "svc", *, adapter: str | None = None, succeeded: bool = True,
             uri: str | None = "pvc://out/x", completed: float = 0, mode: str | None = None, deleting: bool = False) -> dict:
    spec: dict[str, Any] = {"output": {"uri": "pvc://out/x", **({"mode": mode} if mode else {})}}
    if service_name:
        spec["serve"] = {"inferenceServiceName": service_name, **({"adapterName": adapter} if adapter else {})}
    status: dict[str, Any] = {"conditions": [cond("Succeeded", succeeded, "Completed")], "completionTime": iso(completed)}
    if uri:
        status["output"] = {"uri": uri, "manifestSha256": "e" * 64}
    meta: dict[str, Any] = {"name": name, "namespace": "ml"}
    if deleting:
        meta["deletionTimestamp"] = iso(1)
    return {"metadata": meta, "spec": spec, "status": status}


def test_published_adapters() -> None:
    bodies = [
        ftj_body("a", uri="pvc://out/a"),  # adapter named after the job
        ftj_body("b", adapter="legal", uri="pvc://out/b-old", completed=10),
        ftj_body("c", adapter="legal", uri="pvc://out/c-new", completed=20),  # newer completion wins the name
        ftj_body("d", "other-svc", uri="pvc://out/d"),  # another service
        ftj_body("e", succeeded=False, uri="pvc://out/e"),  # not succeeded
        ftj_body("f", uri=None),  # no output yet
        ftj_body("g", mode="merged", uri="pvc://out/g"),  # not an adapter
        ftj_body("h", uri="pvc://out/h", deleting=True),  # being deleted: unpublished
        ftj_body("i", None, uri="pvc://out/i"),  # no serve
        {"metadata": {"name": "broken"}},  # garbage must not break the caller
    ]
    assert S.published_adapters(bodies, "svc") == {"a": "pvc://out/a", "legal": "pvc://out/c-new"}
    details = S.published_adapter_details(bodies, "svc")
    assert details["legal"] == S.PublishedAdapter(name="legal", uri="pvc://out/c-new", manifest_sha256="e" * 64, finetune_job="c")
    assert S.published_adapters(list(reversed(bodies)), "svc") == S.published_adapters(bodies, "svc")  # order-independent
    assert S.published_adapters([], "svc") == {}


def test_published_adapters_reads_what_the_plan_writes() -> None:
    """The FinetuneJob status the plan writes is exactly what the contract reads."""
    job = served_job()
    st = S.plan(job, S.Observed(training_job=succeeded_child(), report=report(), inference_service=service()), at(100)).status
    body = {"metadata": {"name": "ft", "namespace": "ml"}, "spec": job.spec.wire(), "status": st.wire()}
    assert S.published_adapters([body], "svc") == {"legal": OUTPUT["uri"]}


def test_a_refused_training_job_is_this_jobs_reason_queued_or_failed() -> None:
    from llmops.failures import CHILD_REJECTED, QUOTA_EXCEEDED, classify_refusal

    job = make_finetune_job("ft").build()
    quota = classify_refusal(403, 'trainingjobs.llmops.dev "ft-train" is forbidden: exceeded quota: q', "TrainingJob", "ft-train")
    job1, p = reconcile(job, S.Observed(refusal=quota), at(0))
    q = find(p.status, C.QUEUED)
    assert (q.status.value, q.reason) == ("True", QUOTA_EXCEEDED) and "exceeded quota: q" in q.message
    assert find(p.status, C.FAILED) is None and [o["metadata"]["name"] for o in p.desired] == ["ft-train"]  # retried
    assert [(e.type, e.reason) for e in p.events] == [("Warning", QUOTA_EXCEEDED)]
    _, again = reconcile(job1, S.Observed(refusal=quota), at(5))
    assert again.status == p.status and again.events == ()  # one Event per transition, not per retry
    invalid = classify_refusal(422, 'TrainingJob.llmops.dev "ft-train" is invalid: spec.nodes: Invalid value', "TrainingJob", "ft-train")
    _, p = reconcile(job, S.Observed(refusal=invalid), at(0))
    f = find(p.status, C.FAILED)
    assert (f.status.value, f.reason) == ("True", CHILD_REJECTED) and find(p.status, C.QUEUED).status.value == "False"


def test_the_child_training_jobs_refusal_reaches_the_finetune_job_through_the_mirror() -> None:
    msg = "scheduling.gang.backend volcano needs scheduling.volcano.sh/v1beta1 podgroups, which this cluster does not serve"
    tj = child([cond("Queued", True, "GangBackendUnavailable", msg, 1), cond("Running", False, "GangBackendUnavailable", msg, 1)])
    job = make_finetune_job("ft").build()
    _, p = reconcile(job, S.Observed.from_objects(training_job=tj), at(2))
    q = find(p.status, C.QUEUED)
    assert (q.status.value, q.reason, q.message) == ("True", "GangBackendUnavailable", msg)
    assert [(e.type, e.reason) for e in p.events] == [("Warning", "GangBackendUnavailable")]
