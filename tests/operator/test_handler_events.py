"""Events follow written transitions: when the status write of a reconcile fails, the retried
reconcile plans the same transition again, possibly with a message that has moved on (the
scheduler has since said why the gang is not placed); the object still gets one Event for it.
Runs the TrainingJob reconcile against the emulated API server with a fault on the status write."""

from __future__ import annotations

import datetime as dt

from llmops.controller import Context
from llmops.handlers import trainingjob as handler
from llmops.kube.client import Kube, load_api_client
from llmops.metrics import Metrics
from llmops.sandbox.apiserver import ApiServer
from llmops.sandbox.node.client import Kube as SandboxKube
from llmops.sandbox.run import CRD_DIR, install_crds

NS, NAME = "default", "ev"
API = "llmops.dev/v1alpha1"


def body() -> dict:
    return {"apiVersion": API, "kind": "TrainingJob", "metadata": {"name": NAME, "namespace": NS},
            "spec": {"image": "llmops/trainer:dev", "command": ["python", "-m", "train"], "nodes": 2,
                     "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"}}}


def events(kube: Kube) -> list[dict]:
    return [e for e in kube.list("v1", "Event", NS) if e["involvedObject"]["name"] == NAME]


def test_a_failed_status_write_does_not_repeat_the_event(api_server: ApiServer, tmp_path) -> None:  # noqa: ANN001
    kubeconfig = api_server.write_kubeconfig(tmp_path / "kubeconfig")
    install_crds(SandboxKube(str(kubeconfig)), CRD_DIR)
    kube = Kube(load_api_client(str(kubeconfig)))
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    ctx = Context(kube=kube, metrics=Metrics(), clock=lambda: now)
    kube.create(body())

    api_server.faults.fail(verb="patch", resource="trainingjobs/status", code=409)
    assert handler.reconcile(ctx, NS, NAME) == 0.0  # pods created, the status write refused: re-read at once
    assert events(kube) == []  # nothing written, nothing announced
    pods = kube.list("v1", "Pod", NS)
    assert len(pods) == 2
    for pod in pods:  # the scheduler says why it cannot place them
        kube.patch("v1", "Pod", NS, pod["metadata"]["name"], {"status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/0 nodes are available"}]}}, subresource="status")  # fmt: skip

    handler.reconcile(ctx, NS, NAME)
    handler.reconcile(ctx, NS, NAME)
    queued = (kube.get(API, "TrainingJob", NS, NAME) or {})["status"]["conditions"]
    reason = next(c["reason"] for c in queued if c["type"] == "Queued")
    got = [e for e in events(kube) if e["reason"] == reason]
    assert len(got) == 1, [e["message"] for e in events(kube)]
    assert "0/0 nodes are available" in got[0]["message"]
