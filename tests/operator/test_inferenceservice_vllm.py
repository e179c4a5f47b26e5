"""An InferenceService served by real vLLM (the CPU build in the vLLM venv) on the sandbox, on the
emulated API server and on a real control plane: the nodes run the server image's containers
through their vLLM runtime (``Sandbox(serving="vllm")``), with exactly the argv the operator
renders for the GPU image.

One service, one scenario, engines reused: a tiny Llama (hidden 128, 2 heads: vLLM's CPU
attention needs a head size of 64) built here and uploaded to the sandbox's S3 with an llmops
manifest, pinned by its sha256, and a LoRA for it trained by a FinetuneJob applied beside the
service (``adapters: [{fromFinetuneJob: ...}]``). Ready with the verified digest; a completion
answered through the Service (its selector and target port, as kube-proxy routes: the sandbox
has no service proxy); once the job has published, its adapter loaded at run time through
``/v1/load_lora_adapter`` by the adapter agent and answered by name; sustained requests with
``maxNumSeqs: 1`` queue up in vLLM, and the builtin autoscaler, reading the real server's
``vllm:num_requests_waiting``, scales to 2 (the new replica's fetch is a cache hit on the shared
cache PVC); a killed replica (pod deleted) is replaced by one that serves the adapter again.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from functools import partial
from pathlib import Path

import boto3
import pytest
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.node.runtimes import vllm_venv
from llmops.sandbox.run import DEFAULT_BUCKET, Sandbox, operator_available
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually
from llmops_runtime.serve import manifest as M

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))
from finetune_fixtures import build_model, corpus  # noqa: E402

API = "llmops.dev/v1alpha1"
NS = "default"
NAME = "tiny-vllm"
ADAPTER = "tiny-lora"
FINETUNE = "tiny-lora-job"
# An engine start is ~20 s of CPU here, and much longer when the machine is shared.
START = 900.0
eventually = partial(sandbox_eventually, interval=0.5)

pytestmark = [
    pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed"),
    pytest.mark.skipif(not (vllm_venv() / "bin" / "python").exists(), reason=f"no vLLM venv at {vllm_venv()} (make install creates it)"),
    pytest.mark.timeout(3600),
]


def upload_with_manifest(s3, local: Path, prefix: str) -> str:  # noqa: ANN001
    """Upload the files of ``local`` and an llmops manifest of them; the manifest's sha256."""
    entries = M.build(local, exclude=frozenset({M.DEFAULT_NAME, "README.md"}))
    manifest = M.render(entries)
    for rel in entries:
        s3.upload_file(str(local / rel), DEFAULT_BUCKET, f"{prefix}/{rel}")
    s3.put_object(Bucket=DEFAULT_BUCKET, Key=f"{prefix}/{M.DEFAULT_NAME}", Body=manifest)
    return M.digest(manifest)


@pytest.fixture(scope="module", params=CLUSTERS)
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("vllm")
    model = build_model(root / "model", hidden_size=128, max_positions=256)
    with Sandbox(nodes=2, workdir=root / "sbx", operator=True, serving="vllm",
                 control_plane=sandbox_control_plane(request.param)) as sb:
        s3 = boto3.client("s3", endpoint_url=sb.s3_endpoint, aws_access_key_id=sb.s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=sb.s3_env["AWS_SECRET_ACCESS_KEY"], region_name=sb.s3_env["AWS_REGION"])
        digest = upload_with_manifest(s3, model, "models/tiny128")
        data = "".join(json.dumps({"text": t}) + "\n" for t in corpus(60, 5))
        s3.put_object(Bucket=DEFAULT_BUCKET, Key="data/train.jsonl", Body=data.encode())
        yield sb, Kube(load_api_client(sb.kubeconfig)), digest


def service_body(digest: str) -> dict:
    return {
        "apiVersion": API, "kind": "InferenceService", "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "model": {"uri": f"s3://{DEFAULT_BUCKET}/models/tiny128", "manifestSha256": digest},
            "engine": {"maxModelLen": 256, "maxNumSeqs": 1, "maxLoras": 1},
            "adapters": [{"name": ADAPTER, "fromFinetuneJob": FINETUNE}],
            "cache": {"size": "1Gi"},
            "minReplicas": 1, "maxReplicas": 2,
            "autoscaling": {"engine": "builtin", "signal": "queue", "target": 2, "scaleUp": {"maxStep": 1},
                            "scaleDown": {"minHoldSeconds": 3600}},
        },
    }


def finetune_body() -> dict:
    """A LoRA on the served model's attention projections, trained on the sandbox's CPU."""
    return {
        "apiVersion": API, "kind": "FinetuneJob", "metadata": {"name": FINETUNE, "namespace": NS},
        "spec": {
            "baseModel": {"uri": f"s3://{DEFAULT_BUCKET}/models/tiny128"},
            "dataset": {"uri": f"s3://{DEFAULT_BUCKET}/data/train.jsonl", "textField": "text", "validationSplit": 0.2},
            "method": {"type": "lora", "lora": {"r": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"]}},
            "hyperparameters": {"maxSteps": 12, "learningRate": 0.05, "batchSize": 4, "maxSeqLength": 32},
            "output": {"uri": f"s3://{DEFAULT_BUCKET}/adapters/{FINETUNE}"},
            "resources": {"cpu": "500m", "memory": "2Gi"},
        },
    }


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def ready_pods(kube: Kube, selector: dict[str, str]) -> list[dict]:
    pods = kube.list("v1", "Pod", NS, ",".join(f"{k}={v}" for k, v in sorted(selector.items())))
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def service_url(kube: Kube) -> str:
    """The Service as kube-proxy would route it: a Ready pod its selector picks, on the container
    port its targetPort names."""
    svc = kube.get("v1", "Service", NS, NAME)
    port = svc["spec"]["ports"][0]
    pod = ready_pods(kube, svc["spec"]["selector"])[0]
    number = next(p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if p.get("name") == port["targetPort"])
    return f"http://{pod['status']['podIP']}:{number}"


def via_service(kube: Kube, path: str, body: dict | None = None) -> dict:
    """One call through the Service; retried while no replica is Ready (a measured load time
    above the startup budget's floor rolls the Deployment once, see builders/inference.py)."""
    return eventually(lambda: call(f"{service_url(kube)}{path}", body), timeout=START)


def call(url: str, body: dict | None = None, timeout: float = 120) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


class Load:
    """Keeps ``width`` long completions in flight through the Service until stopped."""

    def __init__(self, kube: Kube, width: int = 12) -> None:
        self.kube, self.stop = kube, threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(width)]

    def run(self) -> None:
        body = {"model": NAME, "prompt": "the cat", "max_tokens": 200, "ignore_eos": True}
        while not self.stop.is_set():
            try:
                call(f"{service_url(self.kube)}/v1/completions", body, timeout=600)
            except (urllib.error.URLError, OSError, IndexError, KeyError):
                self.stop.wait(0.5)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()


def test_vllm_serves_adapts_scales_and_replaces(world) -> None:  # noqa: ANN001
    _sb, kube, digest = world
    kube.apply(finetune_body())
    kube.apply(service_body(digest))
    get = lambda: kube.get(API, "InferenceService", NS, NAME)  # noqa: E731
    svc = eventually(lambda: (o := get()) and condition(o, "Ready").get("status") == "True" and o, timeout=START)
    assert condition(svc, "ModelCached")["status"] == "True"
    assert svc["status"]["model"]["digest"] == f"sha256:{digest}"

    # a completion through the Service, from vLLM itself
    out = via_service(kube, "/v1/completions", {"model": NAME, "prompt": "the cat sat", "max_tokens": 4, "ignore_eos": True})
    assert out["model"] == NAME and out["usage"]["completion_tokens"] == 4 and out["choices"][0]["text"]
    assert {m["id"] for m in via_service(kube, "/v1/models")["data"]} >= {NAME}

    # the FinetuneJob's adapter: published, loaded at run time by the adapter agent, answered by name
    job = eventually(lambda: (o := kube.get(API, "FinetuneJob", NS, FINETUNE)) and condition(o, "Succeeded").get("status") == "True" and o,
                     timeout=START)
    svc = eventually(lambda: (o := get()) and condition(o, "AdaptersReady").get("status") == "True" and o, timeout=START)
    adapter = next(a for a in svc["status"]["adapters"] if a["name"] == ADAPTER)
    assert adapter["finetuneJob"] == FINETUNE and adapter["uri"] == job["status"]["output"]["uri"], adapter
    served = {m["id"]: m for m in via_service(kube, "/v1/models")["data"]}
    assert ADAPTER in served and served[ADAPTER].get("parent") == NAME, served
    out = via_service(kube, "/v1/completions", {"model": ADAPTER, "prompt": "the cat sat", "max_tokens": 4, "ignore_eos": True})
    assert out["model"] == ADAPTER and out["usage"]["completion_tokens"] == 4

    # real queueing in vLLM (one sequence at a time) drives the builtin autoscaler
    with Load(kube):
        svc = eventually(lambda: (o := get()) and ((o["status"].get("lastScaleDecision") or {}).get("to") == 2) and o, timeout=START)
    decision = svc["status"]["lastScaleDecision"]
    assert decision["from"] == 1 and decision["signal"] == "queue" and decision["value"] >= 2, decision

    # a killed replica: a serving pod goes, the Deployment replaces it; both replicas serve the adapter
    selector = kube.get("v1", "Service", NS, NAME)["spec"]["selector"]
    first = eventually(lambda: ready_pods(kube, selector), timeout=START)[0]
    kube.delete("v1", "Pod", NS, first["metadata"]["name"])

    def two_fresh() -> list[dict] | None:
        pods = ready_pods(kube, selector)
        fresh = [p for p in pods if p["metadata"]["uid"] != first["metadata"]["uid"]]
        return fresh if len(fresh) == 2 else None

    pods = eventually(two_fresh, timeout=START)
    for pod in pods:
        ids = {m["id"] for m in call(f"http://{pod['status']['podIP']}:8000/v1/models")["data"]}
        assert ids == {NAME, ADAPTER}, ids
    fetches = [next(c for c in p["status"]["initContainerStatuses"] if c["name"] == "fetch-model")["state"]["terminated"]["message"]
               for p in pods]
    assert all("cache=hit" in m for m in fetches), fetches  # the shared cache PVC: downloaded once, by the first replica
    assert ADAPTER in {m["id"] for m in via_service(kube, "/v1/models")["data"]}
    metrics = urllib.request.urlopen(f"http://{pods[0]['status']['podIP']}:8000/metrics", timeout=30).read().decode()
    assert "vllm:num_requests_waiting" in metrics and "vllm:kv_cache_usage_perc" in metrics
    kube.delete(API, "InferenceService", NS, NAME)
    eventually(lambda: not kube.list("v1", "Pod", NS, ",".join(f"{k}={v}" for k, v in sorted(selector.items()))), timeout=120)
