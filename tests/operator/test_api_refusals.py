"""Issue 21 on both clusters (emulated and the real v1.36 control plane): every refusal the API
server answers while the operator applies children reaches the status.

The operator runs out of cluster as a subprocess (``llmops operator --standalone``, scoped to
the test's namespace), as in production; no node agents are needed, since every refusal here
happens before a pod runs. Each test asserts the condition and its reason with the server's
words, exactly one Event although the operator retried several times (its log shows the
growing delays), and an operator log free of tracebacks and ERROR lines.

Where the emulator does not enforce what the real server does yet (ValidatingAdmissionPolicy)
the emulated case is a strict xfail: it
turns red the day the emulator learns it, so the marker is removed then.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import install_project_crds, operator_available
from llmops.sandbox.testing import eventually

pytestmark = pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed")
API = "llmops.dev/v1alpha1"
TIMEOUT = 30.0  # generous for a loaded 2-core machine; the samples test holds the 10 s acceptance


@dataclass
class Cluster:
    kube: Kube
    namespace: str
    log: Path
    real: bool
    kubeconfig: str = ""

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def condition(self, kind: str, name: str, type_: str) -> dict:
        obj = self.kube.get(API, kind, self.namespace, name) or {}
        return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})

    def events(self, name: str, reason: str) -> list[dict]:
        return [e for e in self.kube.list("v1", "Event", self.namespace)
                if e["involvedObject"].get("name") == name and e["reason"] == reason]

    def retries(self, kind: str, name: str, reason: str) -> list[float]:
        """The delays the operator chose after each refusal of this object (from its log)."""
        key = re.escape(f"('{kind}', '{self.namespace}', '{name}') refused ({reason}): retrying in ")
        return [float(m) for m in re.findall(key + r"([0-9.]+)s", self.log_text())]


def quiet(log: str) -> list[str]:
    """Lines that would mean the refusal was treated as a failure of the operator."""
    return [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line]


def start_operator(kubeconfig: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "llmops.cli", "operator", "--kubeconfig", kubeconfig, "--standalone",
            "--namespace", namespace, "--metrics-port", "0", "--liveness", ""]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "KUBECONFIG": kubeconfig})


def stop_operator(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def training_job(name: str, **spec: object) -> dict:
    base = {"image": "llmops/trainer:dev", "command": ["python", "-c", "pass"], "nodes": 1,
            "resources": {"gpus": 0, "cpu": "100m", "memory": "64Mi"}, "scheduling": {"gang": {"backend": "none"}}}
    return {"apiVersion": API, "kind": "TrainingJob", "metadata": {"name": name}, "spec": {**base, **spec}}


@pytest.fixture
def cluster(request: pytest.FixtureRequest, kubeconfig: Path, fresh_namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    install_project_crds(kubeconfig)
    kube = Kube(load_api_client(str(kubeconfig)))
    log = tmp_path / "operator.log"
    proc = start_operator(str(kubeconfig), fresh_namespace, log)
    c = Cluster(kube, fresh_namespace, log, real="real" in request.node.callspec.id, kubeconfig=str(kubeconfig))
    try:
        # The operator is up once it answered a suspended canary: later deadlines time the reaction only.
        kube.create({**training_job("canary", runPolicy={"suspend": True}), "metadata": {"name": "canary", "namespace": fresh_namespace}})
        eventually(lambda: c.condition("TrainingJob", "canary", "Suspended").get("status") == "True", timeout=60)
        yield c
    finally:
        stop_operator(proc)


def emulator_gap(what: str) -> list[object]:
    """Parameters for a refusal the real server makes and the emulator does not (yet)."""
    return [pytest.param("emulated", marks=pytest.mark.xfail(strict=True, reason=f"the emulator does not enforce {what} yet")), "real"]


def policy_denies(c: Cluster, labels: dict[str, str]) -> bool:
    """Whether admission now refuses a pod with these labels (server-side dry run, nothing stored)."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "labels": labels},
           "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    api = load_api_client(c.kubeconfig)
    try:
        k8s.CoreV1Api(api).create_namespaced_pod(c.namespace, pod, dry_run="All")
        return False
    except ApiException as e:
        return e.status in (403, 422) and "policy-test" in (e.body or "")
    finally:
        api.close()


def create(c: Cluster, obj: dict) -> None:
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": c.namespace}}
    c.kube.create(obj)


def assert_reported(c: Cluster, kind: str, name: str, type_: str, status: str, reason: str, *words: str,
                    retried: bool = True) -> dict:
    """The condition appears; a retried refusal is retried with growing delays and no new Event."""
    cond = eventually(lambda: (x := c.condition(kind, name, type_)) and x.get("reason") == reason and x, timeout=TIMEOUT)
    assert cond["status"] == status, cond
    for w in words:
        assert w in cond["message"], (w, cond["message"])
    if retried:
        delays = eventually(lambda: (d := c.retries(kind, name, reason)) and len(d) >= 3 and d, timeout=TIMEOUT)
        assert delays == sorted(delays) and delays[-1] > delays[0], delays  # a backoff, growing
    events = c.events(name, reason)
    assert len(events) == 1 and events[0]["type"] == "Warning", events
    assert not quiet(c.log_text()), quiet(c.log_text())
    return cond


def no_pods(c: Cluster, job: str) -> bool:
    return c.kube.list("v1", "Pod", c.namespace, f"llmops.dev/job-name={job}") == []


# --- one test per refusal ---------------------------------------------------------------------


def test_missing_service_account_queues_the_job_until_it_exists(cluster: Cluster) -> None:
    create(cluster, training_job("sa", template={"serviceAccountName": "trainer"}))
    assert_reported(cluster, "TrainingJob", "sa", "Queued", "True", "ServiceAccountMissing",
                    'serviceaccount "trainer" not found', "retried with backoff")
    assert no_pods(cluster, "sa") and cluster.condition("TrainingJob", "sa", "Failed") == {}
    # GitOps creates the ServiceAccount later: the next retry creates the pod.
    cluster.kube.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "trainer", "namespace": cluster.namespace}})
    eventually(lambda: not no_pods(cluster, "sa"), timeout=90)  # the backoff is capped at 60 s
    eventually(lambda: cluster.condition("TrainingJob", "sa", "Queued").get("reason") != "ServiceAccountMissing", timeout=TIMEOUT)


def test_missing_priority_class_queues_the_job(cluster: Cluster) -> None:
    create(cluster, training_job("pc", scheduling={"gang": {"backend": "none"}, "priorityClassName": "no-such-class"}))
    assert_reported(cluster, "TrainingJob", "pc", "Queued", "True", "PriorityClassMissing", "no PriorityClass with name no-such-class")
    assert no_pods(cluster, "pc")


def test_a_full_quota_queues_the_job(cluster: Cluster) -> None:
    cluster.kube.create({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "no-pods", "namespace": cluster.namespace},
                         "spec": {"hard": {"pods": "0"}}})
    eventually(lambda: (cluster.kube.get("v1", "ResourceQuota", cluster.namespace, "no-pods") or {}).get("status", {}).get("hard"),
               timeout=TIMEOUT)
    create(cluster, training_job("quota"))
    assert_reported(cluster, "TrainingJob", "quota", "Queued", "True", "QuotaExceeded", "exceeded quota: no-pods")


def test_pod_security_fails_the_job_for_good(cluster: Cluster) -> None:
    enforce = {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
    cluster.kube.patch("v1", "Namespace", None, cluster.namespace, enforce)
    create(cluster, training_job("psa", network={"rdma": {"resources": [{"name": "rdma/hca", "count": 1}]}}))
    assert_reported(cluster, "TrainingJob", "psa", "Failed", "True", "PodSecurityViolation", 'violates PodSecurity "baseline:latest"',
                    "IPC_LOCK", "permanent", retried=False)
    assert no_pods(cluster, "psa") and "refused (PodSecurityViolation)" not in cluster.log_text()


@pytest.mark.parametrize("kubeconfig", emulator_gap("ValidatingAdmissionPolicy"), indirect=True)
def test_an_admission_policy_denial_queues_the_job(cluster: Cluster) -> None:
    name = f"deny-{cluster.namespace}"
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                                                               "resources": ["pods"]}]},
                       "validations": [{"expression": "!has(object.metadata.labels) || !('policy-test' in object.metadata.labels)",
                                        "message": "pods labelled policy-test are not allowed here"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
               "spec": {"policyName": name, "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": cluster.namespace}}}}}
    for obj in (policy, binding):
        cluster.kube.create(obj)
    try:
        # A new policy takes effect once the API server's policy informer has it (a moment
        # later on a busy machine): wait until a labelled pod is refused in a dry run.
        eventually(lambda: policy_denies(cluster, {"policy-test": "yes"}), timeout=TIMEOUT)
        create(cluster, training_job("policy", template={"labels": {"policy-test": "yes"}}))
        assert_reported(cluster, "TrainingJob", "policy", "Queued", "True", "AdmissionDenied",
                        "pods labelled policy-test are not allowed here")
    finally:
        for obj in (binding, policy):
            cluster.kube.delete(obj["apiVersion"], obj["kind"], None, obj["metadata"]["name"])


def test_an_unserved_gang_backend_is_said_before_any_pod(cluster: Cluster) -> None:
    create(cluster, training_job("volcano", scheduling={"gang": {"backend": "volcano"}}))
    assert_reported(cluster, "TrainingJob", "volcano", "Queued", "True", "GangBackendUnavailable",
                    "scheduling.volcano.sh/v1beta1 podgroups", retried=False)
    assert no_pods(cluster, "volcano")
    # auto picks what the cluster serves instead (native where served, else none).
    create(cluster, training_job("auto", scheduling={"gang": {"backend": "auto"}}))
    eventually(lambda: not no_pods(cluster, "auto"), timeout=TIMEOUT)
    assert cluster.condition("TrainingJob", "auto", "Queued").get("reason") != "GangBackendUnavailable"


def test_a_child_the_server_finds_invalid_fails_the_job(cluster: Cluster) -> None:
    # The CRD bounds each annotation (and refuses what a pod refuses in each one); only the pod
    # validation bounds them together (256 KiB): 64 of 4 KiB pass the CRD and not the pod.
    annotations = {f"example.com/note-{i}": "v" * 4096 for i in range(64)}
    create(cluster, training_job("invalid", template={"annotations": annotations}))
    assert_reported(cluster, "TrainingJob", "invalid", "Failed", "True", "ChildRejected",
                    "metadata.annotations: Too long: may not be more than 262144 bytes", "permanent", retried=False)
    assert no_pods(cluster, "invalid")


def test_an_inference_service_reports_an_unserved_child_api(cluster: Cluster) -> None:
    svc = {"apiVersion": API, "kind": "InferenceService", "metadata": {"name": "keda"},
           "spec": {"model": {"uri": "s3://models/m"}, "resources": {"gpus": 0, "cpu": "100m", "memory": "64Mi"},
                    "autoscaling": {"engine": "keda"}}}
    create(cluster, svc)
    assert_reported(cluster, "InferenceService", "keda", "Degraded", "True", "ApiNotServed", "keda.sh/v1alpha1 ScaledObject is not served")
    assert cluster.condition("InferenceService", "keda", "Ready").get("reason") == "ApiNotServed"


def test_a_finetune_job_shows_its_training_jobs_reason(cluster: Cluster) -> None:
    ftj = yaml.safe_load((Path(__file__).resolve().parents[2] / "manifests/samples/finetunejob-minimal.yaml").read_text())
    ftj["spec"]["scheduling"] = {"gang": {"backend": "volcano"}}
    create(cluster, ftj)
    name = ftj["metadata"]["name"]
    cond = eventually(lambda: (x := cluster.condition("FinetuneJob", name, "Queued")) and x.get("reason") == "GangBackendUnavailable" and x,
                      timeout=TIMEOUT)
    assert cond["status"] == "True" and "scheduling.volcano.sh/v1beta1" in cond["message"]
    assert len(cluster.events(name, "GangBackendUnavailable")) == 1
    assert not quiet(cluster.log_text())


# --- every sample ---------------------------------------------------------------------------

SAMPLES = sorted((Path(__file__).resolve().parents[2] / "manifests" / "samples").glob("*.yaml"))
#: What each full sample must say within 10 s of apply on a cluster without Kueue and Volcano.
EXPECTED = {
    "trainingjob-full.yaml": ("Queued", "GangBackendUnavailable", "kueue.x-k8s.io"),
    "finetunejob-full.yaml": ("Queued", "GangBackendUnavailable", "scheduling.volcano.sh/v1beta1"),
}


def test_every_sample_progresses_or_says_why(cluster: Cluster) -> None:
    objs = [yaml.safe_load(p.read_text()) for p in SAMPLES]
    started = time.monotonic()
    for obj in objs:
        create(cluster, obj)

    def reported(obj: dict) -> list[dict]:
        got = cluster.kube.get(API, obj["kind"], cluster.namespace, obj["metadata"]["name"]) or {}
        return [c for c in (got.get("status") or {}).get("conditions") or [] if c.get("reason")]

    for path, obj in zip(SAMPLES, objs, strict=True):
        if path.name in EXPECTED:
            type_, reason, api = EXPECTED[path.name]
            left = max(0.1, 10.0 - (time.monotonic() - started))
            cond = eventually(lambda o=obj, t=type_, r=reason: (x := cluster.condition(o["kind"], o["metadata"]["name"], t))
                              and x.get("reason") == r and x, timeout=left)
            assert cond["status"] == "True" and api in cond["message"], (path.name, cond)
            print(f"{path.name}: {type_}={reason} {time.monotonic() - started:.1f}s after apply")  # the figure (-s shows it)
        else:
            assert eventually(lambda o=obj: reported(o), timeout=TIMEOUT), path.name
    assert not quiet(cluster.log_text()), quiet(cluster.log_text())
