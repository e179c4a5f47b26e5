"""TrainingJob fault scenarios on the sandbox: the real operator subprocess and process node
agents running real processes (cheap ``sleep``/``python -c`` commands under the real launcher
where progress and checkpoints do not matter), once on the emulated API server (with the
sandbox binder) and once on a real control plane (the real scheduler with native gang
scheduling, the real controller manager; the operator behind the fault proxy, so scenarios
23-25 inject the same API faults through ``sandbox.faults``).

One module-scoped sandbox per cluster; the independent jobs are all applied at once by a fixture (their
scenarios run side by side), then each test polls its own job. Every test asserts the
condition reason and, through ``RankWatch``, that no rank ever had two live pods. Checkpoint
loss is asserted where checkpoints exist (tests/operator/test_trainingjob_sandbox.py).

Scenario numbers refer to reference/reliability-anchors.md section 4:

* 2  -> test_active_deadline_fails_and_releases_pods, test_ttl_deletes_children_only
* 9  -> test_missing_config_or_secret_fails_after_startup_grace_without_burning_budget (the
        operator runs with a 60 s startup grace here; 300 s by default)
* 11 -> test_request_larger_than_any_node_is_unschedulable_at_once,
        test_gang_not_placed_times_out_and_fails_after_bounded_tries (no member ever bound),
        test_auto_gang_backend_is_the_native_pod_group_and_places_the_gang_whole
* 12 -> test_oom_killed_restart_then_repeat_fails (OOMKilled; SIGKILL is in the sandbox module)
* 14 -> test_preemption_restart_not_counted
* 16 -> test_non_finite_loss_rolls_back_once_then_fails (real runtime, TRAIN_LR=1e30)
* 21 (the "never adopt" half) -> test_foreign_child_is_reported_not_adopted
* 23 -> test_operator_killed_converges_without_duplicates,
        test_operator_killed_between_pods_adopts_and_completes_the_gang (2 of 4 pods created)
* 24, 25 -> test_api_faults_converge (409 on the status write, 409/429 with Retry-After/500/503
        on the pod writes, watch streams cut, the watch history expired: 410 Gone)
* suspend/resume -> test_suspend_deletes_pods_and_resume_starts_next_attempt
* 13 -> test_node_lost_waits_for_terminating_pod (4 s node-lost grace here; 40 s by default)
* 15 -> test_hang_restarts_the_gang (hangTimeoutSeconds has a 60 s floor: the job starts with
        the parallel ones; the "same step twice fails" rule is table-tested in tests/failures
        and tests/plan)
* a mutable spec edit while running (totalSteps) -> test_mutable_spec_edit_while_running_keeps_the_pods

Not covered here, and why: 1/3/4/5 (admission; tests/api and tests/crdgen), 17-19
(checkpoint runtime tests). 22 (two operators) is
tests/operator/test_two_operators_sandbox.py, 10 (Pod Security) test_pod_security_sandbox.py.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
import yaml
from llmops.kube.client import Kube, load_api_client
from llmops.plan.reasons import allowed
from llmops.sandbox.run import Sandbox
from llmops.sandbox.statewatch import StateWatch
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually

NS = "default"
TJ = ("llmops.dev/v1alpha1", "TrainingJob")
SLEEP = ["python", "-c", "import time; time.sleep(600)"]
# operator --startup-grace-seconds for this module: far below the 300 s default, yet long
# enough for the operator to see a config error inside it while 14 jobs start at once on a
# loaded 2-core machine (the scenario asserts the in-grace Queued report; the age counts from
# the pod's creation, so scheduling is inside it: 37-45 s were measured at load 35). The
# jobs run beside the hang scenario's 60 s, so the wait costs the module little.
STARTUP_GRACE = 60
NODE_LOST_GRACE = 4  # operator --node-lost-grace-seconds


eventually = partial(sandbox_eventually, timeout=120.0, interval=0.2)


def condition(tj: dict | None, type_: str) -> dict | None:
    return next((c for c in ((tj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def has(tj: dict | None, type_: str, reason: str | None = None) -> bool:
    c = condition(tj, type_)
    return bool(c and c["status"] == "True" and (reason is None or c["reason"] == reason))


class RankWatch:
    """Polls pods of every job and records any moment where one rank had two non-terminal pods,
    and every pod ever seen bound to a node (gangs are all-or-nothing)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.violations: list[str] = []
        self.bound: dict[str, set[str]] = {}  # job -> its pods ever seen with spec.nodeName
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            live: dict[tuple[str, str], list[str]] = {}
            try:
                pods = self.kube.list("v1", "Pod", NS, "llmops.dev/job-name")
            except Exception:  # noqa: BLE001 - injected API faults hit this poller too
                pods = []
            for pod in pods:
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                labels = pod["metadata"]["labels"]
                key = (labels.get("llmops.dev/job-name", "?"), labels.get("llmops.dev/node-rank", "?"))
                live.setdefault(key, []).append(pod["metadata"]["name"])
                if (pod.get("spec") or {}).get("nodeName"):
                    self.bound.setdefault(key[0], set()).add(pod["metadata"]["name"])
            self.violations += [f"{k}: {names}" for k, names in live.items() if len(names) > 1]
            time.sleep(0.2)

    def of(self, job: str) -> list[str]:
        return [v for v in self.violations if v.startswith(f"('{job}',")]


def job(name: str, command: list[str], *, nodes: int = 1, cpu: str = "100m", memory: str = "256Mi", **spec: Any) -> dict:
    body: dict[str, Any] = {
        "apiVersion": TJ[0], "kind": TJ[1], "metadata": {"name": name, "namespace": NS},
        "spec": {
            "image": "llmops/trainer:dev", "command": command, "nodes": nodes, "procsPerNode": 1,
            "resources": {"gpus": 0, "cpu": cpu, "memory": memory},
            "scheduling": {"gang": {"backend": "native", "timeoutSeconds": 120}},
            "failurePolicy": {"maxRestarts": 3, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
        },
    }  # fmt: skip
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            body["spec"][key] = {**body["spec"][key], **value}
        else:
            body["spec"][key] = value
    return body


#: The jobs that run side by side (their scenarios do not disturb one another).
PARALLEL = [
    job("oom", ["python", "-c", "b = bytearray(1536 * 2**20); import time; time.sleep(600)"], memory="300Mi",
        failurePolicy={"maxRestarts": 3}),
    job("preempt", SLEEP, nodes=2),
    job("toobig", SLEEP, cpu="100"),
    job("gang", SLEEP, nodes=3, cpu="5", scheduling={"gang": {"backend": "native", "timeoutSeconds": 2}}),
    job("config", SLEEP, template={"env": [{"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "absent-cm", "key": "k"}}}]}),
    job("creds", SLEEP, template={"envFrom": [{"secretRef": {"name": "absent-s3-creds"}}]}),
    job("suspend", SLEEP, nodes=2),
    job("deadline", SLEEP, runPolicy={"activeDeadlineSeconds": 5}),
    job("ttl", ["python", "-c", "pass"], runPolicy={"ttlSecondsAfterFinished": 1}),
    job("foreign", SLEEP),
    job("edit", SLEEP, totalSteps=100),
    job("hang", SLEEP, nodes=2, failurePolicy={"hangTimeoutSeconds": 60}),
    job("whole", SLEEP, nodes=2, scheduling={"gang": {"backend": "auto", "timeoutSeconds": 120}}),
    # The real runtime with a learning rate that blows the weights up within a few steps.
    job("nan", ["python", "-m", "llmops_runtime.train"], cpu="500m", memory="1Gi", totalSteps=40,
        checkpoint={"uri": "s3://llmops-sandbox/checkpoints/nan", "everySteps": 2},
        template={"env": [{"name": "TRAIN_LR", "value": "1e30"}, {"name": "TRAIN_WARMUP", "value": "0"}]}),
]


@pytest.fixture(scope="module", params=CLUSTERS)
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    # Short graces (an admin setting) so the after-grace rules run in seconds, not minutes.
    grace = ["--startup-grace-seconds", str(STARTUP_GRACE), "--node-lost-grace-seconds", str(NODE_LOST_GRACE)]
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True, operator_args=grace,
                 control_plane=sandbox_control_plane(request.param), fault_proxy=True) as sb:
        yield sb


@pytest.fixture(scope="module")
def kube(sandbox: Sandbox) -> Kube:
    return Kube(load_api_client(sandbox.kubeconfig))


@pytest.fixture(scope="module")
def watch(kube: Kube) -> Iterator[RankWatch]:
    w = RankWatch(kube)
    w.thread.start()
    yield w
    w.stop.set()
    w.thread.join(5)


@pytest.fixture(scope="module")
def states(sandbox: Sandbox) -> Iterator[StateWatch]:
    """Every status.state every job passes through (a watch: one-reconcile flickers count)."""
    with StateWatch(load_api_client(sandbox.kubeconfig), "llmops.dev", "v1alpha1", "trainingjobs", NS) as w:
        yield w


@pytest.fixture(scope="module")
def parallel_jobs(kube: Kube, watch: RankWatch, states: StateWatch) -> list[str]:
    # A Service with the foreign job's headless-Service name, owned by nobody (the user's).
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "foreign-workers", "namespace": NS},
                 "spec": {"ports": [{"port": 80}]}})  # fmt: skip
    for body in PARALLEL:
        kube.create(body)
    return [b["metadata"]["name"] for b in PARALLEL]


def get(kube: Kube, name: str) -> dict | None:
    return kube.get(*TJ, NS, name)


def pods(kube: Kube, name: str, live_only: bool = False) -> list[dict]:
    out = kube.list("v1", "Pod", NS, f"llmops.dev/job-name={name}")
    if live_only:
        out = [p for p in out if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    return out


def wait_running(kube: Kube, name: str, timeout: float = 120.0) -> dict:
    return eventually(lambda: (t := get(kube, name)) and has(t, "Running") and t, timeout=timeout)


def finish(kube: Kube, name: str) -> None:
    """Free the job's nodes for the others (the CR delete garbage-collects its pods)."""
    kube.delete(*TJ, NS, name)


# --- scenarios run side by side ------------------------------------------------------------------


def test_hang_freeze_one_rank(sandbox: Sandbox, kube: Kube, parallel_jobs: list[str]) -> None:
    """Scenario 15's injection, done first: SIGSTOP one rank of the running "hang" job (the
    assertions are in test_hang_restarts_the_gang, after the other parallel scenarios)."""
    wait_running(kube, "hang")
    sandbox.fault(NS, "hang-w1-a0", "freeze")


def test_oom_killed_restart_then_repeat_fails(kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    done = eventually(lambda: (t := get(kube, "oom")) and has(t, "Failed") and t, timeout=150)
    st = done["status"]
    # First OOM: a counted gang restart with its own cause; the same OOM again with the same
    # spec ends the job instead of looping.
    assert st["restarts"]["byCause"] == {"OOMKilled": 1}, st["restarts"]
    assert condition(done, "Failed")["reason"] == "OOMKilled"
    assert "raise resources.memory" in condition(done, "Failed")["message"]
    eventually(lambda: not pods(kube, "oom", live_only=True), timeout=60)  # memory released
    assert watch.of("oom") == []


def test_preemption_restart_not_counted(kube: Kube, parallel_jobs: list[str], watch: RankWatch, sandbox: Sandbox) -> None:
    wait_running(kube, "preempt")
    victim = kube.get("v1", "Pod", NS, "preempt-w0-a0")
    # As the scheduler writes it: with the time of the transition. The controller manager's
    # disruption controller turns a DisruptionTarget older than two minutes on a pod that is not
    # terminating back to False, and an unset lastTransitionTime counts as the oldest time.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    conds = [*(victim.get("status") or {}).get("conditions", []), {
        "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
        "message": "preempted by a higher-priority pod", "lastTransitionTime": now}]  # fmt: skip
    # The victim takes its grace period to stop, as a real container does (a `sleep` would
    # exit at once and the pod could vanish before the operator sees it; see the report on
    # vanished pods), so the preemption is observed as the scheduler leaves it: Terminating
    # with DisruptionTarget.
    sandbox.fault(NS, "preempt-w0-a0", "stuck-terminating")
    kube.patch("v1", "Pod", NS, "preempt-w0-a0", {"status": {"conditions": conds}}, subresource="status")
    kube.delete("v1", "Pod", NS, "preempt-w0-a0")
    try:
        eventually(lambda: (((get(kube, "preempt") or {}).get("status") or {}).get("restarts") or {}).get("byCause") == {"Preempted": 1})
    finally:
        sandbox.fault(NS, "preempt-w0-a0", "unstick")  # the grace period ends
    after = eventually(lambda: (t := get(kube, "preempt")) and t["status"].get("attempt") == 1 and has(t, "Running") and t, timeout=120)
    st = after["status"]
    assert st["restarts"]["byCause"] == {"Preempted": 1}, st["restarts"]
    assert st["restarts"]["counted"] == 0 and st["restarts"]["total"] == 1
    events = [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "preempt" and e["reason"] == "Preempted"]
    assert len(events) == 1, [e["message"] for e in events]
    assert {p["metadata"]["name"] for p in pods(kube, "preempt", live_only=True)} == {"preempt-w0-a1", "preempt-w1-a1"}
    finish(kube, "preempt")
    assert watch.of("preempt") == []


def test_request_larger_than_any_node_is_unschedulable_at_once(kube: Kube, parallel_jobs: list[str]) -> None:
    tj = eventually(lambda: (t := get(kube, "toobig")) and has(t, "Queued", "Unschedulable") and t, timeout=60)
    msg = condition(tj, "Queued")["message"]
    assert "100" in msg and "8" in msg, msg  # requested vs the largest node's allocatable
    assert not has(tj, "Running")
    assert pods(kube, "toobig") == []  # holds nothing


def test_gang_not_placed_times_out_and_fails_after_bounded_tries(kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    # 3 pods of 5 CPUs on two 8-CPU nodes: each fits a node, the gang never does. Each timeout
    # is Queued/SchedulingTimeout only for its 1-2 s backoff, too short to catch by polling on
    # a loaded machine: its Event is the lasting record of that transition.
    eventually(lambda: [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "gang"
                        and e["reason"] == "SchedulingTimeout" and "not fully running within 2s" in e["message"]], timeout=90)
    done = eventually(lambda: (t := get(kube, "gang")) and has(t, "Failed") and t, timeout=180)
    assert condition(done, "Failed")["reason"] == "SchedulingTimeout"
    assert done["status"]["restarts"]["byCause"]["SchedulingTimeout"] == 5
    assert done["status"]["restarts"]["counted"] == 0
    eventually(lambda: not pods(kube, "gang", live_only=True), timeout=60)  # CPUs released
    assert watch.of("gang") == []
    assert watch.bound.get("gang", set()) == set()  # all or nothing: no member ever held a node


def test_auto_gang_backend_is_the_native_pod_group_and_places_the_gang_whole(
        kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    """``backend: auto`` resolves from discovery to Kubernetes' own PodGroup
    (scheduling.k8s.io/v1alpha2) where the cluster serves it, as the real v1.36 control plane
    does with its gang-scheduling gates; the pods join it and are placed together."""
    assert "podgroups" in kube.served("scheduling.k8s.io/v1alpha2")
    tj = wait_running(kube, "whole")
    gang = tj["status"]["gang"]
    assert gang["backend"] == "native", gang
    group = kube.get("scheduling.k8s.io/v1alpha2", "PodGroup", NS, gang["name"])
    assert group["spec"]["schedulingPolicy"]["gang"]["minCount"] == 2, group["spec"]
    members = pods(kube, "whole")
    assert sorted(p["spec"]["schedulingGroup"]["podGroupName"] for p in members) == [gang["name"]] * 2
    assert all(p["spec"].get("nodeName") for p in members)
    finish(kube, "whole")
    assert watch.of("whole") == []


@pytest.mark.parametrize(("name", "reason", "ref"), [("config", "ConfigError", "absent-cm"),
                                                     ("creds", "CredentialsUnavailable", "absent-s3-creds")])
def test_missing_config_or_secret_fails_after_startup_grace_without_burning_budget(
        kube: Kube, parallel_jobs: list[str], name: str, reason: str, ref: str) -> None:
    tj = eventually(lambda: (t := get(kube, name)) and has(t, "Failed") and t, timeout=STARTUP_GRACE + 90)
    failed = condition(tj, "Failed")
    assert failed["reason"] == reason and ref in failed["message"], failed
    assert f"startup grace {STARTUP_GRACE}s" in failed["message"]
    assert (tj["status"].get("restarts") or {}).get("total", 0) == 0  # no budget burned
    eventually(lambda: not pods(kube, name, live_only=True), timeout=60)  # nothing held
    # While in grace the job said so (Queued with the same reason), one Event per transition.
    events = [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == name and e["reason"] == reason]
    assert sorted(e["message"].split(":")[0] for e in events) == ["Failed", "Queued"], [e["message"] for e in events]
    assert all(e["count"] == 1 for e in events if "count" in e)
    finish(kube, name)


def test_suspend_deletes_pods_and_resume_starts_next_attempt(kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    wait_running(kube, "suspend")
    kube.patch(*TJ, NS, "suspend", {"spec": {"runPolicy": {"suspend": True}}})
    tj = eventually(lambda: (t := get(kube, "suspend")) and has(t, "Suspended", "SuspendedByUser") and t, timeout=60)
    assert not has(tj, "Running")
    eventually(lambda: not pods(kube, "suspend", live_only=True), timeout=60)
    kube.patch(*TJ, NS, "suspend", {"spec": {"runPolicy": {"suspend": False}}})
    tj = eventually(lambda: (t := get(kube, "suspend")) and has(t, "Running") and t, timeout=120)
    assert condition(tj, "Suspended")["status"] == "False" and condition(tj, "Suspended")["reason"] == "Resumed"
    assert tj["status"]["attempt"] == 1  # a fresh attempt, not a restart
    assert (tj["status"].get("restarts") or {}).get("total", 0) == 0
    finish(kube, "suspend")
    assert watch.of("suspend") == []


def test_active_deadline_fails_and_releases_pods(kube: Kube, parallel_jobs: list[str]) -> None:
    tj = eventually(lambda: (t := get(kube, "deadline")) and has(t, "Failed") and t, timeout=90)
    assert condition(tj, "Failed")["reason"] == "DeadlineExceeded"
    assert not has(tj, "Running")
    eventually(lambda: not pods(kube, "deadline", live_only=True), timeout=60)
    assert get(kube, "deadline") is not None  # the CR stays with its final status


def test_ttl_deletes_children_only(kube: Kube, parallel_jobs: list[str]) -> None:
    tj = eventually(lambda: (t := get(kube, "ttl")) and has(t, "Succeeded") and t, timeout=90)
    assert condition(tj, "Succeeded")["reason"] == "Completed"
    eventually(lambda: kube.get("v1", "Service", NS, "ttl-workers") is None and pods(kube, "ttl") == [], timeout=60)
    assert kube.get("coordination.k8s.io/v1", "Lease", NS, "ttl-progress") is None
    assert has(get(kube, "ttl"), "Succeeded")  # the Git-owned CR stays


def test_foreign_child_is_reported_not_adopted(kube: Kube, parallel_jobs: list[str]) -> None:
    tj = eventually(lambda: (t := get(kube, "foreign")) and has(t, "Queued", "ChildOwnedByOther") and t, timeout=60)
    assert "Service/foreign-workers" in condition(tj, "Queued")["message"]
    svc = kube.get("v1", "Service", NS, "foreign-workers")
    assert not svc["metadata"].get("ownerReferences")  # never adopted
    assert svc["spec"]["ports"][0]["port"] == 80  # nor overwritten
    finish(kube, "foreign")


def test_mutable_spec_edit_while_running_keeps_the_pods(kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    before = wait_running(kube, "edit")
    uids = {p["metadata"]["uid"] for p in pods(kube, "edit")}
    kube.patch(*TJ, NS, "edit", {"spec": {"totalSteps": 1000}})  # not immutable: no restart, no error
    tj = eventually(lambda: (t := get(kube, "edit")) and t["status"].get("observedGeneration") == 2 and t, timeout=60)
    assert has(tj, "Running") and tj["status"]["attempt"] == before["status"]["attempt"]
    assert {p["metadata"]["uid"] for p in pods(kube, "edit")} == uids
    finish(kube, "edit")
    assert watch.of("edit") == []


def test_non_finite_loss_rolls_back_once_then_fails(kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    done = eventually(lambda: (t := get(kube, "nan")) and (has(t, "Failed") or has(t, "Succeeded")) and t, timeout=240)
    st = done["status"]
    assert condition(done, "Failed")["reason"] == "NonFiniteLoss", st["conditions"]
    assert st["restarts"]["byCause"] == {"NonFiniteLoss": 1}, st["restarts"]  # exactly one rollback
    assert st["attempt"] == 1
    # No checkpoint past the last finite step was committed, and the one kept is the resume point.
    if st.get("checkpoint"):
        assert st["resumedFromStep"] == st["checkpoint"]["step"]
    eventually(lambda: not pods(kube, "nan", live_only=True), timeout=60)
    assert watch.of("nan") == []


def test_hang_restarts_the_gang(sandbox: Sandbox, kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    # The smallest hangTimeoutSeconds is 60, so this job starts with the parallel ones and its
    # minute overlaps theirs. A frozen worker of a command that never reports a heartbeat: the
    # hang is measured from the attempt's start.
    tj = eventually(lambda: (t := get(kube, "hang")) and (t["status"].get("restarts") or {}).get("total") and t, timeout=150)
    assert tj["status"]["restarts"]["byCause"] == {"Hang": 1}
    assert tj["status"]["restarts"]["counted"] == 1
    # The Restarting condition with reason Hang may already have given way to the next
    # attempt's; the remembered failure and the Event stay.
    assert tj["status"]["lastFailure"]["reason"] == "Hang"
    events = [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "hang"]
    assert any("Hang" in (e.get("reason", "") + e.get("message", "")) for e in events), [e["reason"] for e in events]
    finish(kube, "hang")
    assert watch.of("hang") == []


# --- scenarios that disturb the whole sandbox run after the parallel ones -----------------------


def test_operator_killed_converges_without_duplicates(sandbox: Sandbox, kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    kube.create(job("survivor", SLEEP, nodes=2))
    before = wait_running(kube, "survivor")
    uids = {p["metadata"]["uid"] for p in pods(kube, "survivor")}
    assert sandbox.operator is not None
    sandbox.restart_operator(kill=True)  # a fresh operator process on the same cluster state
    kube.create(job("after-kill", SLEEP))
    wait_running(kube, "after-kill")  # the new operator acts
    # A spec edit the new operator must observe (generation 2): it reconciles the survivor with
    # the same pods, the same attempt and no restart counted.
    kube.patch(*TJ, NS, "survivor", {"spec": {"failurePolicy": {"maxRestarts": 5}}})
    now = eventually(lambda: (t := get(kube, "survivor")) and t["status"].get("observedGeneration") == 2 and t, timeout=60)
    assert {p["metadata"]["uid"] for p in pods(kube, "survivor")} == uids
    assert now["status"]["attempt"] == before["status"]["attempt"] == 0
    assert (now["status"].get("restarts") or {}).get("total", 0) == 0
    assert has(now, "Running")
    finish(kube, "survivor")
    finish(kube, "after-kill")
    assert watch.of("survivor") == [] and watch.of("after-kill") == []


def test_operator_killed_between_pods_adopts_and_completes_the_gang(
        sandbox: Sandbox, kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    faults = sandbox.faults
    start = faults.injected
    for rank in (2, 3):  # the operator gets ranks 0 and 1 in, then every create of 2 and 3 fails
        faults.fail(verb="create", resource="pods", code=503, count=10_000, namespace=NS, name=f"halfway-w{rank}-a0")
    kube.create(job("halfway", SLEEP, nodes=4))
    eventually(lambda: len(pods(kube, "halfway")) == 2 and faults.injected > start, timeout=60)
    first = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(kube, "halfway")}
    assert sorted(first) == ["halfway-w0-a0", "halfway-w1-a0"]
    sandbox.restart_operator(kill=True)  # SIGKILL mid-gang
    faults.clear()
    tj = wait_running(kube, "halfway")
    now = {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods(kube, "halfway")}
    assert sorted(now) == [f"halfway-w{r}-a0" for r in range(4)]
    assert {n: now[n] for n in first} == first  # the two were adopted, not replaced
    assert tj["status"]["attempt"] == 0 and (tj["status"].get("restarts") or {}).get("total", 0) == 0
    finish(kube, "halfway")
    assert watch.of("halfway") == []


def test_api_faults_converge(sandbox: Sandbox, kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    faults = sandbox.faults
    start = faults.injected
    faults.fail(verb="patch", resource="trainingjobs/status", code=409, count=3)
    pod = partial(faults.fail, verb="create", resource="pods", namespace=NS)
    pod(name="faulty-w0-a0", code=429, retry_after=2)  # throttled: the operator waits as told
    pod(name="faulty-w0-a0", code=500)
    pod(name="faulty-w1-a0", code=409, message='pods "faulty-w1-a0" already exists')
    pod(name="faulty-w1-a0", code=503, retry_after=1)
    kube.create(job("faulty", SLEEP, nodes=2))
    eventually(lambda: faults.injected - start >= 3, timeout=60)
    faults.cut_watches()  # every watch stream drops; resuming from the old version is 410 Gone
    faults.expire_history()
    tj = wait_running(kube, "faulty")
    assert faults.injected - start == 7  # every rule met its writes: 3 status patches, 4 pod creates
    assert tj["status"]["attempt"] == 0 and (tj["status"].get("restarts") or {}).get("total", 0) == 0
    assert len(pods(kube, "faulty")) == 2
    # Exactly one Event per transition despite the failed writes.
    events = [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "faulty"]
    reasons = [e["reason"] for e in events]
    assert len(reasons) == len(set(reasons)), reasons
    finish(kube, "faulty")
    assert watch.of("faulty") == []


def test_node_lost_waits_for_terminating_pod(sandbox: Sandbox, kube: Kube, parallel_jobs: list[str], watch: RankWatch) -> None:
    kube.create(job("nodelost", SLEEP, nodes=2))
    wait_running(kube, "nodelost")
    pod = kube.get("v1", "Pod", NS, "nodelost-w1-a0")
    node = pod["spec"]["nodeName"]
    sandbox.fault(NS, "nodelost-w1-a0", "stuck-terminating")
    sandbox.node(node).set_ready(False)
    try:
        tj = eventually(lambda: (t := get(kube, "nodelost")) and has(t, "Restarting", "WaitingForTerminatingPods") and t, timeout=120)
        assert "nodelost-w1-a0" in condition(tj, "Restarting")["message"]
        assert tj["status"]["restarts"]["byCause"] == {"NodeLost": 1}
        assert tj["status"]["restarts"]["counted"] == 0
        assert kube.get("v1", "Pod", NS, "nodelost-w1-a1") is None  # no second pod for rank 1
    finally:
        sandbox.node(node).set_ready(True)
        sandbox.fault(NS, "nodelost-w1-a0", "unstick")
    wait_running(kube, "nodelost")
    assert get(kube, "nodelost")["status"]["attempt"] == 1
    finish(kube, "nodelost")
    assert watch.of("nodelost") == []


def test_kubectl_shows_the_facts(sandbox: Sandbox, parallel_jobs: list[str]) -> None:
    out = subprocess.run(["kubectl", "--kubeconfig", sandbox.kubeconfig, "get", "tj", "-o", "yaml"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    names = {i["metadata"]["name"] for i in yaml.safe_load(out.stdout)["items"]}
    assert {"oom", "toobig", "gang", "deadline", "ttl"} <= names


# --- last: what the module's jobs went through ----------------------------------------------------


def test_no_job_state_went_backward(parallel_jobs: list[str], states: StateWatch) -> None:
    """Issue 19: over every scenario above (restarts counted and not, suspend/resume, failures,
    success, API faults), no job left a terminal state and none went from Running back to
    Queued without a Restarting or Suspended between."""
    assert all(states.of(name) for name in parallel_jobs), states.states  # the watch saw every job
    assert states.backward() == {}, states.states
    # ...and every condition they carried is a row of the reason table (docs/reference/conditions.md).
    unlisted = {c for c in states.conditions if c[1] != "Unknown" and not allowed("TrainingJob", c[0], c[1] == "True", c[2])}
    assert not unlisted, unlisted
