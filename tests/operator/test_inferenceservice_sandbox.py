"""InferenceService end to end on the sandbox: the real operator process, the emulated API
server with the sandbox Deployment controller, process node agents running the real model
fetcher (from the sandbox's S3 server) and the vLLM stand-in (a test double the nodes run in
place of ``vllm serve``: ``Sandbox(serving="standin")``).

Covers: a tiny safetensors model becomes Ready with the verified digest; a pickle-only model
gives ModelCached=False/PickleNotAllowed naming the file, a model whose file does not match its
llmops-manifest.json ModelDigestMismatch naming the file; raising the queue on the stand-in
(its test-only /standin/load endpoint) scales the Deployment up one step per load time (maxStep 1,
at least the measured load time apart) without passing maxReplicas, and never writes the CR spec;
when the queue empties it scales down to minReplicas only after the hold. Two replicas on the
created cache PVC download the model once (the other fetch is a cache hit); LoRA adapters load
into every replica through the adapter-agent sidecar, a second one without replacing any pod,
a replaced pod gets them again and is never Ready before it serves them, and more than engine.maxLoras gives AdaptersReady
False/AdapterLimitExceeded. A revision whose pods fail (a maxModelLen beyond the KV cache) is
Degraded/InsufficientGPUMemory with vLLM's text while the old pod keeps serving (maxSurge 1,
maxUnavailable 0), and the builtin autoscaler does not add replicas meanwhile.
"""

from __future__ import annotations

import io
import json
import threading
import time
import urllib.request
from functools import partial

import boto3
import numpy as np
import pytest
from llmops.kube.client import Kube, load_api_client
from llmops.plan.inference import REQUEUE_SECONDS
from llmops.sandbox.deployments import HASH_LABEL, plan_pods
from llmops.sandbox.run import DEFAULT_BUCKET, Sandbox
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually
from llmops_runtime.serve import manifest as M
from safetensors.numpy import save

API = "llmops.dev/v1alpha1"
NS = "default"
ADAPTERS = ("sql", "legal", "extra")


eventually = partial(sandbox_eventually, timeout=90.0, interval=0.2)


def condition(obj: dict | None, type_: str) -> dict:
    return next((c for c in ((obj or {}).get("status") or {}).get("conditions", []) if c["type"] == type_), {})


@pytest.fixture(scope="module", params=CLUSTERS)
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True, serving="standin",
                 control_plane=sandbox_control_plane(request.param)) as sb:
        s3 = boto3.client("s3", endpoint_url=sb.s3_endpoint, aws_access_key_id=sb.s3_env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=sb.s3_env["AWS_SECRET_ACCESS_KEY"], region_name=sb.s3_env["AWS_REGION"])
        weights = save({"embed.weight": np.arange(64, dtype=np.float32).reshape(8, 8)})
        config = json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}).encode()
        # a manifest whose sha256 for model.safetensors is wrong (the size is right)
        entries = {"config.json": M.Entry(M.digest(config), len(config)), "model.safetensors": M.Entry("0" * 64, len(weights))}
        objects = [("models/tiny/model.safetensors", weights), ("models/tiny/config.json", config),
                   ("models/pickled/pytorch_model.bin", b"\x80\x04not really a pickle"), ("models/pickled/config.json", config),
                   ("models/badsum/model.safetensors", weights), ("models/badsum/config.json", config),
                   ("models/badsum/" + M.DEFAULT_NAME, M.render(entries))]
        for i, name in enumerate(ADAPTERS):
            cfg = json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "peft_type": "LORA"}).encode()
            lora = save({"base_model.model.q_proj.lora_A.weight": np.full((8, 8), i, dtype=np.float32)})
            files = {"adapter_config.json": cfg, "adapter_model.safetensors": lora}
            files[M.DEFAULT_NAME] = M.render({k: M.Entry(M.digest(v), len(v)) for k, v in files.items()})
            objects += [(f"adapters/{name}/{k}", v) for k, v in files.items()]
        for key, data in objects:
            s3.upload_fileobj(io.BytesIO(data), DEFAULT_BUCKET, key)
        yield sb


@pytest.fixture(scope="module")
def kube(sandbox: Sandbox) -> Kube:
    return Kube(load_api_client(sandbox.kubeconfig))


def service(name: str, model: str, **spec) -> dict:  # noqa: ANN003
    return {
        "apiVersion": API, "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"model": {"uri": f"s3://{DEFAULT_BUCKET}/models/{model}"}, **spec},
    }


def test_pickle_only_model_names_the_file(sandbox: Sandbox, kube: Kube) -> None:
    kube.apply(service("pickled", "pickled"))
    get = lambda: kube.get(API, "InferenceService", NS, "pickled")  # noqa: E731
    svc = eventually(lambda: (o := get()) and condition(o, "ModelCached").get("reason") == "PickleNotAllowed" and o)
    assert condition(svc, "ModelCached")["status"] == "False"
    assert "pytorch_model.bin" in condition(svc, "ModelCached")["message"]
    assert condition(svc, "Ready")["status"] == "False"
    assert condition(svc, "Degraded")["reason"] == "PickleNotAllowed"
    kube.delete(API, "InferenceService", NS, "pickled")


def test_digest_mismatch_names_the_file(sandbox: Sandbox, kube: Kube) -> None:
    kube.apply(service("badsum", "badsum"))
    get = lambda: kube.get(API, "InferenceService", NS, "badsum")  # noqa: E731
    svc = eventually(lambda: (o := get()) and condition(o, "ModelCached").get("reason") == "ModelDigestMismatch" and o)
    mc = condition(svc, "ModelCached")
    assert mc["status"] == "False" and mc["message"].startswith("model.safetensors: sha256 ")
    assert "0" * 64 in mc["message"]  # the expected digest from the manifest
    assert condition(svc, "Degraded")["reason"] == "ModelDigestMismatch"
    kube.delete(API, "InferenceService", NS, "badsum")


class ReplicaWatch:
    """Records (spec.replicas, status.readyReplicas) of a Deployment over time."""

    def __init__(self, kube: Kube, name: str) -> None:
        self.kube, self.name = kube, name
        self.samples: list[tuple[int, int]] = []
        self.raised_at: list[tuple[float, tuple[int, int]]] = []  # (monotonic time, sample before) of each raise
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            d = self.kube.get("apps/v1", "Deployment", NS, self.name)
            if d:
                if self.samples and d["spec"]["replicas"] > self.samples[-1][0]:
                    self.raised_at.append((time.monotonic(), self.samples[-1]))
                self.samples.append((d["spec"]["replicas"], (d.get("status") or {}).get("readyReplicas") or 0))
            time.sleep(0.1)

    def __enter__(self) -> ReplicaWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


def test_ready_then_scale_up_one_load_time_at_a_time(sandbox: Sandbox, kube: Kube) -> None:
    auto = {"engine": "builtin", "signal": "queue", "target": 2, "scaleUp": {"maxStep": 1},
            "scaleDown": {"minHoldSeconds": 0, "holdLoadTimeMultiple": 2}}
    kube.apply(service("chat", "tiny", minReplicas=1, maxReplicas=3, autoscaling=auto))
    get = lambda: kube.get(API, "InferenceService", NS, "chat")  # noqa: E731
    svc = eventually(lambda: (o := get()) and condition(o, "Ready").get("status") == "True" and o, timeout=120)
    st = svc["status"]
    assert condition(svc, "ModelCached")["status"] == "True"
    assert st["model"]["digest"].startswith("sha256:")
    assert st["url"] == "http://chat.default.svc:8000/v1"
    assert st["readyReplicas"] == 1 and st["desiredReplicas"] == 1
    first_load = st["loadSeconds"]["p95"]
    assert st["loadSeconds"]["last"] > 0 and first_load > 0
    pods = kube.list("v1", "Pod", NS, st["selector"])
    ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    assert len(ready) == 1
    ip = ready[0]["status"]["podIP"]
    with urllib.request.urlopen(f"http://{ip}:8000/v1/models", timeout=5) as r:
        assert [m["id"] for m in json.load(r)["data"]] == ["chat"]

    with ReplicaWatch(kube, "chat") as watch:
        req = urllib.request.Request(f"http://{ip}:8000/standin/load", data=json.dumps({"waiting": 40}).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=5).read()
        eventually(lambda: (o := get()) and (o["status"].get("readyReplicas") or 0) >= 3 and o, timeout=150)
    svc = get()
    assert svc["spec"].get("replicas") is None  # the builtin autoscaler never writes the CR spec
    decision = svc["status"]["lastScaleDecision"]
    assert (decision["from"], decision["to"]) == (2, 3) and decision["signal"] == "queue"
    # one step at a time (maxStep 1), never past maxReplicas
    wanted = [w for w, _ in watch.samples]
    assert wanted == sorted(wanted) and max(wanted) == 3
    for (w0, _), (w1, _r1) in zip(watch.samples, watch.samples[1:], strict=False):  # neighbours: the second list is one shorter
        if w1 > w0:
            assert w1 == w0 + 1, watch.samples
    # one scale-up per load time: the second raise waits until the first one's replica is ready
    # or has loaded for at least L (the policy's L only grows from the first measured load;
    # pod times have one-second resolution, hence the 2 s allowance)
    assert len(watch.raised_at) == 2, watch.samples
    (t0, _), (t1, (wanted_before, ready_before)) = watch.raised_at
    assert ready_before == wanted_before or t1 - t0 >= first_load - 2, (watch.raised_at, first_load)
    events = [e for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "chat" and e["reason"] == "ScalingUp"]
    assert len(events) == 2, [(e["reason"], e["message"]) for e in events]

    # load gone: scale down to minReplicas, but only after the hold (2 x the measured load time)
    hold = 2 * svc["status"]["loadSeconds"]["p95"]
    req = urllib.request.Request(f"http://{ip}:8000/standin/load", data=json.dumps({"waiting": 0}).encode(),
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
    dropped = time.monotonic()
    svc = eventually(lambda: (o := get()) and o["status"].get("desiredReplicas") == 1 and o, timeout=120)
    # the hold runs from the last high scrape, at most one requeue before the drop
    assert time.monotonic() - dropped >= hold - REQUEUE_SECONDS
    decision = svc["status"]["lastScaleDecision"]
    assert decision["to"] == 1 and decision["from"] == 3 and decision["reason"].startswith("ScaleDown")
    assert eventually(lambda: len(kube.list("v1", "Pod", NS, svc["status"]["selector"])) == 1, timeout=90)


def _ready_pods(kube: Kube, name: str) -> list[dict]:
    pods = kube.list("v1", "Pod", NS, f"llmops.dev/owner-name={name},llmops.dev/role=server")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]


def _served(ip: str) -> set[str]:
    with urllib.request.urlopen(f"http://{ip}:8000/v1/models", timeout=5) as r:
        return {m["id"] for m in json.load(r)["data"]}


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def test_adapters_load_without_restart_and_the_second_replica_hits_the_cache(sandbox: Sandbox, kube: Kube) -> None:
    def lora(*names: str) -> dict:
        return service("lora", "tiny", minReplicas=2, maxReplicas=2, cache={"size": "1Gi"}, engine={"maxLoras": 2},
                       adapters=[{"name": n, "uri": f"s3://{DEFAULT_BUCKET}/adapters/{n}"} for n in names])

    get = lambda: kube.get(API, "InferenceService", NS, "lora")  # noqa: E731

    def adapters_ready(*names: str):  # noqa: ANN202
        def check():  # noqa: ANN202
            o = get()
            st = {a["name"]: a for a in ((o or {}).get("status") or {}).get("adapters", [])}
            return o if all(st.get(n, {}).get("ready") and st[n].get("loadedReplicas") == 2 for n in names) else None
        return check

    kube.apply(lora("sql"))
    # The adapter tally comes from the pods the operator sees, readyReplicas from the
    # Deployment's status, which its controller writes a moment later (much later on a loaded
    # machine): the status converges to both, so wait for both rather than read one snapshot.
    svc = eventually(lambda: (o := adapters_ready("sql")()) and condition(o, "AdaptersReady").get("status") == "True"
                     and o["status"].get("readyReplicas") == 2 and o, timeout=90)
    assert condition(svc, "AdaptersReady")["reason"] == "AdaptersLoaded"
    pods = _ready_pods(kube, "lora")
    assert len(pods) == 2
    uids = {p["metadata"]["uid"] for p in pods}
    # one shared cache (the created PVC): the model was downloaded once, the other fetch was a hit
    fetches = sorted(next(c for c in p["status"]["initContainerStatuses"] if c["name"] == "fetch-model")["state"]["terminated"]["message"]
                     for p in pods)
    assert ["cache=hit" in m for m in fetches].count(True) == 1 and ["cache=miss" in m for m in fetches].count(True) == 1, fetches
    assert all({"lora", "sql"} == _served(p["status"]["podIP"]) for p in pods)
    out = _post(f"http://{pods[0]['status']['podIP']}:8000/v1/completions", {"model": "sql", "prompt": "select", "max_tokens": 2})
    assert out["model"] == "sql"

    # a second adapter: loaded on both replicas, no pod replaced
    kube.apply(lora("sql", "legal"))
    svc = eventually(lambda: (o := adapters_ready("sql", "legal")()) and condition(o, "AdaptersReady").get("status") == "True" and o,
                     timeout=60)
    pods = _ready_pods(kube, "lora")
    assert {p["metadata"]["uid"] for p in pods} == uids
    assert all({"lora", "sql", "legal"} == _served(p["status"]["podIP"]) for p in pods)

    # more than engine.maxLoras: a clear condition, the first two stay loaded, no pod replaced
    kube.apply(lora("sql", "legal", "extra"))
    svc = eventually(lambda: (o := get()) and condition(o, "AdaptersReady").get("reason") == "AdapterLimitExceeded" and o, timeout=30)
    msg = condition(svc, "AdaptersReady")["message"]
    assert "engine.maxLoras allows 2 per replica" in msg and msg.endswith("not loaded: extra"), msg
    extra = next(a for a in svc["status"]["adapters"] if a["name"] == "extra")
    assert not extra["ready"] and "maxLoras" in extra["message"]
    assert {p["metadata"]["uid"] for p in _ready_pods(kube, "lora")} == uids

    # a replaced replica gets the adapters again, and is never Ready (in the Service) before
    # it serves them: every sighting of it Ready is checked against its /v1/models
    victim = sorted(pods, key=lambda p: p["metadata"]["name"])[0]
    kube.delete("v1", "Pod", NS, victim["metadata"]["name"])
    sightings: list[set[str]] = []

    def replaced():  # noqa: ANN202
        now = _ready_pods(kube, "lora")
        fresh = [p for p in now if p["metadata"]["uid"] not in uids]
        if fresh:
            sightings.append(_served(fresh[0]["status"]["podIP"]))
        return fresh and len(now) == 2 and fresh[0]

    fresh = eventually(replaced, timeout=60, interval=0.05)
    assert sightings and all({"sql", "legal"} <= seen for seen in sightings), sightings
    assert "extra" not in _served(fresh["status"]["podIP"])
    eventually(adapters_ready("sql", "legal"), timeout=30)
    kube.delete(API, "InferenceService", NS, "lora")


def test_failing_revision_leaves_the_old_one_serving(sandbox: Sandbox, kube: Kube) -> None:
    auto = {"engine": "builtin", "signal": "queue", "target": 2, "scaleUp": {"maxStep": 1}}
    spec = {"minReplicas": 1, "maxReplicas": 2, "autoscaling": auto, "rollout": {"maxSurge": 1, "maxUnavailable": 0}}
    kube.apply(service("canary", "tiny", **spec))
    get = lambda: kube.get(API, "InferenceService", NS, "canary")  # noqa: E731
    eventually(lambda: (o := get()) and condition(o, "Ready").get("status") == "True" and o, timeout=60)
    (old,) = _ready_pods(kube, "canary")
    ip = old["status"]["podIP"]

    # the new revision asks for a context its KV cache cannot hold (the stand-in, like vLLM,
    # prints "... larger than the maximum number of tokens that can be stored in KV cache" and exits 1)
    kube.apply(service("canary", "tiny", **spec, engine={"maxModelLen": 4_000_000}))
    svc = eventually(lambda: (o := get()) and condition(o, "Degraded").get("status") == "True" and o, timeout=60)
    dg = condition(svc, "Degraded")
    assert dg["reason"] == "InsufficientGPUMemory", dg
    assert "larger than the maximum number of tokens that can be stored in KV cache" in dg["message"], dg
    assert condition(svc, "Ready")["status"] == "True"
    # the old pod keeps serving
    assert [p["metadata"]["uid"] for p in _ready_pods(kube, "canary")] == [old["metadata"]["uid"]]
    assert _post(f"http://{ip}:8000/v1/completions", {"model": "canary", "prompt": "hi", "max_tokens": 2})["choices"]

    # load on the old pod: the autoscaler would scale up, but not onto the failing revision
    with ReplicaWatch(kube, "canary") as watch:
        _post(f"http://{ip}:8000/standin/load", {"waiting": 40})
        log = sandbox.workdir / "operator.log"
        eventually(lambda: "canary: not scaling up 1 -> 2" in log.read_text(errors="replace"), timeout=REQUEUE_SECONDS + 10)
    assert {w for w, _ in watch.samples} == {1}, watch.samples
    ups = [e["message"] for e in kube.list("v1", "Event", NS) if e["involvedObject"].get("name") == "canary" and e["reason"] == "ScalingUp"]
    assert not ups, ups
    assert [p["metadata"]["uid"] for p in _ready_pods(kube, "canary")] == [old["metadata"]["uid"]]
    _post(f"http://{ip}:8000/standin/load", {"waiting": 0})

    # back to the good revision: the failing pod goes, Degraded clears
    kube.apply(service("canary", "tiny", **spec))
    eventually(lambda: (o := get()) and condition(o, "Degraded").get("status") == "False" and o, timeout=60)
    kube.delete(API, "InferenceService", NS, "canary")


# --- the sandbox Deployment controller's pure pass (no sandbox needed) -------------------------


def _dep(replicas: int, surge: int = 0, unavailable: int = 1, template: dict | None = None) -> dict:
    return {"metadata": {"name": "d", "namespace": NS, "uid": "u", "generation": 1},
            "spec": {"replicas": replicas, "template": template or {"spec": {"containers": [{"name": "c"}]}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}


def _pod(name: str, h: str, ready: bool = True, phase: str = "Running") -> dict:
    return {"metadata": {"name": name, "labels": {HASH_LABEL: h}, "creationTimestamp": f"2026-01-01T00:00:0{name[-1]}Z"},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_deployment_controller_scales_and_rolls() -> None:
    from llmops.sandbox.deployments import template_hash

    d = _dep(3)
    h = template_hash(d["spec"]["template"])
    assert plan_pods(d, []) == (3, [])  # scale up from nothing
    create, delete = plan_pods(_dep(1), [_pod("p1", h, ready=False), _pod("p2", h)])
    assert create == 0 and [p["metadata"]["name"] for p in delete] == ["p1"]  # not-ready goes first
    # rollout with maxSurge 0, maxUnavailable 1: one old pod at a time, no new one beyond replicas
    create, delete = plan_pods(_dep(2), [_pod("o1", "old"), _pod("o2", "old")])
    assert create == 0 and len(delete) == 1
    create, delete = plan_pods(_dep(2), [_pod("o2", "old")])
    assert create == 1 and delete == []
    # maxSurge 1, maxUnavailable 0: add first, delete old only once the new one is ready
    create, delete = plan_pods(_dep(1, surge=1, unavailable=0), [_pod("o1", "old")])
    assert create == 1 and delete == []
    create, delete = plan_pods(_dep(1, surge=1, unavailable=0), [_pod("o1", "old"), _pod("n1", h, ready=False)])
    assert create == 0 and delete == []
    create, delete = plan_pods(_dep(1, surge=1, unavailable=0), [_pod("o1", "old"), _pod("n1", h)])
    assert create == 0 and [p["metadata"]["name"] for p in delete] == ["o1"]
    # a failed pod is replaced
    create, delete = plan_pods(_dep(1), [_pod("f1", h, ready=False, phase="Failed")])
    assert create == 1 and [p["metadata"]["name"] for p in delete] == ["f1"]


def test_replicas_without_builtin_autoscaler() -> None:
    """Fixed services run minReplicas; hpa/keda services follow spec.replicas (the scale subresource)."""
    from llmops.api.inference import parse_inference_service
    from llmops.serving.autoscaler import desired_replicas

    def svc(**spec):  # noqa: ANN003, ANN202
        return parse_inference_service({"apiVersion": API, "kind": "InferenceService",
                                        "metadata": {"name": "x", "namespace": NS, "uid": "u"},
                                        "spec": {"model": {"uri": "s3://models/x"}, **spec}})

    assert desired_replicas(svc(minReplicas=2, maxReplicas=4), None, [], 0.0) == (2, None)
    assert desired_replicas(svc(minReplicas=1, maxReplicas=4, autoscaling={"engine": "hpa"}), None, [], 0.0) == (1, None)
    assert desired_replicas(svc(minReplicas=1, maxReplicas=4, replicas=3, autoscaling={"engine": "keda"}), None, [], 0.0) == (3, None)
