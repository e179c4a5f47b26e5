"""parse_training_job: valid bodies parse with defaults resolved; each invalid body fails with
an ApiValidationError whose entries name the offending field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from llmops.api.errors import ApiValidationError
from llmops.api.training import NAME_MAX, TrainingJobSpec, parse_training_job


def make_training_job(name: str = "t", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"image": "llmops/trainer:dev", "command": ["python", "-m", "train"], "nodes": 2}
    base.update(spec)
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": name, "namespace": "ns"}, "spec": base}


def test_minimal_defaults() -> None:
    job = parse_training_job(make_training_job())
    assert job.spec.nodes == 2 and job.spec.launcher.value == "torchrun"
    assert job.spec.effective_procs_per_node() == 1
    assert job.spec.scheduling.gang.backend.value == "auto"
    assert job.status.conditions == []


def test_gpus_default_procs_per_node() -> None:
    job = parse_training_job(make_training_job(resources={"gpus": 8, "gpuResourceName": "amd.com/gpu"}))
    assert job.spec.effective_procs_per_node() == 8 and job.spec.world_size() == 16


@pytest.mark.parametrize(("spec_patch", "stage"), [
    ({}, None),
    ({"launcher": "deepspeed"}, 2),
    ({"launcher": "deepspeed", "deepspeed": {"zeroStage": 3}}, 3),
    ({"launcher": "deepspeed", "deepspeed": {"zeroStage": 1}}, 1),
])
def test_zero_stage_resolution(spec_patch: dict[str, Any], stage: int | None) -> None:
    assert parse_training_job(make_training_job(**spec_patch)).spec.zero_stage() == stage


def test_round_trip_wire_is_camel_case() -> None:
    body = make_training_job(minNodes=1, checkpoint={"uri": "s3://bkt/ckpt", "everySteps": 10}, runPolicy={"suspend": True})
    wire = parse_training_job(body).spec.wire()
    assert wire["minNodes"] == 1 and wire["checkpoint"]["everySteps"] == 10 and wire["runPolicy"]["suspend"] is True
    assert TrainingJobSpec.model_validate(wire).wire() == wire


INVALID = [
    ("negative gpus", {"resources": {"gpus": -1}}, "spec.resources.gpus"),
    ("fractional gpus", {"resources": {"gpus": 0.5}}, "spec.resources.gpus"),
    ("zero nodes", {"nodes": 0}, "spec.nodes"),
    ("minNodes > nodes", {"nodes": 2, "minNodes": 3}, "spec"),
    ("unknown field", {"nodez": 2}, "spec.nodez"),
    ("reserved env", {"template": {"env": [{"name": "WORLD_SIZE", "value": "1"}]}}, "spec.template.env[0].name"),
    ("reserved env prefix", {"template": {"env": [{"name": "LLMOPS_ATTEMPT", "value": "1"}]}}, "spec.template.env[0].name"),
    ("bad quantity", {"resources": {"memory": "lots"}}, "spec.resources.memory"),
    ("bad gang backend", {"scheduling": {"gang": {"backend": "x"}}}, "spec.scheduling.gang.backend"),
    ("checkpoint without trigger", {"checkpoint": {"uri": "s3://bkt/p"}}, "spec.checkpoint"),
    ("checkpoint bad uri", {"checkpoint": {"uri": "http://x", "everySteps": 1}}, "spec.checkpoint.uri"),
    ("cross-namespace secret", {"checkpoint": {"uri": "s3://bkt/p", "everySteps": 1, "credentials": {"secretName": "s", "namespace": "o"}}},
     "spec.checkpoint.credentials.namespace"),
    ("duplicate env", {"template": {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}, "spec.template"),
    ("mount of unknown volume", {"template": {"volumeMounts": [{"name": "data", "mountPath": "/d"}]}}, "spec.template"),
    ("empty command", {"command": []}, "spec.command"),
    ("deepspeed without its launcher", {"deepspeed": {"zeroStage": 2}}, "spec"),
    ("zero stage 4", {"launcher": "deepspeed", "deepspeed": {"zeroStage": 4}}, "spec.deepspeed.zeroStage"),
]


@pytest.mark.parametrize(("spec_patch", "path"), [(p, f) for _, p, f in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_names_field(spec_patch: dict[str, Any], path: str) -> None:
    body = make_training_job(**copy.deepcopy(spec_patch))
    with pytest.raises(ApiValidationError) as exc:
        parse_training_job(body)
    assert path in [p for p, _ in exc.value.errors], exc.value.errors
    assert path in str(exc.value)


@pytest.mark.parametrize(("name", "ok"), [("a" * NAME_MAX, True), ("a" * (NAME_MAX + 1), False), ("1abc", False), ("Abc", False)])
def test_name_rules(name: str, ok: bool) -> None:
    if ok:
        parse_training_job(make_training_job(name))
        assert len(f"{name}-worker-1023") <= 63
    else:
        with pytest.raises(ApiValidationError) as exc:
            parse_training_job(make_training_job(name))
        assert exc.value.errors[0][0] == "metadata.name"


def test_status_round_trip() -> None:
    body = make_training_job()
    body["status"] = {
        "conditions": [
            {"type": "Running", "status": "True", "reason": "AllPodsRunning", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
        "observedGeneration": 3,
        "attempt": 1,
        "restarts": {"total": 1, "counted": 0, "byCause": {"NodeLost": 1}},
        "progress": {"step": 10, "totalSteps": 40, "loss": 2.5, "tokensPerSecond": 100.0, "lastHeartbeat": "2026-01-01T00:01:00Z"},
        "checkpoint": {"id": "step-00000010", "step": 10, "uri": "s3://bkt/c/step-00000010", "time": "2026-01-01T00:01:00Z"},
        "resumedFromStep": 5,
        "gang": {"backend": "native", "name": "t"},
        "startTime": "2026-01-01T00:00:00Z",
    }
    job = parse_training_job(body)
    assert job.status.restarts.by_cause == {"NodeLost": 1} and job.status.gang is not None
    # the stored state is a summary the status recomputes from its conditions
    assert job.status.wire() == {**body["status"], "state": "Running", "stateReason": "AllPodsRunning"}
