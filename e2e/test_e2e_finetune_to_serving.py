"""User-level scenario from data to an endpoint, through kubectl only: upload a tiny base model
and a jsonl dataset to S3, apply a LoRA FinetuneJob that publishes into an InferenceService it
creates, and see the adapter served: the job Succeeded with a verified output and a better
validation loss than the base model, Published, the service Ready with the adapter ready,
and the adapter listed by the server. Deleting the FinetuneJob leaves the service running.

Sandbox: the server is the vLLM stand-in (a test double the sandbox's nodes run in place of
``vllm serve``: ``Sandbox(serving="standin")``). Real cluster: set LLMOPS_E2E_S3_BUCKET (and the usual AWS_* / AWS_ENDPOINT_URL the
pods and this test share); the trainer and server images must be pullable.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.request
from functools import partial
from pathlib import Path

import boto3
import pytest
import yaml
from llmops.sandbox.testing import eventually

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "finetune"))
from finetune_fixtures import build_model, corpus  # noqa: E402

NAME, SERVICE, ADAPTER = "e2e-ft", "e2e-serve", "e2e-domain"


poll = partial(eventually, timeout=300.0, interval=0.5)


def cond(obj: dict, type_: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), {})


def s3_and_bucket(cluster) -> tuple[object, str]:  # noqa: ANN001
    if cluster.sandbox is not None:
        env = cluster.sandbox.s3_env
        client = boto3.client("s3", endpoint_url=cluster.sandbox.s3_endpoint, aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_REGION"])
        return client, "llmops-sandbox"
    bucket = os.environ.get("LLMOPS_E2E_S3_BUCKET")
    if not bucket:
        pytest.skip("LLMOPS_E2E_S3_BUCKET not set for the real cluster")
    return boto3.client("s3"), bucket


def test_finetune_then_serve_the_adapter(cluster, tmp_path: Path) -> None:  # noqa: ANN001
    s3, bucket = s3_and_bucket(cluster)
    model = build_model(tmp_path / "model")
    for f in model.iterdir():
        s3.upload_file(str(f), bucket, f"e2e/models/tiny/{f.name}")
    data = "".join(json.dumps({"text": t}) + "\n" for t in corpus(60, 5))
    s3.put_object(Bucket=bucket, Key="e2e/data/train.jsonl", Body=data.encode())

    body = {
        "apiVersion": "llmops.dev/v1alpha1", "kind": "FinetuneJob",
        "metadata": {"name": NAME},
        "spec": {
            "baseModel": {"uri": f"s3://{bucket}/e2e/models/tiny"},
            "dataset": {"uri": f"s3://{bucket}/e2e/data/train.jsonl", "textField": "text", "validationSplit": 0.2},
            "method": {"type": "lora", "lora": {"r": 4, "alpha": 8}},
            "hyperparameters": {"maxSteps": 12, "learningRate": 0.05, "batchSize": 4, "maxSeqLength": 32},
            "output": {"uri": f"s3://{bucket}/e2e/out/{NAME}"},
            "serve": {"inferenceServiceName": SERVICE, "adapterName": ADAPTER, "create": True},
            "resources": {"cpu": "500m", "memory": "2Gi"},
        },
    }  # fmt: skip
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    get = lambda kind, name: json.loads(cluster.kubectl("get", kind, name, "-o", "json"))  # noqa: E731

    ftj = poll(lambda: (f := get("ftj", NAME)) and cond(f, "Succeeded").get("status") == "True" and f)
    st = ftj["status"]
    assert st["output"]["uri"] == body["spec"]["output"]["uri"] and len(st["output"]["manifestSha256"]) == 64
    assert st["evaluation"]["validationLoss"] < st["evaluation"]["baseValidationLoss"]
    assert st["served"] == {"inferenceServiceName": SERVICE, "adapterName": ADAPTER}
    manifest = s3.get_object(Bucket=bucket, Key=f"e2e/out/{NAME}/llmops-manifest.json")["Body"].read()
    assert hashlib.sha256(manifest).hexdigest() == st["output"]["manifestSha256"]

    svc = poll(lambda: (s := get("lsvc", SERVICE)) and cond(s, "Ready").get("status") == "True"
               and any(a["name"] == ADAPTER and a["ready"] for a in s["status"].get("adapters", [])) and s)
    ftj = poll(lambda: (f := get("ftj", NAME)) and cond(f, "Published").get("status") == "True" and f, timeout=120)
    if cluster.sandbox is not None:  # pod IPs are reachable from the test only on the sandbox's nodes
        pods = json.loads(cluster.kubectl("get", "pods", "-l", svc["status"]["selector"], "-o", "json"))["items"]
        ip = next(p["status"]["podIP"] for p in pods if cond(p, "Ready").get("status") == "True")
        with urllib.request.urlopen(f"http://{ip}:8000/v1/models", timeout=5) as r:
            assert ADAPTER in [m["id"] for m in json.load(r)["data"]]

    cluster.kubectl("delete", "ftj", NAME, "--wait=true")
    # The garbage collector has acted on the job's deletion once its TrainingJob is gone; the
    # service, not owned by the job, is still there and Ready.
    poll(lambda: not cluster.kubectl("get", "tj", f"{NAME}-train", "--ignore-not-found", "-o", "name").strip(), timeout=60)
    assert cond(get("lsvc", SERVICE), "Ready").get("status") == "True"
    cluster.kubectl("delete", "lsvc", SERVICE)
