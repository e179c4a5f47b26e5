"""The failure classifier, table-driven over the job-related fault scenarios of
reliability-anchors section 4 (9 credentials, 12 kill/OOM, 13 node lost, 14 preemption and
eviction, 15 hang, 16 non-finite loss) plus image/config errors, success and root-cause
precedence; and PodFacts parsing from a pod object."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from cr_factories import disrupted, evicted, exited, pod, running, terminating, waiting
from llmops.api import conditions as C
from llmops.api.training import LastFailure
from llmops.failures import (
    CREDENTIALS_UNAVAILABLE,
    HANG,
    WORKER_FAILED,
    Action,
    ClassifyInput,
    classify,
)
from llmops.observe.pods import ContainerFacts, NodeFacts, PodFacts

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(minutes=10)


def gang(n=4, attempt=0):
    return [running(pod("t", r, attempt)) for r in range(n)]


def with_(pods, rank, fn):
    pods = list(pods)
    pods[rank] = fn(pods[rank])
    return tuple(pods)


def nodes_ready(n=4, **overrides):
    out = {f"node-{r}": NodeFacts(True) for r in range(n)}
    out.update(overrides)
    return out


NAN_MSG = "llmops runtime: NON_FINITE_LOSS: non-finite loss at step 120 on 2 rank(s); nothing saved"

CASES = [
    # (id, pods, extra ClassifyInput kwargs, action, reason, message fragment)
    ("all-running", tuple(gang()), {}, Action.NONE, None, ""),
    ("rank0-succeeded", with_(gang(), 0, lambda p: exited(p, 0)), {}, Action.SUCCEED, C.COMPLETED, "rank 0"),
    ("s12-sigkill", with_(gang(), 2, lambda p: exited(p, 137)), {}, Action.RESTART_GANG, WORKER_FAILED, "SIGKILL (exit 137)"),
    ("s12-oom", with_(gang(), 1, lambda p: exited(p, 137, "OOMKilled")), {}, Action.RESTART_GANG, C.OOM_KILLED, "OOMKilled"),
    ("s12-oom-again-same-spec", with_(gang(), 1, lambda p: exited(p, 137, "OOMKilled")),
        {"last_failure": LastFailure(reason=C.OOM_KILLED, attempt=0, generation=1), "generation": 1},
        Action.FAIL_NOW, C.OOM_KILLED, "raise resources.memory"),
    ("s12-oom-again-new-spec", with_(gang(), 1, lambda p: exited(p, 137, "OOMKilled")),
        {"last_failure": LastFailure(reason=C.OOM_KILLED, attempt=0, generation=1), "generation": 2},
        Action.RESTART_GANG, C.OOM_KILLED, ""),
    ("segfault", with_(gang(), 3, lambda p: exited(p, 139)), {}, Action.RESTART_GANG, WORKER_FAILED, "SIGSEGV"),
    ("user-error", with_(gang(), 0, lambda p: exited(p, 1, message="Traceback...\nValueError: bad shape")), {},
        Action.RESTART_GANG, C.USER_ERROR, "ValueError: bad shape"),
    ("other-exit", with_(gang(), 0, lambda p: exited(p, 3)), {}, Action.RESTART_GANG, WORKER_FAILED, "exited 3"),
    ("config-error-78", with_(gang(), 0, lambda p: exited(p, 78, message="bad lr")), {},
        Action.FAIL_NOW, C.CONFIG_ERROR, "configuration error"),
    ("checkpoint-unrecoverable-80", with_(gang(), 0, lambda p: exited(p, 80)), {},
        Action.FAIL_NOW, C.CHECKPOINT_UNRECOVERABLE, "maxAgeSeconds"),
    ("s16-nan-first", tuple(exited(p, 79, message=NAN_MSG) for p in gang()), {}, Action.RESTART_GANG, C.NON_FINITE_LOSS, "at step 120"),
    ("s16-nan-repeat-same-step", tuple(exited(p, 79, message=NAN_MSG) for p in gang()),
        {"last_failure": LastFailure(reason=C.NON_FINITE_LOSS, attempt=0, step=120)}, Action.FAIL_NOW, C.NON_FINITE_LOSS, "again"),
    ("s16-nan-other-step", tuple(exited(p, 79, message=NAN_MSG) for p in gang()),
        {"last_failure": LastFailure(reason=C.NON_FINITE_LOSS, attempt=0, step=80)}, Action.RESTART_GANG, C.NON_FINITE_LOSS, ""),
    ("s16-nan-step-from-progress", tuple(exited(p, 79) for p in gang()), {"progress_step": 55},
        Action.RESTART_GANG, C.NON_FINITE_LOSS, "at step 55"),
    ("s14-preempted", with_(gang(), 2, lambda p: disrupted(p, "PreemptionByScheduler", "preempted by high")), {},
        Action.RESTART_NOT_COUNTED, C.PREEMPTED, "PreemptionByScheduler"),
    ("s14-eviction-api", with_(gang(), 2, lambda p: disrupted(p, "EvictionByEvictionAPI")), {}, Action.RESTART_NOT_COUNTED, C.EVICTED, ""),
    ("s14-kubelet-evicted", with_(gang(), 2, evicted), {}, Action.RESTART_NOT_COUNTED, C.EVICTED, "low on resource"),
    ("s14-taint-manager", with_(gang(), 2, lambda p: disrupted(p, "DeletionByTaintManager")), {},
        Action.RESTART_NOT_COUNTED, C.NODE_LOST, ""),
    ("s14-preempted-peers-crashed", tuple(
        [disrupted(exited(pod("t", 0), 143), "PreemptionByScheduler")] + [exited(running(pod("t", r)), 1) for r in (1, 2, 3)]
    ), {}, Action.RESTART_NOT_COUNTED, C.PREEMPTED, ""),
    ("container-cannot-run", with_(gang(), 0, lambda p: dataclasses.replace(p, phase="Failed", containers=(
        ContainerFacts("trainer", "terminated", "StartError", 'exec: "pythn": not found', 128),))), {},
        Action.FAIL_NOW, C.CONFIG_ERROR, "not found"),
    ("pod-deleted-by-someone", with_(gang(), 3, lambda p: terminating(p, "2026-01-01T00:12:00Z")), {},
        Action.RESTART_NOT_COUNTED, C.TERMINATED, "being deleted"),
    ("sigterm-no-disruption", with_(gang(), 1, lambda p: exited(p, 81)), {},
        Action.RESTART_NOT_COUNTED, C.TERMINATED, "without a disruption"),
    # A pod force-deleted from a running gang leaves no facts at all: its rank is simply missing.
    ("pod-force-deleted-while-running", tuple(gang()[1:]), {"gang_size": 4, "running_since": NOW},
        Action.RESTART_NOT_COUNTED, C.TERMINATED, "rank 0 was deleted while the gang ran"),
    ("every-pod-force-deleted", (), {"gang_size": 4, "running_since": NOW}, Action.RESTART_NOT_COUNTED, C.TERMINATED, "rank 0, 1, 2, 3"),
    ("ranks-missing-before-running-are-pending", tuple(gang()[1:]), {"gang_size": 4}, Action.NONE, None, ""),
    ("s13-node-notready-long", tuple(gang()), {"nodes": nodes_ready(**{"node-1": NodeFacts(False, "2026-01-01T00:05:00Z")})},
        Action.RESTART_NOT_COUNTED, C.NODE_LOST, "node-1"),
    ("s13-node-notready-brief", tuple(gang()), {"nodes": nodes_ready(**{"node-1": NodeFacts(False, "2026-01-01T00:09:50Z")})},
        Action.NONE, None, ""),
    ("s13-node-gone", tuple(gang()), {"nodes": {"node-0": NodeFacts(True)}}, Action.RESTART_NOT_COUNTED, C.NODE_LOST, "no longer exists"),
    ("s13-node-lost-beats-peer-errors", tuple([running(pod("t", 0)), exited(running(pod("t", 1)), 1)]),
        {"nodes": {"node-1": NodeFacts(True)}}, Action.RESTART_NOT_COUNTED, C.NODE_LOST, "node-0"),
    ("s9-missing-secret-in-grace",
        with_(gang(), 0, lambda p: waiting(pod("t", 0, created="2026-01-01T00:09:00Z"), "CreateContainerConfigError",
                                           'secret "s3-creds" not found')),
        {}, Action.NONE, CREDENTIALS_UNAVAILABLE, "s3-creds"),
    ("s9-missing-secret-past-grace", with_(gang(), 0, lambda p: waiting(p, "CreateContainerConfigError", 'secret "s3-creds" not found')),
        {}, Action.FAIL_NOW, CREDENTIALS_UNAVAILABLE, "startup grace"),
    ("image-pull-in-grace", (waiting(pod("t", 0, created="2026-01-01T00:08:00Z"), "ImagePullBackOff", "back-off pulling"),), {},
        Action.NONE, C.IMAGE_PULL_FAILED, "ImagePullBackOff"),
    ("image-pull-past-grace", (waiting(pod("t", 0), "ErrImagePull", "not found"),), {}, Action.FAIL_NOW, C.IMAGE_PULL_FAILED, ""),
    ("invalid-image-name", (waiting(pod("t", 0, created="2026-01-01T00:09:59Z"), "InvalidImageName", "bad ref"),), {},
        Action.FAIL_NOW, C.IMAGE_PULL_FAILED, "invalid image"),
    ("config-error-beats-pull-grace",
        (waiting(pod("t", 0, created="2026-01-01T00:09:00Z"), "ErrImagePull"), exited(running(pod("t", 1)), 78)), {},
        Action.FAIL_NOW, C.CONFIG_ERROR, ""),
    ("s15-hang", tuple(gang()), {"hang_timeout_seconds": 300, "heartbeat": NOW - dt.timedelta(seconds=301), "progress_step": 40},
        Action.RESTART_GANG, HANG, "at step 40"),
    ("s15-hang-repeat-same-step", tuple(gang()),
        {"hang_timeout_seconds": 300, "heartbeat": NOW - dt.timedelta(seconds=400), "progress_step": 40,
         "last_failure": LastFailure(reason=HANG, attempt=0, step=40)}, Action.FAIL_NOW, HANG, "same step"),
    ("s15-fresh-heartbeat", tuple(gang()), {"hang_timeout_seconds": 300, "heartbeat": NOW - dt.timedelta(seconds=100)},
        Action.NONE, None, ""),
    ("s15-no-heartbeat-yet-measured-from-start", tuple(gang()),
        {"hang_timeout_seconds": 300, "running_since": NOW - dt.timedelta(seconds=600)}, Action.RESTART_GANG, HANG, ""),
    ("s15-hang-off", tuple(gang()), {"heartbeat": NOW - dt.timedelta(hours=5)}, Action.NONE, None, ""),
    ("hang-not-while-pending", (pod("t", 0),), {"hang_timeout_seconds": 60, "running_since": NOW - dt.timedelta(hours=1)},
        Action.NONE, None, ""),
]


@pytest.mark.parametrize(("pods", "kw", "action", "reason", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_classify(pods, kw, action, reason, fragment):
    v = classify(ClassifyInput(pods=tuple(pods), now=NOW, **kw))
    assert (v.action, v.reason) == (action, reason), v.message
    assert fragment in v.message
    assert v.counted == (action == Action.RESTART_GANG)


def test_step_of_non_finite_loss_is_reported():
    v = classify(ClassifyInput(pods=tuple(exited(p, 79, message=NAN_MSG) for p in gang()), now=NOW))
    assert v.step == 120


def test_pod_facts_from_pod_object():
    obj = {
        "metadata": {"name": "t-w1-a2", "labels": {"llmops.dev/node-rank": "1", "llmops.dev/attempt": "2"},
                     "creationTimestamp": "2026-01-01T00:00:00Z", "deletionTimestamp": "2026-01-01T00:02:00Z", "uid": "u1"},
        "spec": {"nodeName": "n7"},
        "status": {
            "phase": "Failed",
            "reason": "Evicted",
            "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "TerminationByKubelet", "message": "m"}],
            "containerStatuses": [{"name": "trainer", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": "x"}}}],
        },
    }
    f = PodFacts.from_pod(obj)
    assert (f.name, f.rank, f.attempt, f.phase, f.reason, f.node_name, f.uid) == ("t-w1-a2", 1, 2, "Failed", "Evicted", "n7", "u1")
    assert f.terminated().exit_code == 137 and f.terminated().reason == "OOMKilled"
    assert f.condition("DisruptionTarget").reason == "TerminationByKubelet"
    assert f.deletion_timestamp == "2026-01-01T00:02:00Z" and f.terminal
    # the kubelet's eviction is infrastructure: not counted
    assert classify(ClassifyInput(pods=(f,), now=NOW)).action == Action.RESTART_NOT_COUNTED


def test_classifier_is_pure():
    pods = with_(gang(), 2, lambda p: exited(p, 137))
    a = classify(ClassifyInput(pods=pods, now=NOW))
    b = classify(ClassifyInput(pods=pods, now=NOW))
    assert a == b
