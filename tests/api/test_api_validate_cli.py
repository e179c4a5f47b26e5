"""`llmops validate`: every sample in manifests/samples validates; a table of INVALID custom
resources (one per rule of the API) each fails, and the message names the offending field.
Both halves run: the generated CRD schema + CEL (what the API server checks) and the typed
model (what the operator parses)."""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest
import yaml
from llmops.cli import main
from llmops.validate import check

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "manifests" / "samples" / name).read_text())


def tj(**spec: Any) -> dict[str, Any]:
    body = load("trainingjob-minimal.yaml")
    body["spec"].update(copy.deepcopy(spec))
    return body


def lsvc(**spec: Any) -> dict[str, Any]:
    body = load("inferenceservice-minimal.yaml")
    body["spec"].update(copy.deepcopy(spec))
    return body


def ftj(**spec: Any) -> dict[str, Any]:
    body = load("finetunejob-minimal.yaml")
    body["spec"].update(copy.deepcopy(spec))
    return body


def renamed(body: dict[str, Any], name: str) -> dict[str, Any]:
    body["metadata"]["name"] = name
    return body


@pytest.mark.parametrize("path", SAMPLES, ids=[p.name for p in SAMPLES])
def test_samples_validate(path: pathlib.Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        assert check(doc) == []
    assert main(["validate", "-q", "-f", str(path)]) == 0


def test_samples_cover_every_kind() -> None:
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in SAMPLES}
    assert kinds == {"TrainingJob", "FinetuneJob", "InferenceService"}


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("negative gpus", tj(resources={"gpus": -1}), "spec.resources.gpus"),
    ("fractional gpus", tj(resources={"gpus": 1.5}), "spec.resources.gpus"),
    ("gpus as string", tj(resources={"gpus": "2"}), "spec.resources.gpus"),
    ("zero nodes", tj(nodes=0), "spec.nodes"),
    ("minNodes > nodes", tj(nodes=2, minNodes=3), "spec.minNodes"),
    ("unknown spec field", tj(gpus=8), 'unknown field "spec.gpus"'),
    ("unknown nested field", tj(resources={"gpu": 1}), 'unknown field "spec.resources.gpu"'),
    ("reserved env name", tj(template={"env": [{"name": "MASTER_ADDR", "value": "x"}]}), "spec.template.env[0].name"),
    ("reserved env prefix", tj(template={"env": [{"name": "TORCHELASTIC_RUN_ID", "value": "x"}]}), "spec.template.env[0].name"),
    ("duplicate env", tj(template={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}), "spec.template.env[1]"),
    ("name too long for child objects", renamed(tj(), "a" * 41), "metadata.name"),
    ("ftj name too long", renamed(ftj(), "f" * 35), "metadata.name"),
    ("lsvc name too long", renamed(lsvc(), "s" * 46), "metadata.name"),
    ("name not a DNS label", renamed(tj(), "Bad_Name"), "metadata.name"),
    ("pickle without the flag", lsvc(model={"uri": "s3://ml-models/m", "format": "pickle"}), "spec.model.allowPickle"),
    ("scale-to-zero without opt-in", lsvc(minReplicas=0), "spec.minReplicas"),
    ("replicas 0 without opt-in", lsvc(replicas=0), "spec.replicas"),
    ("minReplicas > maxReplicas", lsvc(minReplicas=3, maxReplicas=2), "spec.minReplicas"),
    ("cross-namespace secret ref",
     tj(checkpoint={"uri": "s3://bkt/c", "everySteps": 5, "credentials": {"secretName": "s", "namespace": "other"}}),
     'unknown field "spec.checkpoint.credentials.namespace"'),
    ("cross-namespace adapter ref", lsvc(adapters=[{"name": "a", "fromFinetuneJob": "f", "namespace": "other"}]),
     'unknown field "spec.adapters[0].namespace"'),
    ("cross-namespace serve ref", ftj(serve={"inferenceServiceName": "x", "namespace": "other"}), 'unknown field "spec.serve.namespace"'),
    ("bad gang backend", tj(scheduling={"gang": {"backend": "slurm"}}), 'spec.scheduling.gang.backend: Unsupported value: "slurm"'),
    ("bad quantity", tj(resources={"memory": "64 GB"}), "spec.resources.memory"),
    ("checkpoint without trigger", tj(checkpoint={"uri": "s3://bkt/c"}), "spec.checkpoint"),
    ("checkpoint on http", tj(checkpoint={"uri": "http://x/y", "everySteps": 1}), "spec.checkpoint.uri"),
    ("hf model without revision", lsvc(model={"uri": "hf://org/model"}), "spec.model.revision"),
    ("adapter with two sources", lsvc(adapters=[{"name": "a", "uri": "s3://bkt/a", "fromFinetuneJob": "f"}]), "spec.adapters[0]"),
    ("extra arg not allowlisted", lsvc(engine={"extraArgs": [{"name": "--trust-remote-code"}]}), "spec.engine.extraArgs[0].name"),
    ("kvCache target > 1", lsvc(autoscaling={"signal": "kvCache", "target": 5}), "spec.autoscaling.target"),
    ("qlora without quantization", ftj(method={"type": "qlora"}), "spec.method"),
    ("both maxSteps and epochs", ftj(hyperparameters={"maxSteps": 10, "epochs": 1}), "spec.hyperparameters"),
    ("dataset without field", ftj(dataset={"uri": "s3://bkt/d.jsonl"}), "spec.dataset"),
    ("missing image", {**tj(), "spec": {k: v for k, v in tj()["spec"].items() if k != "image"}}, "spec.image: Required value"),
    ("wrong kind", {**tj(), "kind": "PyTorchJob"}, "kind: Unsupported value"),
]


@pytest.mark.parametrize(("body", "needle"), [r[1:] for r in INVALID], ids=[r[0] for r in INVALID])
def test_invalid_fixture_names_field(body: dict[str, Any], needle: str) -> None:
    problems = check(body)
    assert problems, "expected the resource to be rejected"
    assert any(needle in p for p in problems), problems


def test_cli_exit_code_and_output(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump_all([tj(nodes=0), load("trainingjob-minimal.yaml")]))
    assert main(["validate", "-f", str(path)]) == 1
    out = capsys.readouterr().out
    assert "TrainingJob.llmops.dev/minimal: spec.nodes: Invalid value: 0: spec.nodes in body should be greater than or equal to 1" in out
    assert "valid" in out  # the second document is fine


def test_transition_rule_freezes_topology_while_running() -> None:
    old = tj(nodes=2)
    old["status"] = {
        "conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }
    new = copy.deepcopy(old)
    new["spec"]["nodes"] = 4
    assert any(p.startswith("spec.nodes: Forbidden: spec.nodes is immutable while the job is Running") for p in check(new, old=old))
    new_suspend = copy.deepcopy(old)
    new_suspend["spec"]["runPolicy"] = {"suspend": True}
    assert check(new_suspend, old=old) == []  # suspend stays mutable
    old["status"]["conditions"][0]["status"] = "False"
    assert check(new, old=old) == []  # not running: topology may change


PARSE = {"TrainingJob": "parse_training_job", "FinetuneJob": "parse_finetune_job", "InferenceService": "parse_inference_service"}


@pytest.mark.parametrize(
    ("body", "needle"), [r[1:] for r in INVALID if r[0] != "wrong kind"], ids=[r[0] for r in INVALID if r[0] != "wrong kind"]
)
def test_typed_model_agrees_with_schema(body: dict[str, Any], needle: str) -> None:
    """The operator's parser rejects everything admission rejects (no drift between the two)."""
    from llmops.api import finetune, inference, training
    from llmops.api.errors import ApiValidationError

    module = {"TrainingJob": training, "FinetuneJob": finetune, "InferenceService": inference}[body["kind"]]
    with pytest.raises(ApiValidationError):
        getattr(module, PARSE[body["kind"]])(body)


@pytest.mark.parametrize(
    ("cpu", "ok"), [(8, True), ("8", True), ("500m", True), ("1.5", True), (1.5, False), ("8 cores", False), (True, False)]
)
def test_quantities_are_int_or_string(cpu: Any, ok: bool) -> None:
    problems = check(tj(resources={"cpu": cpu}))
    assert (problems == []) == ok, problems
    if not ok:
        assert any("spec.resources.cpu" in p for p in problems)


@pytest.mark.parametrize(
    ("affinity", "ok"), [({"nodeAffinity": {}}, True), ({"podAntiAffinity": {"x": 1}}, True), ({"nodeAffinty": {}}, False)]
)
def test_affinity_keys(affinity: dict[str, Any], ok: bool) -> None:
    problems = check(tj(template={"affinity": affinity}))
    assert (problems == []) == ok, problems
    if not ok:
        assert any("spec.template.affinity.nodeAffinty" in p for p in problems), problems


def test_finetune_run_definition_frozen_while_running() -> None:
    old = ftj()
    old["status"] = {
        "conditions": [{"type": "Running", "status": "True", "reason": "Training", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }
    new = copy.deepcopy(old)
    new["spec"]["hyperparameters"]["maxSteps"] = 5
    assert any(p.startswith("spec.hyperparameters: Forbidden:") for p in check(new, old=old))
    new = copy.deepcopy(old)
    new["spec"]["runPolicy"] = {"suspend": True}
    assert check(new, old=old) == []
