"""Issue 19 on both clusters (emulated and the real v1.36 control plane): what a pod would
refuse is refused when the custom resource is applied, with a 422 naming the field, instead
of failing later when the operator creates the pods; and `kubectl get llmops` shows the STATE
column of every kind. The CRDs only: no operator, no nodes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from llmops.kube.client import ApiError, Kube, load_api_client
from llmops.sandbox.run import install_project_crds

API = "llmops.dev/v1alpha1"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kube(kubeconfig, fresh_namespace):  # noqa: ANN001
    install_project_crds(kubeconfig)
    client = Kube(load_api_client(str(kubeconfig)))
    client.namespace = fresh_namespace  # type: ignore[attr-defined]
    return client


def training_job(namespace: str, name: str, **template: object) -> dict:
    spec = {"image": "llmops/trainer:dev", "command": ["python", "-c", "pass"], "nodes": 1,
            "resources": {"gpus": 0, "cpu": "100m", "memory": "64Mi"}, "template": template}
    return {"apiVersion": API, "kind": "TrainingJob", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


#: (what, template, the field the 422 names): one CR each, all refused.
REFUSED = [
    ("space-in-key", {"labels": {"bad key!": "x"}}, "spec.template.labels"),
    ("bad-value", {"labels": {"team": "not ok!"}}, "spec.template.labels"),
    ("dash-first", {"labels": {"-starts-with-dash": "x"}}, "spec.template.labels"),
    ("upper-prefix", {"labels": {"Upper.Example.com/team": "x"}}, "spec.template.labels"),  # a DNS prefix is lower case
    ("two-slashes", {"annotations": {"a/b/c": "x"}}, "spec.template.annotations"),
    ("selector-key", {"nodeSelector": {"gpu type": "a100"}}, "spec.template.nodeSelector"),
    ("long-name", {"labels": {"x" * 64: "v"}}, "spec.template.labels"),  # a name part of 64
    ("env-name", {"env": [{"name": "1ST", "value": "x"}]}, "spec.template.env[0].name"),
    ("volume-name", {"volumes": [{"name": "Data_Vol", "emptyDir": {}}]}, "spec.template.volumes[0].name"),
    ("mount-of-no-volume", {"volumes": [{"name": "data", "emptyDir": {}}], "volumeMounts": [{"name": "date", "mountPath": "/data"}]},
     "spec.template.volumeMounts"),
    ("quantity", {"volumes": [{"name": "data", "emptyDir": {"sizeLimit": "lots"}}]}, "spec.template.volumes[0].emptyDir.sizeLimit"),
]


def test_keys_and_values_pods_refuse_are_refused_at_admission(kube: Kube) -> None:
    """Every case on one installation of the CRDs (installing them is the slow part); each
    mismatch is reported by name."""
    wrong = []
    for what, template, field in REFUSED:
        try:
            kube.create(training_job(kube.namespace, "bad", **template))  # type: ignore[attr-defined]
            wrong.append(f"{what}: admitted")
        except ApiError as refused:
            if refused.status != 422 or field not in refused.message:
                wrong.append(f"{what}: {refused.status} {refused.message}")
    assert not wrong, wrong


def test_qualified_keys_and_empty_values_are_admitted(kube: Kube) -> None:
    ns = kube.namespace  # type: ignore[attr-defined]
    template = {"labels": {"team": "ml-infra", "example.com/owner": "a.b_c", "app.kubernetes.io/part-of": "", "x" * 63: "v"},
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}}],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "dshm", "mountPath": "/dev/shm"}],
                "annotations": {"example.com/note": "free text, spaces and all!"},
                "nodeSelector": {"kubernetes.io/arch": "amd64"}}
    created = kube.create(training_job(ns, "good", **template))
    assert created["spec"]["template"]["labels"]["team"] == "ml-infra"


def test_kubectl_get_llmops_shows_the_state_of_every_kind(kube: Kube, kubeconfig) -> None:  # noqa: ANN001
    """The STATE column of all three kinds as kubectl prints it (the printer columns are the
    CRDs'; the state is patched in by hand here, as the operator would write it)."""
    ns = kube.namespace  # type: ignore[attr-defined]
    states = {"TrainingJob": "Restarting", "FinetuneJob": "Queued", "InferenceService": "Loading"}
    for kind in states:
        sample = yaml.safe_load((ROOT / f"manifests/samples/{kind.lower()}-minimal.yaml").read_text())
        sample["metadata"] = {"name": f"s-{kind.lower()}", "namespace": ns}
        kube.create(sample)
        kube.patch_status(API, kind, ns, f"s-{kind.lower()}", {"state": states[kind], "stateReason": "ByHand"})
    out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "-n", ns, "get", "llmops"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    tables = [t.splitlines() for t in out.strip().split("\n\n")]
    assert len(tables) == 3, out
    for kind, state in states.items():
        table = next(t for t in tables if t[1].split()[0] == f"{kind.lower()}.llmops.dev/s-{kind.lower()}")
        assert table[0].split()[:2] == ["NAME", "STATE"], out
        assert table[1].split()[1] == state, out
