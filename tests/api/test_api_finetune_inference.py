"""FinetuneJob and InferenceService models: samples parse with the documented defaults, wire
form round-trips, and the cross-field rules of each (table) are enforced by the typed model
with the field named."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml
from llmops.api.errors import ApiValidationError
from llmops.api.finetune import parse_finetune_job
from llmops.api.inference import InferenceServiceSpec, parse_inference_service

SAMPLES = pathlib.Path(__file__).resolve().parents[2] / "manifests" / "samples"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((SAMPLES / name).read_text())


def test_finetune_defaults() -> None:
    job = parse_finetune_job(load("finetunejob-minimal.yaml"))
    assert job.spec.method.type.value == "lora" and job.spec.method.quantization.value == "none"
    assert job.spec.output.mode.value == "adapter" and job.spec.base_model.allow_pickle is False
    assert job.spec.base_model.trust_remote_code is False
    assert job.spec.hyperparameters.max_steps == 1000 and job.spec.nodes == 1


def test_inference_defaults_and_round_trip() -> None:
    svc = parse_inference_service(load("inferenceservice-minimal.yaml"))
    assert svc.spec.min_replicas == 1 and svc.spec.model.format.value == "safetensors"
    assert svc.spec.model.trust_remote_code is False and svc.spec.replicas is None
    assert svc.spec.autoscaling is None
    full = parse_inference_service(load("inferenceservice-full.yaml"))
    wire = full.spec.wire()
    assert InferenceServiceSpec.model_validate(wire).wire() == wire
    assert [a["name"] for a in wire["adapters"]] == ["legal", "support"]


def test_scale_decision_uses_from_on_the_wire() -> None:
    body = load("inferenceservice-minimal.yaml")
    body["status"] = {
        "lastScaleDecision": {"time": "2026-01-01T00:00:00Z", "from": 1, "to": 3, "signal": "queue", "value": 9.0,
                              "reason": "queue above target"}
    }
    svc = parse_inference_service(body)
    assert svc.status.last_scale_decision is not None and svc.status.last_scale_decision.from_ == 1
    assert svc.status.wire()["lastScaleDecision"]["from"] == 1


ISVC_RULES = [
    ("pickle needs flag", {"model": {"uri": "s3://bkt/m", "format": "pickle"}}, "spec.model", "allowPickle"),
    ("pickle with flag ok", {"model": {"uri": "s3://bkt/m", "format": "pickle", "allowPickle": True}}, None, None),
    ("zero min without opt-in", {"minReplicas": 0}, "spec", "scale-to-zero is opt-in"),
    ("zero min with opt-in ok", {"minReplicas": 0, "autoscaling": {"scaleToZero": {"enabled": True}}}, None, None),
    ("tp larger than gpus", {"resources": {"gpus": 1}, "engine": {"tensorParallelSize": 2}}, "spec", "tensorParallelSize"),
    ("cache claim with size", {"cache": {"claimName": "c", "size": "10Gi"}}, "spec.cache", "claimName"),
    ("rollout stuck", {"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "spec.rollout", "both be 0"),
    ("oci model ok", {"model": {"uri": "oci://registry.example.com/models/m:1"}}, None, None),
]


@pytest.mark.parametrize(("patch", "path", "text"), [r[1:] for r in ISVC_RULES], ids=[r[0] for r in ISVC_RULES])
def test_inference_rules(patch: dict[str, Any], path: str | None, text: str | None) -> None:
    body = load("inferenceservice-minimal.yaml")
    body["spec"].update(patch)
    if path is None:
        parse_inference_service(body)
        return
    with pytest.raises(ApiValidationError) as exc:
        parse_inference_service(body)
    assert any(p == path and text in m for p, m in exc.value.errors), exc.value.errors


FTJ_RULES = [
    ("full with lora settings", {"method": {"type": "full", "lora": {"r": 8}}}, "spec.method", "lora settings"),
    ("quantization without qlora", {"method": {"type": "lora", "quantization": "4bit"}}, "spec.method", "only supported with type qlora"),
    ("hf without revision", {"baseModel": {"uri": "hf://org/m"}}, "spec.baseModel", "revision is required"),
    ("neither steps nor epochs", {"hyperparameters": {}}, "spec.hyperparameters", "exactly one of maxSteps, epochs"),
    ("qlora 4bit ok", {"method": {"type": "qlora", "quantization": "4bit"}}, None, None),
]


@pytest.mark.parametrize(("patch", "path", "text"), [r[1:] for r in FTJ_RULES], ids=[r[0] for r in FTJ_RULES])
def test_finetune_rules(patch: dict[str, Any], path: str | None, text: str | None) -> None:
    body = load("finetunejob-minimal.yaml")
    body["spec"].update(patch)
    if path is None:
        parse_finetune_job(body)
        return
    with pytest.raises(ApiValidationError) as exc:
        parse_finetune_job(body)
    assert any(p == path and text in m for p, m in exc.value.errors), exc.value.errors
