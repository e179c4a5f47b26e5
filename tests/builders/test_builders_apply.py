"""Built children are acceptable to the API server: the TrainingJob CRD is installed, a job
created, and every child of its first attempt server-side applied (emulated API server, or
a real cluster via LLMOPS_TEST_KUBECONFIG). Backend none: the emulator serves no PodGroups."""

from __future__ import annotations

import pathlib

import yaml
from cr_factories import example_job
from llmops.api.scheduling import GangBackend
from llmops.api.training import parse_training_job
from llmops.builders import BuildInputs, build_training_children
from llmops.kube.client import Kube

CRD = pathlib.Path(__file__).resolve().parents[2] / "crds" / "llmops.dev_trainingjobs.yaml"


def test_children_apply_cleanly(kube_client, fresh_namespace, eventually):
    kube = Kube(kube_client, discovery_ttl=0)  # the CRD becomes served during the test
    kube.apply(yaml.safe_load(CRD.read_text()))
    # The example names this class; admission refuses pods of a class the cluster lacks, so a
    # user creates it first, as here (cluster-scoped: applying it again changes nothing).
    kube.apply({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "training-high"}, "value": 1000,
                "description": "training jobs of the builder tests"})
    body = example_job("llama", backend="none").body
    body["metadata"] = {"name": "llama", "namespace": fresh_namespace}
    created = eventually(lambda: kube.apply(body), timeout=30)
    job = parse_training_job(created)
    assert job.metadata.uid

    desired = build_training_children(job, BuildInputs(attempt=0, backend=GangBackend.NONE, resume_from="step-00000200"))
    for obj in desired:
        out = kube.apply(obj)
        assert out["metadata"]["ownerReferences"][0]["uid"] == job.metadata.uid
    pods = kube.list("v1", "Pod", fresh_namespace)
    assert sorted(p["metadata"]["name"] for p in pods) == [f"llama-w{r}-a0" for r in range(4)]
    # applying the same objects again leaves their content unchanged (deterministic builders);
    # status is not ours (a real scheduler reports the pods unschedulable meanwhile)
    def content(obj):
        meta = {k: v for k, v in obj["metadata"].items() if k not in ("resourceVersion", "managedFields")}
        return {**obj, "metadata": meta, "status": None}

    before = {p["metadata"]["name"]: content(p) for p in pods}
    for obj in build_training_children(job, BuildInputs(attempt=0, backend=GangBackend.NONE, resume_from="step-00000200")):
        kube.apply(obj)
    after = {p["metadata"]["name"]: content(p) for p in kube.list("v1", "Pod", fresh_namespace)}
    assert after == before
