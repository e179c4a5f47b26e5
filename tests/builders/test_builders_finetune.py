"""FinetuneJob builder: the child TrainingJob (name, owner, labels, the runtime's spec JSON
reaching the pods as LLMOPS_FINETUNE_SPEC, pass-through sections, TTL kept by the parent,
totalSteps, PVC mounts where the runtime resolves pvc:// URIs, a user's own mount winning)
and the InferenceService for serve.create (base model, not owned). Pure: same input, same
bytes; every body parses through the real models."""

from __future__ import annotations

import json

import pytest
from cr_factories import EXAMPLE_UID, make_finetune_job
from llmops.api import labels as L
from llmops.api import runtime_env as E
from llmops.api.finetune import FinetuneJobSpec
from llmops.api.inference import parse_inference_service
from llmops.api.training import parse_training_job
from llmops.builders import finetune as B
from llmops.builders.training import BuildInputs, build_training_children


def tj_of(builder):  # noqa: ANN001, ANN201
    return B.build_training_job(builder.build())


def pods(tj: dict) -> list[dict]:
    body = {**tj, "metadata": {**tj["metadata"], "uid": "tj-uid"}}
    return [o for o in build_training_children(parse_training_job(body), BuildInputs()) if o["kind"] == "Pod"]


def test_child_is_an_owned_training_job_named_after_the_parent() -> None:
    tj = tj_of(make_finetune_job("legal"))
    meta = tj["metadata"]
    assert (tj["apiVersion"], tj["kind"], meta["name"], meta["namespace"]) == ("llmops.dev/v1alpha1", "TrainingJob", "legal-train", "ml")
    assert meta["ownerReferences"] == [{"apiVersion": "llmops.dev/v1alpha1", "blockOwnerDeletion": True, "controller": True,
                                        "kind": "FinetuneJob", "name": "legal", "uid": EXAMPLE_UID}]
    assert meta["labels"] == {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.PART_OF: "FinetuneJob", L.OWNER_NAME: "legal"}
    parse_training_job({**tj, "metadata": {**meta, "uid": "x"}})  # a valid TrainingJob


def test_longest_name_fits_the_training_job_bound() -> None:
    from llmops.api import finetune as F
    from llmops.api import training as T

    name = "a" * F.NAME_MAX
    assert B.training_job_name(name) == name + "-train" and len(name + "-train") <= T.NAME_MAX
    assert len(B.training_job_name("b" * 60)) <= T.NAME_MAX  # bounded even beyond the API's limit


def test_runtime_spec_reaches_every_worker_as_the_reserved_env() -> None:
    job = make_finetune_job("ft").spec(nodes=2).build()
    tj = B.build_training_job(job)
    raw = tj["metadata"]["annotations"][L.FINETUNE_SPEC_ANNOTATION]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))  # compact, stable
    assert FinetuneJobSpec.model_validate(json.loads(raw)) == job.spec  # what the runtime's load_spec reads
    envs = [{e["name"]: e.get("value") for e in p["spec"]["containers"][0]["env"]} for p in pods(tj)]
    assert len(envs) == 2 and all(env[E.FINETUNE_SPEC] == raw for env in envs)
    assert tj["spec"]["command"] == B.ENTRY
    assert pods(tj)[0]["spec"]["containers"][0]["command"] == ["python", "-m", "llmops_runtime.launch", "--", *B.ENTRY]
    assert E.FINETUNE_SPEC not in {e["name"] for e in tj["spec"].get("template", {}).get("env", [])}  # reserved there


def test_plain_training_jobs_get_no_finetune_env() -> None:
    from cr_factories import make_training_job

    job = make_training_job("t").build()
    children = build_training_children(job, BuildInputs())
    pod = next(o for o in children if o["kind"] == "Pod")
    assert E.FINETUNE_SPEC not in {e["name"] for e in pod["spec"]["containers"][0]["env"]}


def test_pass_through_sections_and_defaults() -> None:
    b = make_finetune_job("ft").spec(
        nodes=2, procsPerNode=4, image="registry/trainer:2",
        resources={"gpus": 4, "memory": "200Gi"},
        scheduling={"gang": {"backend": "volcano"}, "queueName": "q"},
        checkpoint={"uri": "s3://ck/ft", "everySteps": 50},
        failurePolicy={"maxRestarts": 7},
        runPolicy={"suspend": True, "activeDeadlineSeconds": 3600, "ttlSecondsAfterFinished": 60},
        template={"nodeSelector": {"gpu": "h100"}, "env": [{"name": "NCCL_DEBUG", "value": "WARN"}]},
    )
    spec = tj_of(b)["spec"]
    assert spec["image"] == "registry/trainer:2" and spec["nodes"] == 2 and spec["procsPerNode"] == 4
    assert spec["resources"] == {"gpus": 4, "gpuResourceName": "nvidia.com/gpu", "memory": "200Gi"}
    assert spec["scheduling"]["gang"]["backend"] == "volcano" and spec["scheduling"]["queueName"] == "q"
    assert spec["checkpoint"]["uri"] == "s3://ck/ft" and spec["failurePolicy"]["maxRestarts"] == 7
    # the parent keeps its TTL (it deletes the child itself, after reading the child's report)
    assert spec["runPolicy"] == {"suspend": True, "activeDeadlineSeconds": 3600}
    assert spec["template"]["nodeSelector"] == {"gpu": "h100"} and spec["template"]["env"] == [{"name": "NCCL_DEBUG", "value": "WARN"}]
    assert spec["totalSteps"] == 12
    default = tj_of(make_finetune_job("ft").spec(hyperparameters={"maxSteps": None, "epochs": 2.0}))["spec"]
    assert default["image"] == B.DEFAULT_TRAINER_IMAGE and "totalSteps" not in default and "procsPerNode" not in default
    assert "checkpoint" not in default


@pytest.mark.parametrize(
    ("uris", "checkpoint", "expected"),
    [
        # model, dataset, output on three claims: inputs read-only
        (("pvc://models/m", "pvc://data/d.jsonl", "pvc://out/a"), None, [("models", True), ("data", True), ("out", False)]),
        # dataset and output share a claim: read-write once
        (("pvc://models/m", "pvc://work/d.jsonl", "pvc://work/a"), None, [("models", True), ("work", False)]),
        # the checkpoint's claim is mounted by the TrainingJob builder
        (("pvc://models/m", "s3://bk/d.jsonl", "pvc://ck/out"), "pvc://ck/runs", [("models", True)]),
        # nothing on PVCs
        (("s3://bk/m", "s3://bk/d.jsonl", "s3://bk/out"), None, []),
    ],
)
def test_pvc_claims(uris, checkpoint, expected) -> None:  # noqa: ANN001
    model, data, out = uris
    b = make_finetune_job("ft").spec(baseModel={"uri": model}, dataset={"uri": data}, output={"uri": out})
    if checkpoint:
        b = b.spec(checkpoint={"uri": checkpoint, "everySteps": 10})
    assert B.pvc_claims(b.build()) == expected


def test_pvc_mounts_are_where_the_runtime_resolves_pvc_uris() -> None:
    b = make_finetune_job("ft").spec(checkpoint={"uri": "pvc://out/ckpt", "everySteps": 4})
    pod = pods(tj_of(b))[0]
    mounts = {m["mountPath"]: m for m in pod["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    for claim, read_only in (("models", True), ("data", True), ("out", False)):
        m = mounts[f"/mnt/pvc/{claim}"]  # runtime: $LLMOPS_PVC_ROOT (default /mnt/pvc)/<claim>/<path>
        assert volumes[m["name"]]["persistentVolumeClaim"]["claimName"] == claim
        assert bool(m.get("readOnly")) is read_only
    assert sum(1 for m in mounts if m == "/mnt/pvc/out") == 1  # shared with the checkpoint: mounted once
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env[E.PVC_ROOT] == "/mnt/pvc"


def test_a_users_own_mount_of_the_path_wins() -> None:
    b = make_finetune_job("ft").spec(template={
        "volumes": [{"name": "mine", "persistentVolumeClaim": {"claimName": "data-v2"}}],
        "volumeMounts": [{"name": "mine", "mountPath": "/mnt/pvc/data"}],
    })
    tmpl = tj_of(b)["spec"]["template"]
    assert [m["name"] for m in tmpl["volumeMounts"] if m["mountPath"] == "/mnt/pvc/data"] == ["mine"]
    assert {v["name"] for v in tmpl["volumes"]} == {"mine", "llmops-pvc-models", "llmops-pvc-out"}


def test_deterministic_and_needs_a_uid() -> None:
    b = make_finetune_job("ft").serve("svc", create=True)
    assert json.dumps(tj_of(b), sort_keys=True) == json.dumps(tj_of(b), sort_keys=True)
    b.body["metadata"].pop("uid")
    with pytest.raises(ValueError, match="uid"):
        tj_of(b)


def test_serve_create_builds_an_unowned_service_for_the_base_model() -> None:
    b = (make_finetune_job("ft").serve("llama", adapter="legal", create=True)
         .spec(baseModel={"uri": "hf://org/llama", "revision": "abc123", "manifestSha256": "a" * 64}, resources={"gpus": 2}))
    svc = B.build_inference_service(b.build())
    meta = svc["metadata"]
    assert (svc["kind"], meta["name"], meta["namespace"]) == ("InferenceService", "llama", "ml")
    assert "ownerReferences" not in meta and L.PART_OF not in meta["labels"] and L.MANAGED_BY not in meta["labels"]
    assert meta["labels"] == {L.CREATED_BY_FINETUNE_JOB: "ft"}
    assert "annotations" not in meta
    assert svc["spec"]["model"] == {"uri": "hf://org/llama", "revision": "abc123", "manifestSha256": "a" * 64}
    assert svc["spec"]["resources"] == {"gpus": 1, "gpuResourceName": "nvidia.com/gpu"}
    assert "adapters" not in svc["spec"]  # the adapter comes through the publish contract
    assert svc["spec"]["engine"] == {"lora": "enabled"}  # later finetunes publish without a restart
    parse_inference_service({**svc, "metadata": {**meta, "uid": "u"}})
    assert B.adapter_name(b.build()) == "legal"
    assert B.adapter_name(make_finetune_job("ft").serve("llama").build()) == "ft"
