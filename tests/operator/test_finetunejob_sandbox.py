"""FinetuneJob end to end on the sandbox: the real operator process, the emulated API server,
process node agents running the real finetune runtime (a tiny random-init Llama, a jsonl
dataset and the outputs on sandbox PVCs, checkpoints on the sandbox's S3 server).

Covers (issue 6 acceptance at operator level):

* a LoRA FinetuneJob on 2 nodes whose worker is SIGKILLed mid-run: the child TrainingJob
  restarts the gang once and resumes from a committed checkpoint; the per-step losses
  (hex floats, rank 0's log) are bitwise identical to an uninterrupted reference
  FinetuneJob's; the job Succeeds with status.evaluation (validation loss below the base
  model's), status.output (uri, manifest sha256 that verifies against the published files,
  size, base revision) and status.dataset filled from rank 0's progress report;
* ``serve.create``: after success the InferenceService is created for the base model, not
  owned by the job, and the job reports served + Published;
* bad input (a dataset example without ``textField``): the job Fails at once with the
  runtime's reason ``DatasetFieldMissing`` and detail, no restart, nothing at the output;
* ``kubectl get ftj`` shows the facts.

The reference and the bad job run side by side, then the killed one (about a minute on 2 cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from llmops.api import labels as L
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import DEFAULT_BUCKET, Sandbox
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from finetune_fixtures import build_model, corpus, losses, write_jsonl  # noqa: E402

API = "llmops.dev/v1alpha1"
NS = "default"
STEPS, EVERY = 16, 4

pytestmark = pytest.mark.timeout(300)


eventually = partial(sandbox_eventually, timeout=150.0, interval=0.2)


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def is_true(obj: dict | None, type_: str) -> bool:
    return condition(obj, type_).get("status") == "True"


def finished(obj: dict | None) -> bool:
    return is_true(obj, "Succeeded") or is_true(obj, "Failed")


def finetune_job(name: str, root: Path, *, nodes: int = 1, dataset: str = "train.jsonl", step_delay: float = 0.0,
                 **spec: Any) -> dict:
    env = [{"name": "FINETUNE_LOG_FILE", "value": str(root / f"{name}.log")},  # host path: sandbox pods are local processes
           {"name": "FINETUNE_STEP_DELAY", "value": str(step_delay)}]
    body: dict[str, Any] = {
        "apiVersion": API, "kind": "FinetuneJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "image": "llmops/trainer:dev",
            "baseModel": {"uri": "pvc://models/tiny"},
            "dataset": {"uri": f"pvc://data/{dataset}", "textField": "text", "validationSplit": 0.2},
            "method": {"type": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
            "hyperparameters": {"maxSteps": STEPS, "learningRate": 0.05, "batchSize": 4, "maxSeqLength": 32, "seed": 3},
            "output": {"uri": f"pvc://out/{name}"},
            "nodes": nodes, "procsPerNode": 1,
            "resources": {"cpu": "500m", "memory": "2Gi"},
            "scheduling": {"gang": {"backend": "native", "timeoutSeconds": 120}},
            "checkpoint": {"uri": f"s3://{DEFAULT_BUCKET}/checkpoints/{name}", "everySteps": EVERY},
            "failurePolicy": {"maxRestarts": 2, "backoff": {"initialSeconds": 1, "maxSeconds": 2}},
            "template": {"env": env},
        },
    }  # fmt: skip
    body["spec"].update(spec)
    return body


@pytest.fixture(scope="module", params=CLUSTERS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("ftj")
    with Sandbox(nodes=2, workdir=root / "sbx", operator=True, serving="standin", control_plane=sandbox_control_plane(request.param)) as sb:
        pvc = sb.workdir / "pvc" / NS
        build_model(pvc / "models" / "tiny")
        write_jsonl(pvc / "data" / "train.jsonl", [{"text": t} for t in corpus(80, 1)])
        write_jsonl(pvc / "data" / "bad.jsonl", [{"text": t} for t in corpus(20, 2)] + [{"content": "no text field"}])
        kube = Kube(load_api_client(sb.kubeconfig))
        # The claims the jobs name, as a user creates them (a real scheduler places no pod whose
        # claim is missing or unbound; the sandbox's volumes are the directories filled above).
        for claim in ("models", "data", "out"):
            kube.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim, "namespace": NS},
                         "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}}})
        # The two 2-node jobs run one after the other, so the two CPU cores serve one gang at a time.
        for body in (finetune_job("ft-ref", root, nodes=2, serve={"inferenceServiceName": "ft-serve", "create": True}),
                     finetune_job("ft-bad", root, dataset="bad.jsonl")):
            kube.apply(body)
        yield sb, kube, root, pvc


def get(kube: Kube, name: str) -> dict | None:
    return kube.get(API, "FinetuneJob", NS, name)


def test_killed_worker_resumes_from_checkpoint_bitwise_and_publishes(world) -> None:  # noqa: ANN001
    from llmops_runtime.serve import manifest as M

    sb, kube, root, pvc = world
    ref = eventually(lambda: (f := get(kube, "ft-ref")) and finished(f) and f, timeout=200)
    assert is_true(ref, "Succeeded"), ref["status"]["conditions"]
    assert ref["status"]["restarts"]["total"] == 0, ref["status"]["restarts"]
    kube.apply(finetune_job("ft-kill", root, nodes=2, step_delay=0.5))
    log = root / "ft-kill.log"
    rank0 = log.with_name("ft-kill.log.rank0")
    # a checkpoint is committed and seen by the operator (the resume hint), and training went on
    eventually(lambda: ((((get(kube, "ft-kill") or {}).get("status") or {}).get("checkpoint") or {}).get("step", 0) >= EVERY
                       and rank0.exists() and max(losses(log), default=0) >= EVERY + 2), timeout=200)
    sb.fault(NS, "ft-kill-train-w1-a0", "kill")
    done = eventually(lambda: (f := get(kube, "ft-kill")) and finished(f) and f, timeout=200)
    st = done["status"]
    assert is_true(done, "Succeeded"), st["conditions"]
    tj = kube.get(API, "TrainingJob", NS, "ft-kill-train")
    assert tj["status"]["restarts"]["total"] == 1, tj["status"]["restarts"]
    resumed = tj["status"]["resumedFromStep"]  # the operator's hint: the newest commit it had seen
    assert resumed >= EVERY and resumed % EVERY == 0, resumed
    assert st["trainingJobName"] == "ft-kill-train" and st["attempt"] == 1 and st["restarts"]["total"] == 1
    assert st["progress"]["step"] == STEPS and st["checkpoint"]["step"] == STEPS
    # the resumed attempt redid steps from the checkpoint, and every step's loss equals the reference's
    attempts = [json.loads(x) for x in rank0.read_text().splitlines()]
    killed_at = max(e["step"] for e in attempts if e["attempt"] == 0)
    restored = min(e["step"] for e in attempts if e["attempt"] == 1) - 1  # the store's newest commit (>= the operator's hint)
    assert resumed <= restored <= killed_at and restored % EVERY == 0, (resumed, restored, killed_at)
    assert losses(log) == losses(root / "ft-ref.log"), "per-step losses differ from the uninterrupted reference"
    assert sorted(losses(log)) == list(range(1, STEPS + 1))
    # finetune facts from rank 0's report
    ev, out, ds = st["evaluation"], st["output"], st["dataset"]
    assert ev["validationLoss"] < ev["baseValidationLoss"], ev
    assert ev["bestValidationLoss"] <= ev["validationLoss"] and ev["bestStep"] >= 1
    assert ds["examples"] + ds["validationExamples"] == 80 and ds["tokens"] > 0 and len(ds["sha256"]) == 64
    assert out["uri"] == "pvc://out/ft-kill" and out["baseModelRevision"].startswith("sha256:")
    published = pvc / "out" / "ft-kill"
    raw = (published / M.DEFAULT_NAME).read_bytes()
    assert out["manifestSha256"] == M.digest(raw)
    listed = M.parse(raw)
    assert listed == M.build(published, exclude=frozenset({M.DEFAULT_NAME}))
    assert out["sizeBytes"] == sum(e.size for e in listed.values())
    assert (published / "adapter_model.safetensors").read_bytes() == (pvc / "out" / "ft-ref" / "adapter_model.safetensors").read_bytes()
    assert "Published" not in {c["type"] for c in st["conditions"]}  # no serve: no Published condition
    events = [e for e in kube.list("v1", "Event", NS)
              if e["involvedObject"].get("name") == "ft-kill" and e["involvedObject"]["kind"] == "FinetuneJob"]
    assert [e["reason"] for e in events].count("Completed") == 1, [(e["reason"], e["message"]) for e in events]


def test_serve_create_makes_an_unowned_service_and_reports_publishing(world) -> None:  # noqa: ANN001
    _sb, kube, _root, _pvc = world
    ref = eventually(lambda: (f := get(kube, "ft-ref")) and finished(f) and f, timeout=200)
    assert is_true(ref, "Succeeded"), ref["status"]["conditions"]
    svc = eventually(lambda: kube.get(API, "InferenceService", NS, "ft-serve"))
    assert svc["metadata"]["labels"][L.CREATED_BY_FINETUNE_JOB] == "ft-ref"
    assert not svc["metadata"].get("ownerReferences")  # deleting the FinetuneJob keeps serving
    assert svc["spec"]["model"]["uri"] == "pvc://models/tiny" and not svc["spec"].get("adapters")
    ref = eventually(lambda: (f := get(kube, "ft-ref")) and condition(f, "Published") and f)
    assert ref["status"]["served"] == {"inferenceServiceName": "ft-serve", "adapterName": "ft-ref"}
    published = condition(ref, "Published")
    # True once the InferenceService lists the adapter ready; until then False with the reason.
    assert published["reason"] in ("AdapterNotReady", "OutputPublished"), published
    events = [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "ft-ref"]
    assert [e["reason"] for e in events].count("InferenceServiceCreated") == 1


def test_bad_dataset_fails_with_the_runtime_reason_and_writes_nothing(world) -> None:  # noqa: ANN001
    _sb, kube, _root, pvc = world
    done = eventually(lambda: (f := get(kube, "ft-bad")) and finished(f) and f, timeout=200)
    failed = condition(done, "Failed")
    assert failed.get("status") == "True", done["status"]
    assert failed["reason"] == "DatasetFieldMissing", failed
    assert "text" in failed["message"] and "exited 78" not in failed["message"], failed
    assert condition(done, "Running")["reason"] == "DatasetFieldMissing"
    assert done["status"]["restarts"]["total"] == 0
    assert not (pvc / "out" / "ft-bad").exists() and not list((pvc / "out").glob(".ft-bad*"))
    assert "output" not in done["status"]


def test_kubectl_get_ftj_shows_the_facts(world) -> None:  # noqa: ANN001
    sb, kube, _root, _pvc = world
    names = [n for n in ("ft-ref", "ft-kill", "ft-bad") if get(kube, n)]  # ft-kill exists once its test ran
    eventually(lambda: all(finished(get(kube, n)) for n in names), timeout=250)
    out = subprocess.run(["kubectl", "--kubeconfig", sb.kubeconfig, "get", "ftj", "-o", "wide"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0].split()
    assert header[:9] == ["NAME", "STATE", "METHOD", "STEP", "TOTAL", "CKPT", "RESTARTS", "VAL", "LOSS"], lines[0]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    if "ft-kill" in names:
        assert rows["ft-kill"][1:7] == ["Succeeded", "lora", str(STEPS), str(STEPS), str(STEPS), "1"], rows["ft-kill"]
    assert rows["ft-ref"][1:7] == ["Succeeded", "lora", str(STEPS), str(STEPS), str(STEPS), "0"], rows["ft-ref"]
    assert "pvc://out/ft-ref" in rows["ft-ref"]
    assert rows["ft-bad"][1] == "Failed" and "DatasetFieldMissing" in rows["ft-bad"]  # STATE, and REASON (wide)
