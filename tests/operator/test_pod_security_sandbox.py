"""Reliability scenario 10 on the sandbox: a TrainingJob asking for RDMA (so its pods add the
IPC_LOCK capability) in a namespace that enforces Pod Security "baseline". The API server
rejects the pods with 403; the operator reports Failed/PodSecurityViolation quoting the API's
message, says it is permanent, does not keep re-POSTing, and does not strip the capability on
its own. The same job in an unlabelled namespace runs."""

from __future__ import annotations

import time
from functools import partial

import pytest
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox, operator_available
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually

pytestmark = pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed")
TJ = ("llmops.dev/v1alpha1", "TrainingJob")


eventually = partial(sandbox_eventually, timeout=60.0, interval=0.2)


def rdma_job(ns: str) -> dict:
    return {"apiVersion": TJ[0], "kind": TJ[1], "metadata": {"name": "rdma", "namespace": ns},
            "spec": {"image": "llmops/trainer:dev", "command": ["python", "-c", "import time; time.sleep(600)"],
                     "nodes": 1, "procsPerNode": 1, "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"},
                     "network": {"rdma": {"resources": [{"name": "rdma/hca", "count": 1}]}}}}


def cond(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_pod_security_denial_is_reported_once_and_permanent(tmp_path, cluster: str) -> None:  # noqa: ANN001
    with Sandbox(nodes=1, capacity={"cpu": "8", "memory": "32Gi", "rdma/hca": "4"}, workdir=tmp_path, operator=True,
                 control_plane=sandbox_control_plane(cluster)) as sb:
        kube = Kube(load_api_client(sb.kubeconfig))
        kube.create({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": "locked", "labels": {"pod-security.kubernetes.io/enforce": "baseline"}}})
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "open"}})
        kube.create(rdma_job("locked"))
        kube.create(rdma_job("open"))

        tj = eventually(lambda: (t := kube.get(*TJ, "locked", "rdma")) and cond(t, "Failed").get("status") == "True" and t)
        failed = cond(tj, "Failed")
        assert failed["reason"] == "PodSecurityViolation"
        assert 'violates PodSecurity "baseline:latest"' in failed["message"]
        assert 'must not include "IPC_LOCK" in securityContext.capabilities.add' in failed["message"]
        assert "permanent" in failed["message"] and (tj["status"].get("restarts") or {}).get("total", 0) == 0

        # The same job where Pod Security allows it: runs, with the capability it asked for.
        eventually(lambda: cond(kube.get(*TJ, "open", "rdma"), "Running").get("status") == "True")
        (worker,) = kube.list("v1", "Pod", "open", "llmops.dev/job-name=rdma")
        assert worker["spec"]["containers"][0]["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]

        # Nothing more happens in the locked namespace: no pod, one Event, the status unchanged.
        rv = tj["metadata"]["resourceVersion"]
        time.sleep(3)
        assert kube.list("v1", "Pod", "locked") == []
        assert kube.get(*TJ, "locked", "rdma")["metadata"]["resourceVersion"] == rv
        events = [e for e in kube.list("v1", "Event", "locked") if e["reason"] == "PodSecurityViolation"]
        assert len(events) == 1 and events[0]["type"] == "Warning", events
