"""TrainingJob status and plan: placement (Running only when every pod runs), gang restarts
with backoff and WaitingForTerminatingPods, restart counting by cause, maxRestarts,
preemption not counted, suspend/resume, success + TTL, unschedulable numbers, scheduling
timeout, deadline, progress/ETA/checkpoint folding, Stalled/CheckpointFailing, adoption of
an unrecorded attempt, foreign children, events once per transition, and no churn.

Reliability-anchors section 4 scenarios covered here (the classifier's own table is in
tests/failures): 2 (terminal/deadline -> no pods, CR kept), 11 (unschedulable numbers,
partial placement timeout -> released, backoff, Failed), 12 (kill -> one gang restart from
the checkpoint), 13 (WaitingForTerminatingPods), 14 (not counted), 15 (Hang twice), 17/18
(resumedFromStep, CheckpointFailing), 10 (Pod Security denial -> Failed, permanent), 21 (foreign child), 23 (adopt/complete a partial
attempt), 25 (the same facts twice -> one restart). Issue 21: API refusals of children (a retried
one queues the job with its reason and one Event; a 422 fails it) and a requested gang backend
that is not served (Queued GangBackendUnavailable before any pod; auto picks a served one)."""

from __future__ import annotations

import datetime as dt

import pytest
from cr_factories import disrupted, exited, gated, make_training_job, pod, running, terminating
from llmops.api import conditions as C
from llmops.api import runtime_env as E
from llmops.api.progress import CommittedCheckpoint, ProgressReport
from llmops.api.training import LastFailure
from llmops.failures import (
    CHILD_REJECTED,
    GANG_BACKEND_UNAVAILABLE,
    HANG,
    POD_SECURITY_VIOLATION,
    SERVICE_ACCOUNT_MISSING,
    WAITING_FOR_TERMINATING_PODS,
    classify_refusal,
)
from llmops.observe.pods import NodeFacts
from llmops.plan import Observed, compute_status, plan
from llmops.plan.training import GANG_RECHECK_SECONDS, MAX_SCHEDULING_TIMEOUTS, UNSCHEDULABLE

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def iso(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


def reconcile(job, observed, now):
    """One reconcile: the plan, and the job as it reads after the status write."""
    p = plan(job, observed, now)
    return job.model_copy(update={"status": p.status}), p


def cond(status, type_):
    return C.find_condition(status.conditions, type_)


def pods_in(p):
    return [o for o in p.desired if o["kind"] == "Pod"]


def all_running(n=2, attempt=0):
    return tuple(running(pod("t", r, attempt, created=iso(0))) for r in range(n))


def job2(**fp):
    b = make_training_job("t").nodes(2).checkpoint(uri="s3://ck/t", every_steps=10)
    if fp:
        b = b.failure_policy(**fp)
    return b.build()


def report(step, attempt=0, ck_step=None, beat=60, **kw):
    ck = (CommittedCheckpoint(id=f"step-{ck_step:08d}", step=ck_step, uri=f"s3://ck/t/step-{ck_step:08d}", time=iso(beat))
          if ck_step is not None else None)
    return ProgressReport(attempt=attempt, step=step, heartbeat=iso(beat), checkpoint=ck, **kw)


def test_new_job_is_queued_and_creates_its_pods():
    _, p = reconcile(job2(), Observed(), at(0))
    assert cond(p.status, C.QUEUED).status == "True" and cond(p.status, C.QUEUED).reason == C.GANG_PENDING
    assert cond(p.status, C.RUNNING).status == "False"
    assert [o["metadata"]["name"] for o in pods_in(p)] == ["t-w0-a0", "t-w1-a0"]
    assert p.status.observed_generation == 1 and p.status.attempt == 0
    assert all(c.observed_generation == 1 for c in p.status.conditions)


def test_running_is_false_while_any_pod_is_pending():
    obs = Observed(pods=(running(pod("t", 0, created=iso(0))), pod("t", 1, created=iso(0))))
    _, p = reconcile(job2(), obs, at(10))
    assert cond(p.status, C.RUNNING).status == "False"
    assert cond(p.status, C.QUEUED).status == "True"
    assert "1/2 worker pods running" in cond(p.status, C.RUNNING).message


def test_all_running_then_unchanged_world_patches_nothing():
    job, _p1 = reconcile(job2(), Observed(), at(0))
    obs = Observed(pods=all_running())
    job, p2 = reconcile(job, obs, at(30))
    assert cond(p2.status, C.RUNNING).status == "True" and cond(p2.status, C.RUNNING).reason == C.ALL_PODS_RUNNING
    assert cond(p2.status, C.QUEUED).status == "False"
    assert p2.status.start_time == iso(30)
    assert [e.reason for e in p2.events] == [C.ALL_PODS_RUNNING]
    job, p3 = reconcile(job, obs, at(90))
    assert p3.status == p2.status and p3.events == ()
    assert cond(p3.status, C.RUNNING).last_transition_time == iso(30)


def test_workers_done_before_rank_0_keep_the_job_running_never_queued():
    """The last steps of a run: w1 exited 0, rank 0 still writes the final checkpoint. The job
    stays Running (reason WorkersFinishing) until rank 0's exit makes it Succeeded."""
    job, _ = reconcile(job2(), Observed(), at(0))
    job, _ = reconcile(job, Observed(pods=all_running()), at(30))
    w0, w1 = all_running()
    job, p = reconcile(job, Observed(pods=(w0, exited(w1, 0))), at(60))
    assert cond(p.status, C.QUEUED).status == "False" and cond(p.status, C.RUNNING).status == "True"
    assert cond(p.status, C.RUNNING).reason == C.WORKERS_FINISHING
    assert "1 of 2 worker pods finished" in cond(p.status, C.RUNNING).message
    assert cond(p.status, C.QUEUED).last_transition_time == iso(30)  # no flip through Queued
    job, p = reconcile(job, Observed(pods=(exited(w0, 0), exited(w1, 0))), at(70))
    assert cond(p.status, C.SUCCEEDED).status == "True"
    assert cond(p.status, C.QUEUED).status == "False"


def test_a_pod_force_deleted_from_a_running_gang_restarts_it_never_queued():
    """kubectl delete pod --force: the pod is gone without a trace. The gang restarts (not
    counted) instead of the job showing Queued while the one pod is recreated (issue 19's
    watch over the e2e scenario saw Running -> Queued -> Running -> Restarting)."""
    job, _ = reconcile(job2(), Observed(), at(0))
    job, _ = reconcile(job, Observed(pods=all_running()), at(30))
    _, w1 = all_running()
    job, p = reconcile(job, Observed(pods=(w1,)), at(60))
    assert cond(p.status, C.RESTARTING).status == "True" and cond(p.status, C.RESTARTING).reason == C.TERMINATED
    assert "rank 0 was deleted" in cond(p.status, C.RESTARTING).message
    assert cond(p.status, C.QUEUED).status == "False" and p.status.attempt == 1
    assert p.status.restarts.total == 1 and p.status.restarts.counted == 0
    assert p.status.state == C.RESTARTING


def run_until_running(job, n=2):
    job, _ = reconcile(job, Observed(), at(0))
    job, _ = reconcile(job, Observed(pods=all_running(n)), at(30))
    return job


def test_worker_killed_restarts_the_gang_from_the_last_checkpoint():
    """Acceptance: one gang restart, resume from the last committed step, restarts=1 by cause."""
    job = run_until_running(job2())
    dead = (running(pod("t", 0, created=iso(0))), exited(running(pod("t", 1, created=iso(0))), 137))
    rep = report(step=57, ck_step=50, beat=100)
    job, p = reconcile(job, Observed(pods=dead, progress=rep), at(101))
    assert cond(p.status, C.RESTARTING).status == "True" and cond(p.status, C.RESTARTING).reason == "WorkerFailed"
    assert p.status.attempt == 1 and p.status.restarts.model_dump() == {"total": 1, "counted": 1, "by_cause": {"WorkerFailed": 1}}
    assert pods_in(p) == []  # the whole attempt goes (prune deletes it)
    assert [e.reason for e in p.events] == ["WorkerFailed"]
    assert p.status.checkpoint.step == 50

    # old rank-0 pod still terminating: no new pod for any rank
    old = (terminating(pod("t", 0, created=iso(0)), until=iso(200)), dead[1])
    job, p = reconcile(job, Observed(pods=old, progress=rep), at(105))
    assert pods_in(p) == [] and cond(p.status, C.RESTARTING).reason == WAITING_FOR_TERMINATING_PODS
    assert p.events == ()

    # all old pods terminal but inside the 10 s backoff: still nothing
    job, p = reconcile(job, Observed(pods=(), progress=rep), at(106))
    assert pods_in(p) == [] and 0 < p.requeue_after <= 10

    # after the backoff: attempt 1 resumes from step 50
    job, p = reconcile(job, Observed(pods=(), progress=rep), at(112))
    names = [o["metadata"]["name"] for o in pods_in(p)]
    assert names == ["t-w0-a1", "t-w1-a1"]
    env = {e["name"]: e.get("value") for e in pods_in(p)[0]["spec"]["containers"][0]["env"]}
    assert env[E.RESUME_FROM] == "step-00000050" and env[E.ATTEMPT] == "1"
    assert p.status.resumed_from_step == 50

    job, p = reconcile(job, Observed(pods=all_running(attempt=1), progress=report(60, attempt=1, ck_step=50, beat=130)), at(131))
    assert cond(p.status, C.RUNNING).status == "True" and cond(p.status, C.RESTARTING).status == "False"

    done = (exited(running(pod("t", 0, 1)), 0), exited(running(pod("t", 1, 1)), 0))
    job, p = reconcile(job, Observed(pods=done, progress=report(100, attempt=1, ck_step=100, beat=200)), at(201))
    assert cond(p.status, C.SUCCEEDED).status == "True" and p.status.completion_time == iso(201)
    assert p.status.restarts.by_cause == {"WorkerFailed": 1} and p.status.restarts.total == 1
    assert pods_in(p) == []


def test_restart_decision_is_not_repeated_on_the_next_reconcile():
    job = run_until_running(job2())
    dead = (running(pod("t", 0, created=iso(0))), exited(running(pod("t", 1, created=iso(0))), 1))
    job, _p1 = reconcile(job, Observed(pods=dead), at(100))
    job, p2 = reconcile(job, Observed(pods=dead), at(101))  # the dead attempt's pods are now "old"
    assert p2.status.restarts.total == 1 and p2.status.attempt == 1


def test_max_restarts_exceeded_fails():
    job = run_until_running(job2(maxRestarts=0))
    dead = (running(pod("t", 0, created=iso(0))), exited(running(pod("t", 1, created=iso(0))), 1))
    job, p = reconcile(job, Observed(pods=dead), at(100))
    assert cond(p.status, C.FAILED).status == "True" and cond(p.status, C.FAILED).reason == C.MAX_RESTARTS_EXCEEDED
    assert "UserError" in cond(p.status, C.FAILED).message and pods_in(p) == []
    assert cond(p.status, C.RUNNING).status == "False"


@pytest.mark.parametrize(
    ("reason", "cause"),
    [("PreemptionByScheduler", C.PREEMPTED), ("EvictionByEvictionAPI", C.EVICTED)],
)
def test_preemption_and_eviction_are_not_counted(reason, cause):
    job = run_until_running(job2(maxRestarts=0))
    pods = (disrupted(running(pod("t", 0, created=iso(0))), reason), running(pod("t", 1, created=iso(0))))
    job, p = reconcile(job, Observed(pods=pods), at(100))
    assert cond(p.status, C.FAILED) is None
    assert p.status.restarts.counted == 0 and p.status.restarts.by_cause == {cause: 1}
    assert "not counted" in cond(p.status, C.RESTARTING).message


def test_node_lost_with_pod_stuck_terminating_waits_and_says_why():
    job = run_until_running(job2())
    nodes = {"node-0": NodeFacts(False, iso(0)), "node-1": NodeFacts(True)}
    job, p = reconcile(job, Observed(pods=all_running(), nodes=nodes), at(100))
    assert cond(p.status, C.RESTARTING).reason == C.NODE_LOST and p.status.restarts.counted == 0
    stuck = (terminating(running(pod("t", 0, created=iso(0))), until=iso(130)),)
    job, p = reconcile(job, Observed(pods=stuck, nodes=nodes), at(500))
    msg = cond(p.status, C.RESTARTING).message
    assert cond(p.status, C.RESTARTING).reason == WAITING_FOR_TERMINATING_PODS
    assert "t-w0-a0" in msg and "out-of-service" in msg and "NotReady node node-0" in msg
    assert pods_in(p) == []


def test_hang_restarts_and_repeat_at_same_step_fails():
    job = run_until_running(make_training_job("t").nodes(2).failure_policy(hangTimeoutSeconds=120).build())
    rep = report(step=40, beat=40)
    job, p = reconcile(job, Observed(pods=all_running(), progress=rep), at(200))
    assert cond(p.status, C.RESTARTING).reason == HANG and p.last_failure == LastFailure(reason=HANG, attempt=0, step=40, generation=1)
    # attempt 1 starts, then hangs at the same step again
    rep1 = report(step=40, attempt=1, beat=300)
    job, p = reconcile(job, Observed(pods=all_running(attempt=1), progress=rep1, last_failure=p.last_failure), at(310))
    assert cond(p.status, C.RUNNING).status == "True" and cond(p.status, C.FAILED) is None
    job, p = reconcile(job, Observed(pods=all_running(attempt=1), progress=rep1, last_failure=p.last_failure), at(500))
    assert cond(p.status, C.FAILED).status == "True" and cond(p.status, C.FAILED).reason == HANG


def test_suspend_deletes_pods_keeps_checkpoint_and_resume_starts_a_new_attempt():
    job = run_until_running(job2())
    rep = report(step=30, ck_step=20, beat=50)
    run_policy = job.spec.run_policy.model_copy(update={"suspend": True})
    suspended = job.model_copy(update={"spec": job.spec.model_copy(update={"run_policy": run_policy})})
    job, p = reconcile(suspended, Observed(pods=all_running(), progress=rep), at(60))
    assert cond(p.status, C.SUSPENDED).status == "True" and cond(p.status, C.RUNNING).status == "False"
    assert pods_in(p) == [] and p.status.attempt == 1 and p.status.checkpoint.step == 20
    assert p.status.restarts.total == 0
    job, p2 = reconcile(job, Observed(pods=(), progress=rep), at(70))
    assert p2.status == p.status and p2.events == ()
    resumed = job.model_copy(update={"spec": job2().spec})
    job, p = reconcile(resumed, Observed(pods=(), progress=rep), at(80))
    assert cond(p.status, C.SUSPENDED).status == "False" and cond(p.status, C.SUSPENDED).reason == C.RESUMED
    assert [o["metadata"]["name"] for o in pods_in(p)] == ["t-w0-a1", "t-w1-a1"]
    assert p.status.resumed_from_step == 20
    # The next reconcile keeps the reason (it once flipped to NotSuspended: status churn).
    job, p3 = reconcile(job, Observed(pods=(), progress=rep), at(81))
    assert cond(p3.status, C.SUSPENDED).reason == C.RESUMED
    assert cond(p3.status, C.SUSPENDED).last_transition_time == cond(p.status, C.SUSPENDED).last_transition_time


def test_ttl_after_finished_deletes_children_only_later():
    b = make_training_job("t").nodes(1).run_policy(ttlSecondsAfterFinished=100)
    job = b.build()
    job, _ = reconcile(job, Observed(), at(0))
    job, p = reconcile(job, Observed(pods=(exited(running(pod("t", 0)), 0),)), at(10))
    assert cond(p.status, C.SUCCEEDED).status == "True" and p.desired and pods_in(p) == []
    job, p = reconcile(job, Observed(), at(50))
    assert p.desired and p.requeue_after == pytest.approx(60)
    job, p = reconcile(job, Observed(), at(110))
    assert p.desired == [] and cond(p.status, C.SUCCEEDED).status == "True"


def test_request_larger_than_any_node_is_unschedulable_at_once():
    job = make_training_job("t").nodes(4).gpus(16).build()
    nodes = {f"n{i}": {"nvidia.com/gpu": "8", "cpu": "96"} for i in range(3)}
    _, p = reconcile(job, Observed(node_allocatable=nodes), at(0))
    q = cond(p.status, C.QUEUED)
    assert (q.status, q.reason) == ("True", UNSCHEDULABLE)
    assert q.message == "each worker needs nvidia.com/gpu=16 but the largest node has 8"
    assert pods_in(p) == [] and p.requeue_after > 0
    assert [e.type for e in p.events] == ["Warning"]


def test_scheduling_timeout_releases_pods_backs_off_and_finally_fails():
    job = make_training_job("t").nodes(2).backend("none", timeout=60).build()
    job, _ = reconcile(job, Observed(), at(0))
    t = 0
    for i in range(1, MAX_SCHEDULING_TIMEOUTS + 1):
        half = (running(pod("t", 0, job.status.attempt, created=iso(t))), pod("t", 1, job.status.attempt, created=iso(t)))
        t += 61
        job, p = reconcile(job, Observed(pods=half), at(t))
        assert pods_in(p) == []
        if i < MAX_SCHEDULING_TIMEOUTS:
            assert cond(p.status, C.QUEUED).reason == C.SCHEDULING_TIMEOUT
            assert p.status.restarts.by_cause[C.SCHEDULING_TIMEOUT] == i and p.status.restarts.counted == 0
            # backoff before the next attempt's pods
            job, p = reconcile(job, Observed(), at(t + 1))
            assert pods_in(p) == []
            t += 10 * 2 ** (i - 1) + 1
            job, p = reconcile(job, Observed(), at(t))
            assert len(pods_in(p)) == 2, i
    assert cond(p.status, C.FAILED).reason == C.SCHEDULING_TIMEOUT


def test_waiting_for_quota_does_not_time_out():
    job = make_training_job("t").nodes(2).backend("kueue", timeout=60, queue="q").build()
    job, _ = reconcile(job, Observed(), at(0))
    held = tuple(gated(pod("t", r, created=iso(0))) for r in range(2))
    job, p = reconcile(job, Observed(pods=held), at(3600))
    assert cond(p.status, C.QUEUED).reason == C.WAITING_FOR_QUOTA and len(pods_in(p)) == 2


def test_active_deadline_fails_the_job():
    job = run_until_running(make_training_job("t").nodes(2).run_policy(activeDeadlineSeconds=100).build())
    _, p = reconcile(job, Observed(pods=all_running()), at(131))
    assert cond(p.status, C.FAILED).reason == C.DEADLINE_EXCEEDED and pods_in(p) == []


def test_active_deadline_wakes_the_reconcile_at_the_deadline():
    """Regression: a running job used to poll every 60 s, missing a shorter deadline."""
    job, _ = reconcile(make_training_job("t").nodes(2).run_policy(activeDeadlineSeconds=5).build(), Observed(), at(0))
    job, p = reconcile(job, Observed(pods=all_running()), at(30))  # starts running now
    assert p.status.start_time == iso(30) and p.requeue_after == pytest.approx(5)
    job, p = reconcile(job, Observed(pods=all_running()), at(33))
    assert p.requeue_after == pytest.approx(2)


def test_progress_eta_checkpoint_and_health_conditions():
    job = run_until_running(make_training_job("t").nodes(2).spec(totalSteps=200).build())
    rep = report(step=100, ck_step=90, beat=1000, loss=1.25, tokens_per_second=5000.0, first_step_time=iso(0))
    _, p = reconcile(job, Observed(pods=all_running(), progress=rep), at(1001))
    pr = p.status.progress
    assert (pr.step, pr.total_steps, pr.loss, pr.tokens_per_second, pr.last_heartbeat) == (100, 200, 1.25, 5000.0, iso(1000))
    assert pr.eta == iso(2000)  # 100 steps in 1000 s, 100 to go
    assert (p.status.checkpoint.id, p.status.checkpoint.step) == ("step-00000090", 90)
    assert cond(p.status, C.STALLED) is None and cond(p.status, C.CHECKPOINT_FAILING) is None

    failing = rep.model_copy(update={"checkpoint_failing_since": iso(900), "checkpoint_error": "S3 503 SlowDown"})
    job2_, p = reconcile(job, Observed(pods=all_running(), progress=failing), at(1700))
    assert cond(p.status, C.CHECKPOINT_FAILING).status == "True" and "SlowDown" in cond(p.status, C.CHECKPOINT_FAILING).message
    assert cond(p.status, C.STALLED).status == "True"  # 700 s without heartbeat > 600 s default
    _, p = reconcile(job2_, Observed(pods=all_running(), progress=report(150, ck_step=150, beat=1800)), at(1801))
    assert cond(p.status, C.CHECKPOINT_FAILING).status == "False" and cond(p.status, C.STALLED).status == "False"


def test_pods_of_an_unrecorded_attempt_are_adopted_not_recreated():
    """Operator died after creating attempt 1's pods but before writing status."""
    job = run_until_running(job2())
    _, p = reconcile(job, Observed(pods=all_running(attempt=1)), at(100))
    assert p.status.attempt == 1 and p.status.restarts.total == 0
    assert [o["metadata"]["name"] for o in pods_in(p)] == ["t-w0-a1", "t-w1-a1"]


def test_partially_created_attempt_is_completed():
    job, _ = reconcile(job2(), Observed(), at(0))
    _, p = reconcile(job, Observed(pods=(running(pod("t", 0, created=iso(0))),)), at(5))
    assert [o["metadata"]["name"] for o in pods_in(p)] == ["t-w0-a0", "t-w1-a0"]


def test_foreign_child_is_reported():
    _, p = reconcile(job2(), Observed(foreign_children=("Service/t-workers",)), at(0))
    assert "Service/t-workers" in cond(p.status, C.QUEUED).message


def test_pod_security_denial_fails_permanently_with_the_api_message():
    msg = 'pods "t-w0-a0" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities'
    refusal = classify_refusal(403, msg, "Pod", "t-w0-a0")
    job, p = reconcile(job2(), Observed(refusal=refusal), at(0))
    failed = cond(p.status, C.FAILED)
    assert failed.status == "True" and failed.reason == POD_SECURITY_VIOLATION
    assert msg in failed.message and "permanent" in failed.message
    assert pods_in(p) == [] and p.status.restarts.total == 0
    assert [e.reason for e in p.events] == [POD_SECURITY_VIOLATION]
    _, again = reconcile(job, Observed(), at(30))  # the next reconcile re-POSTs nothing
    assert pods_in(again) == [] and again.events == () and cond(again.status, C.FAILED).reason == POD_SECURITY_VIOLATION


SA_MSG = 'pods "t-w0-a0" is forbidden: error looking up service account ns/trainer: serviceaccount "trainer" not found'


def test_a_retried_refusal_queues_the_job_and_keeps_asking_for_its_pods():
    refusal = classify_refusal(403, SA_MSG, "Pod", "t-w0-a0")
    job, p = reconcile(job2(), Observed(refusal=refusal), at(0))
    queued, running_ = cond(p.status, C.QUEUED), cond(p.status, C.RUNNING)
    assert (queued.status, queued.reason) == ("True", SERVICE_ACCOUNT_MISSING)
    assert SA_MSG in queued.message and running_.status == "False" and running_.reason == SERVICE_ACCOUNT_MISSING
    assert cond(p.status, C.FAILED) is None and p.status.restarts.total == 0
    assert len(pods_in(p)) == 2  # the next apply is the retry
    assert [(e.type, e.reason) for e in p.events] == [("Warning", SERVICE_ACCOUNT_MISSING)]
    # Refused again: the same status, no new Event (one per transition, not per retry).
    job2_, again = reconcile(job, Observed(refusal=refusal), at(5))
    assert again.status == p.status and again.events == ()
    # The ServiceAccount appeared: the pods are created, the job is back to GangPending.
    _, ok = reconcile(job2_, Observed(pods=(pod("t", 0, created=iso(9)), pod("t", 1, created=iso(9)))), at(10))
    assert cond(ok.status, C.QUEUED).reason == C.GANG_PENDING


def test_a_child_rejected_by_validation_fails_the_job():
    refusal = classify_refusal(422, 'Pod "t-w0-a0" is invalid: spec.containers[0].image: Required value', "Pod", "t-w0-a0")
    _, p = reconcile(job2(), Observed(refusal=refusal), at(0))
    failed = cond(p.status, C.FAILED)
    assert (failed.status, failed.reason) == ("True", CHILD_REJECTED) and "Required value" in failed.message
    assert pods_in(p) == []


@pytest.mark.parametrize("backend", ["volcano", "kueue", "coscheduling", "native"])
def test_a_requested_gang_backend_that_is_not_served_queues_before_any_pod(backend):
    job = make_training_job("t").nodes(2).backend(backend).build()
    _, p = reconcile(job, Observed(served=frozenset()), at(0))
    queued = cond(p.status, C.QUEUED)
    assert (queued.status, queued.reason) == ("True", GANG_BACKEND_UNAVAILABLE)
    assert f"scheduling.gang.backend {backend} needs" in queued.message and "does not serve" in queued.message
    assert pods_in(p) == [] and [o for o in p.desired if o["kind"] == "PodGroup"] == []
    assert [(e.type, e.reason) for e in p.events] == [("Warning", GANG_BACKEND_UNAVAILABLE)]
    assert p.requeue_after == GANG_RECHECK_SECONDS


def test_auto_picks_a_served_backend_and_an_unknown_discovery_checks_nothing():
    auto = make_training_job("t").nodes(2).build()
    _, p = reconcile(auto, Observed(served=frozenset({"scheduling.k8s.io/v1alpha2/podgroups"})), at(0))
    assert p.status.gang.backend.value == "native" and cond(p.status, C.QUEUED).reason == C.GANG_PENDING
    _, p = reconcile(auto, Observed(served=frozenset()), at(0))
    assert p.status.gang.backend.value == "none" and len(pods_in(p)) == 2
    volcano = make_training_job("t").nodes(2).backend("volcano").build()
    _, p = reconcile(volcano, Observed(served=None), at(0))  # discovery not run: no claim either way
    assert cond(p.status, C.QUEUED).reason == C.GANG_PENDING and len(pods_in(p)) == 2


def test_compute_status_is_the_plans_status():
    job = job2()
    assert compute_status(job, Observed(), at(0)) == plan(job, Observed(), at(0)).status


def test_observed_from_raw_objects():
    rep = report(step=12, ck_step=10, beat=100)
    lease = {"metadata": {"annotations": {"llmops.dev/progress": rep.model_dump_json(by_alias=True)}}, "spec": {"renewTime": iso(101)}}
    nodes = [
        {"metadata": {"name": "n0"}, "status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": iso(0)}],
                                                 "allocatable": {"nvidia.com/gpu": "8", "cpu": "96"}}},
        {"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown", "lastTransitionTime": iso(50)}]}},
    ]
    pod_obj = {"metadata": {"name": "t-w0-a0", "labels": {"llmops.dev/node-rank": "0", "llmops.dev/attempt": "0"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}}
    obs = Observed.from_objects(pods=[pod_obj], nodes=nodes, lease=lease, served=["a/v1/x"], foreign_children=["Service/x"])
    assert obs.progress == rep and obs.lease_renew_time == iso(101)
    assert obs.nodes == {"n0": NodeFacts(True, iso(0)), "n1": NodeFacts(False, iso(50))}
    assert obs.node_allocatable["n0"] == {"nvidia.com/gpu": "8", "cpu": "96"}
    assert obs.pods[0].node_name == "n1" and obs.served == frozenset({"a/v1/x"})
    bad = {"metadata": {"annotations": {"llmops.dev/progress": "{not json"}}}
    assert Observed.from_objects(lease=bad).progress is None
    assert Observed.from_objects().nodes is None


def test_written_status_passes_the_crd_schema():
    """Every status the plan writes in a restart + progress scenario is valid under the generated CRD."""
    from llmops.validate import check

    b = make_training_job("t").nodes(2).checkpoint(uri="s3://ck/t", every_steps=10).spec(totalSteps=100)
    job = b.build()
    dead = (running(pod("t", 0, created=iso(0))), exited(running(pod("t", 1, created=iso(0))), 137, "OOMKilled"))
    steps = [
        (Observed(), 0),
        (Observed(pods=all_running()), 30),
        (Observed(pods=dead, progress=report(20, ck_step=10, beat=90, loss=0.5, first_step_time=iso(31))), 100),
        (Observed(nodes={"node-0": NodeFacts(False, iso(0))}, pods=(terminating(running(pod("t", 0, created=iso(0))), iso(150)),)), 200),
    ]
    for obs, t in steps:
        job, p = reconcile(job, obs, at(t))
        body = {**b.body, "status": p.status.wire()}
        assert check(body) == [], (t, p.status.wire())
