"""Golden tests of `llmops render`: a 4-node x 8-GPU job with RDMA on each gang backend.

The goldens in render/ are reviewed by hand. Regenerate after an intended change with
``LLMOPS_UPDATE_GOLDEN=1 pytest tests/golden`` and review the diff; otherwise any
difference fails the test. The CLI path is checked against the same goldens.
"""

from __future__ import annotations

import os
import pathlib

import pytest
import yaml
from llmops.cli import main
from llmops.render import BACKEND_CHOICES, dump, render_documents

HERE = pathlib.Path(__file__).parent
CR = HERE / "trainingjob-4x8-rdma.yaml"
UPDATE = os.environ.get("LLMOPS_UPDATE_GOLDEN") == "1"


def golden(backend: str) -> pathlib.Path:
    return HERE / "render" / f"{backend}.yaml"


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
def test_render_matches_golden(backend):
    text = dump(render_documents(yaml.safe_load(CR.read_text()), attempt=0, backend=backend))
    path = golden(backend)
    if UPDATE:
        path.write_text(text)
    assert path.exists(), f"missing golden {path}; run with LLMOPS_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"render output for {backend} differs from {path.name}; review and regenerate"


@pytest.mark.parametrize("backend", BACKEND_CHOICES)
def test_golden_is_what_a_4x8_rdma_gang_needs(backend):
    docs = list(yaml.safe_load_all(golden(backend).read_text()))
    pods = [d for d in docs if d["kind"] == "Pod"]
    assert len(pods) == 4
    for p in pods:
        c = p["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == "8" and c["resources"]["limits"]["rdma/ib"] == "8"
        assert c["securityContext"]["capabilities"]["add"] == ["IPC_LOCK"]
        assert p["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] == "ib-net-0,ib-net-1"
    groups = [d for d in docs if d["kind"] == "PodGroup"]
    assert len(groups) == (1 if backend in ("native", "volcano", "coscheduling") else 0)


def test_cli_prints_the_golden(capsys):
    assert main(["render", "-f", str(CR), "--backend", "kueue"]) == 0
    assert capsys.readouterr().out == golden("kueue").read_text()


def test_cli_attempt_flag_renames_pods(capsys):
    assert main(["render", "-f", str(CR), "--backend", "none", "--attempt", "3", "--resume-from", "step-00001000"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "Pod"]
    assert names == [f"llama-pretrain-w{r}-a3" for r in range(4)]


def test_cli_rejects_an_invalid_cr(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(CR.read_text().replace("nodes: 4", "nodes: 0"))
    assert main(["render", "-f", str(bad)]) == 1
    assert "spec.nodes" in capsys.readouterr().err


SAMPLES = HERE.parents[1] / "manifests" / "samples"


def test_cli_renders_a_finetunejob_as_its_trainingjob_and_that_jobs_children(capsys):
    assert main(["render", "-f", str(SAMPLES / "finetunejob-minimal.yaml")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    (tj,) = [d for d in docs if d["kind"] == "TrainingJob"]
    assert tj["metadata"]["ownerReferences"][0]["kind"] == "FinetuneJob"
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    spec = yaml.safe_load(env["LLMOPS_FINETUNE_SPEC"])  # the FinetuneJob spec the runtime reads (JSON)
    assert spec["baseModel"]["uri"] == yaml.safe_load((SAMPLES / "finetunejob-minimal.yaml").read_text())["spec"]["baseModel"]["uri"]
    assert "llmops_runtime.finetune" in " ".join(pod["spec"]["containers"][0]["command"] + pod["spec"]["containers"][0].get("args", []))


def test_cli_renders_an_inferenceservice(capsys):
    assert main(["render", "-f", str(SAMPLES / "inferenceservice-minimal.yaml")]) == 0
    docs = {d["kind"]: d for d in yaml.safe_load_all(capsys.readouterr().out)}
    assert {"Deployment", "Service", "PodDisruptionBudget"} <= set(docs)
    server = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = " ".join(server.get("command", []) + server.get("args", []))
    assert "--load-format safetensors" in args and "--trust-remote-code" not in args


def test_cli_names_the_kinds_it_renders(tmp_path, capsys):
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["render", "-f", str(other)]) == 2
    assert "TrainingJob, FinetuneJob, InferenceService" in capsys.readouterr().err
