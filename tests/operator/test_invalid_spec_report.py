"""The one InvalidSpec report every kind uses (llmops.handlers.invalid), against the emulated
API server with the project's CRDs: a job gets Failed=True InvalidSpec naming the fields and
counts as Failed in llmops_jobs, an InferenceService Ready=False; one Event per generation, and
a second report of the same generation writes nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml
from llmops.api.errors import ApiValidationError
from llmops.controller import Context
from llmops.handlers.invalid import report_invalid
from llmops.kube.client import Kube, load_api_client
from llmops.metrics import Metrics
from llmops.sandbox.node.client import Kube as SandboxClient
from llmops.sandbox.run import CRD_DIR, install_crds

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
KINDS = {"TrainingJob": "trainingjob", "FinetuneJob": "finetunejob", "InferenceService": "inferenceservice"}


@pytest.fixture
def kube(kubeconfig) -> Kube:  # noqa: ANN001
    installer = SandboxClient(str(kubeconfig))
    install_crds(installer, CRD_DIR)
    installer.close()
    return Kube(load_api_client(str(kubeconfig)))


@pytest.mark.parametrize("kind", list(KINDS))
def test_report_invalid(kube: Kube, fresh_namespace: str, kind: str) -> None:
    sample = yaml.safe_load((SAMPLES / f"{KINDS[kind]}-minimal.yaml").read_text())
    body = kube.create({**sample, "metadata": {"name": "bad", "namespace": fresh_namespace}})
    m = Metrics()
    ctx = Context(kube=kube, metrics=m)
    exc = ApiValidationError(kind, "bad", [("spec.nodes", "must be >= 1"), ("spec.image", "must not be empty")])
    report_invalid(ctx, kind, body, exc, NOW)
    got = kube.get("llmops.dev/v1alpha1", kind, fresh_namespace, "bad")
    cond = {c["type"]: c for c in got["status"]["conditions"]}
    want_type, want_status = ("Ready", "False") if kind == "InferenceService" else ("Failed", "True")
    assert cond[want_type]["status"] == want_status and cond[want_type]["reason"] == "InvalidSpec"
    assert cond[want_type]["message"] == "spec.nodes: must be >= 1; spec.image: must not be empty"
    assert got["status"]["observedGeneration"] == got["metadata"]["generation"]
    rv = got["metadata"]["resourceVersion"]
    report_invalid(ctx, kind, got, exc, NOW)  # the same generation again: nothing written
    assert kube.get("llmops.dev/v1alpha1", kind, fresh_namespace, "bad")["metadata"]["resourceVersion"] == rv
    events = [e for e in kube.list("v1", "Event", fresh_namespace) if e["involvedObject"].get("name") == "bad"]
    assert [e["reason"] for e in events] == ["InvalidSpec"]
    jobs = {s.labels["condition"]: s.value for fam in m.registry.collect() if fam.name == "llmops_jobs" for s in fam.samples
            if s.labels["kind"] == kind}
    assert jobs == ({} if kind == "InferenceService" else {"Failed": 1.0})
