"""GitOps on the sandbox for an InferenceService with the builtin autoscaler: applied the way
Argo CD does it, then the operator is restarted (SIGTERM, as in a rolling update) and makes a
scale decision under load. The live spec must stay exactly the applied manifest (plus the CRD's
scalar defaults): the decision goes to the Deployment and to status, never to spec.replicas;
no operator annotation lands on the CR; no child carries Argo CD's tracking label; the Lua
health check is Healthy at the end and never Degraded.

The server is the vLLM stand-in (a test double the sandbox's nodes run: Sandbox(serving="standin")).
"""

from __future__ import annotations

import copy
import io
import json
import urllib.request

import boto3
import numpy as np
import pytest
from admin_gitops import API, INSTANCE, DriftWatch, argo_resync, argo_sync, crd_defaulted, eventually, is_true
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import DEFAULT_BUCKET, Sandbox, operator_available
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from safetensors.numpy import save

pytestmark = pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed")
NAME = "chat-gitops"
NS = "default"


def manifest() -> dict:
    return {
        "apiVersion": API, "kind": "InferenceService",
        "metadata": {"name": NAME, "namespace": NS, "labels": {INSTANCE: "serving"}},
        "spec": {"model": {"uri": f"s3://{DEFAULT_BUCKET}/models/tiny"}, "minReplicas": 1, "maxReplicas": 2,
                 "autoscaling": {"engine": "builtin", "signal": "queue", "target": 2, "scaleUp": {"maxStep": 1}},
                 "networkPolicy": {"enabled": True}},  # applied (the sandbox does not enforce it)
    }


def upload_tiny_model(sb: Sandbox) -> None:
    s3 = boto3.client("s3", endpoint_url=sb.s3_endpoint, aws_access_key_id=sb.s3_env["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=sb.s3_env["AWS_SECRET_ACCESS_KEY"], region_name=sb.s3_env["AWS_REGION"])
    config = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode()
    weights = save({"embed.weight": np.ones((4, 4), dtype=np.float32)})
    s3.upload_fileobj(io.BytesIO(weights), DEFAULT_BUCKET, "models/tiny/model.safetensors")
    s3.upload_fileobj(io.BytesIO(config), DEFAULT_BUCKET, "models/tiny/config.json")


@pytest.fixture(scope="module", params=CLUSTERS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, argo_health):  # noqa: ANN001, ANN201
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True, serving="standin",
                 control_plane=sandbox_control_plane(request.param)) as sb:
        upload_tiny_model(sb)
        kube = Kube(load_api_client(sb.kubeconfig))
        applied = manifest()
        get = lambda: kube.get(API, "InferenceService", NS, NAME)  # noqa: E731
        children = [(v, k, f"llmops.dev/owner-name={NAME}") for v, k in
                    (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "Pod"), ("policy/v1", "PodDisruptionBudget"),
                     ("networking.k8s.io/v1", "NetworkPolicy"))]
        with DriftWatch(kube, copy.deepcopy(applied), argo_health, children) as watch:
            argo_sync(sb, applied)
            ready = eventually(lambda: (o := get()) and is_true(o, "Ready") and o, timeout=120)
            sb.restart_operator()
            ip = next(p["status"]["podIP"] for p in kube.list("v1", "Pod", NS, ready["status"]["selector"]))
            req = urllib.request.Request(f"http://{ip}:8000/standin/load", data=json.dumps({"waiting": 20}).encode(),
                                         headers={"Content-Type": "application/json"})
            urllib.request.urlopen(req, timeout=5).read()  # queue 20 > target 2: the new operator scales up
            scaled = eventually(lambda: (o := get()) and (o["status"].get("lastScaleDecision") or {}).get("to") == 2
                                and (o["status"].get("readyReplicas") or 0) == 2 and o, timeout=150)
            argo_resync(sb, applied)
            watch.settle()
        yield {"sb": sb, "kube": kube, "applied": applied, "scaled": scaled, "watch": watch}


def test_scale_decision_and_operator_restart_leave_the_spec_alone(run) -> None:  # noqa: ANN001
    watch, scaled = run["watch"], run["scaled"]
    assert watch.problems == []
    assert watch.polls > 20 and any(c.startswith("Pod/") for c in watch.children_seen), watch.children_seen
    assert any(c.startswith("Deployment/") for c in watch.children_seen)
    assert f"NetworkPolicy/{NAME}" in watch.children_seen
    live = run["kube"].get(API, "InferenceService", NS, NAME)
    assert live["spec"] == crd_defaulted("InferenceService", run["applied"]["spec"])
    assert "replicas" not in live["spec"] and live["metadata"]["generation"] == 1
    assert live["metadata"]["labels"] == {INSTANCE: "serving"}
    decision = scaled["status"]["lastScaleDecision"]
    assert (decision["from"], decision["to"]) == (1, 2)
    dep = run["kube"].get("apps/v1", "Deployment", NS, NAME)
    assert dep["spec"]["replicas"] == 2  # the decision lives on the Deployment


def test_argo_health_of_the_service(run, argo_health) -> None:  # noqa: ANN001
    healths = run["watch"].healths
    assert healths[0] == "Progressing" and healths[-1] == "Healthy", healths
    assert "Degraded" not in healths, healths
