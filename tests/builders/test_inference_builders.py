"""InferenceService builders: vLLM arguments from the typed engine spec, the verified-fetch init
container, cache volume choice, probes and drain budget, Service/PDB/HPA/ScaledObject, owner
refs and labels, the stand-in (test double) switch; and that the children apply cleanly to
the API server (emulated, or a real cluster via LLMOPS_TEST_KUBECONFIG)."""

from __future__ import annotations

import copy
import pathlib

import pytest
import yaml
from llmops.api import labels as L
from llmops.api.inference import parse_inference_service
from llmops.builders import inference as B
from llmops.kube.client import Kube

UID = "00000000-0000-4000-8000-0000000000aa"


def body(**spec) -> dict:
    base = {"model": {"uri": "s3://models/llama"}}
    base.update(spec)
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "chat", "namespace": "ml", "uid": UID, "generation": 1}, "spec": base}


def svc(**spec):
    return parse_inference_service(body(**spec))


def kinds(objs):
    return [(o["kind"], o["metadata"]["name"]) for o in objs]


def deployment(objs):
    return next(o for o in objs if o["kind"] == "Deployment")


def server(objs):
    return deployment(objs)["spec"]["template"]["spec"]["containers"][0]


def flag(args, name):
    return args[args.index(name) + 1] if name in args else None


def test_default_children_and_metadata():
    objs = B.build_inference_children(svc(), B.BuildInputs(replicas=1))
    assert kinds(objs) == [("Deployment", "chat"), ("Service", "chat"), ("PodDisruptionBudget", "chat-pdb")]
    for o in objs:
        assert o["metadata"]["namespace"] == "ml"
        assert o["metadata"]["ownerReferences"] == [{"apiVersion": "llmops.dev/v1alpha1", "blockOwnerDeletion": True,
                                                     "controller": True, "kind": "InferenceService", "name": "chat", "uid": UID}]
        assert o["metadata"]["labels"] == {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.PART_OF: "InferenceService", L.OWNER_NAME: "chat"}
    d = deployment(objs)
    sel = d["spec"]["selector"]["matchLabels"]
    assert sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    assert objs[1]["spec"]["selector"] == sel
    assert B.selector_string(svc()) == ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
    assert d["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}


def test_default_server_is_vllm_with_safe_defaults():
    c = server(B.build_inference_children(svc(), B.BuildInputs()))
    assert c["command"] == ["vllm", "serve"]
    a = c["args"]
    assert a[0] == B.model_path("chat") == "/var/cache/llmops/models/chat-model"
    assert flag(a, "--served-model-name") == "chat"
    assert flag(a, "--load-format") == "safetensors"
    assert "--trust-remote-code" not in a
    assert "--enable-prefix-caching" in a
    assert "--enable-lora" not in a and "--quantization" not in a and "--max-model-len" not in a


@pytest.mark.parametrize(
    ("engine", "model", "expect", "absent"),
    [
        ({"tensorParallelSize": 2}, {}, {"--tensor-parallel-size": "2"}, []),
        ({"maxModelLen": 8192}, {}, {"--max-model-len": "8192"}, []),
        ({"gpuMemoryUtilization": 0.85}, {}, {"--gpu-memory-utilization": "0.85"}, []),
        ({"dtype": "bfloat16"}, {}, {"--dtype": "bfloat16"}, []),
        ({"quantization": "awq"}, {}, {"--quantization": "awq"}, []),
        ({"enablePrefixCaching": False}, {}, {}, ["--enable-prefix-caching"]),
        ({"maxNumSeqs": 64}, {}, {"--max-num-seqs": "64"}, []),
        ({}, {"format": "pickle", "allowPickle": True}, {"--load-format": "auto"}, []),
        ({}, {"servedModelName": "llama-3-8b"}, {"--served-model-name": "llama-3-8b"}, []),
        ({"extraArgs": [{"name": "--seed", "value": "7"}, {"name": "--enforce-eager"}]}, {}, {"--seed": "7"}, []),
    ],
)
def test_engine_fields_render_flags(engine, model, expect, absent):
    spec = {"engine": engine, "resources": {"gpus": 2}}
    if model:
        spec["model"] = {"uri": "s3://models/llama", **model}
    a = server(B.build_inference_children(svc(**spec), B.BuildInputs()))["args"]
    for name, value in expect.items():
        assert flag(a, name) == value
    for name in absent:
        assert name not in a
    if engine.get("extraArgs"):
        assert "--enforce-eager" in a
    if not engine.get("enablePrefixCaching", True):
        assert "--no-enable-prefix-caching" in a


def test_trust_remote_code_only_when_allowed():
    a = server(B.build_inference_children(svc(model={"uri": "s3://mm/x", "trustRemoteCode": True}), B.BuildInputs()))["args"]
    assert "--trust-remote-code" in a


def test_lora_settings_and_adapter_agent():
    s = svc(adapters=[{"name": "sql", "uri": "s3://ad/sql"}, {"name": "ft", "fromFinetuneJob": "tune"}], engine={"maxLoras": 8})
    objs = B.build_inference_children(s, B.BuildInputs())
    c = server(objs)
    # the limit comes from engine.maxLoras, never from the number of adapters
    assert "--enable-lora" in c["args"] and flag(c["args"], "--max-loras") == "8" and flag(c["args"], "--max-cpu-loras") == "8"
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in c["env"]
    pod = deployment(objs)["spec"]["template"]["spec"]
    assert [i["name"] for i in pod["initContainers"]] == ["fetch-model"]  # adapters are not fetched by init containers
    agent = pod["containers"][1]
    assert agent["name"] == "adapter-agent" and agent["command"][:3] == ["python", "-m", "llmops_runtime.serve.adapters"]
    assert flag(agent["command"], "--port") == "8001" and flag(agent["command"], "--cache-dir") == B.CACHE_DIR
    assert flag(agent["command"], "--max-adapters") == "8"
    assert {"mountPath": B.CACHE_DIR, "name": B.CACHE_VOLUME} in agent["volumeMounts"]
    assert "readinessProbe" not in agent and agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # a new replica joins the Service once its adapters are settled: a startup gate on /ready,
    # lasting at least the server's own startup budget
    gate = agent["startupProbe"]
    assert gate["httpGet"] == {"path": "/ready", "port": "adapters"}
    assert gate["periodSeconds"] * gate["failureThreshold"] >= c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]


def test_pod_template_does_not_depend_on_the_adapter_list():
    one = svc(adapters=[{"name": "a", "uri": "s3://ad/a"}])
    two = svc(adapters=[{"name": "a", "uri": "s3://ad/a"}, {"name": "b", "uri": "s3://ad/b"}])
    published = B.BuildInputs(adapter_uris={"a": "s3://ad/a", "c": "s3://out/c"})
    templates = [deployment(B.build_inference_children(s, i))["spec"]["template"]
                 for s, i in ((one, B.BuildInputs()), (two, B.BuildInputs()), (one, published))]
    assert templates[0] == templates[1] == templates[2]
    # LoRA off without adapters (auto); engine.lora enabled keeps it on, so the first adapter restarts nothing
    assert "--enable-lora" not in server(B.build_inference_children(svc(), B.BuildInputs()))["args"]
    assert len(deployment(B.build_inference_children(svc(), B.BuildInputs()))["spec"]["template"]["spec"]["containers"]) == 1
    enabled = svc(engine={"lora": "enabled"})
    explicit = svc(engine={"lora": "enabled"}, adapters=[{"name": "a", "uri": "s3://ad/a"}])
    assert deployment(B.build_inference_children(enabled, B.BuildInputs()))["spec"]["template"] == \
        deployment(B.build_inference_children(explicit, B.BuildInputs()))["spec"]["template"]
    # a FinetuneJob's adapter alone switches LoRA on (auto)
    assert "--enable-lora" in server(B.build_inference_children(svc(), B.BuildInputs(adapter_uris={"c": "s3://out/c"})))["args"]


def test_adapter_paths_change_with_the_source():
    p = B.adapter_path("chat", "sql", "s3://ad/sql")
    assert p.startswith(B.CACHE_DIR + "/lora-chat-sql-") and p == B.adapter_path("chat", "sql", "s3://ad/sql")
    assert p != B.adapter_path("chat", "sql", "s3://ad/sql-v2") != B.adapter_path("chat", "sql", "s3://ad/sql", "e" * 64)


def test_pvc_adapters_mount_their_claim():
    objs = B.build_inference_children(svc(), B.BuildInputs(adapter_uris={"c": "pvc://outputs/c"}))
    pod = deployment(objs)["spec"]["template"]["spec"]
    assert {"name": "source-0", "persistentVolumeClaim": {"claimName": "outputs", "readOnly": True}} in pod["volumes"]
    assert {"mountPath": "/mnt/pvc/outputs", "name": "source-0", "readOnly": True} in pod["containers"][1]["volumeMounts"]


def test_adapter_agent_resources_keep_the_qos_class():
    objs = B.build_inference_children(svc(resources={"gpus": 1, "cpu": "4", "memory": "32Gi"}, engine={"lora": "enabled"}), B.BuildInputs())
    agent = deployment(objs)["spec"]["template"]["spec"]["containers"][1]
    assert agent["resources"]["requests"] == agent["resources"]["limits"] == B.ADAPTER_AGENT_RESOURCES


def test_fetch_init_container_pins_and_pickle():
    s = svc(model={"uri": "hf://meta/llama", "revision": "a" * 40, "manifestSha256": "b" * 64})
    init = deployment(B.build_inference_children(s, B.BuildInputs()))["spec"]["template"]["spec"]["initContainers"][0]
    cmd = init["command"]
    assert cmd[:3] == ["python", "-m", "llmops_runtime.serve.fetch"]
    assert flag(cmd, "--uri") == "hf://meta/llama" and flag(cmd, "--dest") == B.CACHE_DIR
    assert flag(cmd, "--revision") == "a" * 40 and flag(cmd, "--manifest-sha256") == "b" * 64
    assert flag(cmd, "--link") == "chat-model" and "--allow-pickle" not in cmd
    s = svc(model={"uri": "s3://mm/x", "format": "pickle", "allowPickle": True})
    cmd = deployment(B.build_inference_children(s, B.BuildInputs()))["spec"]["template"]["spec"]["initContainers"][0]["command"]
    assert "--allow-pickle" in cmd


def test_cache_volume_choice():
    def cache_vol(objs):
        return next(v for v in deployment(objs)["spec"]["template"]["spec"]["volumes"] if v["name"] == B.CACHE_VOLUME)

    objs = B.build_inference_children(svc(), B.BuildInputs())
    assert cache_vol(objs) == {"name": "model-cache", "emptyDir": {}}
    objs = B.build_inference_children(svc(cache={"size": "100Gi", "storageClassName": "fast"}), B.BuildInputs())
    pvc = objs[0]
    assert (pvc["kind"], pvc["metadata"]["name"]) == ("PersistentVolumeClaim", "chat-model-cache")
    assert pvc["spec"] == {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "100Gi"}}, "storageClassName": "fast"}
    assert cache_vol(objs)["persistentVolumeClaim"] == {"claimName": "chat-model-cache"}
    objs = B.build_inference_children(svc(cache={"claimName": "shared"}), B.BuildInputs())
    assert "PersistentVolumeClaim" not in [o["kind"] for o in objs]
    assert cache_vol(objs)["persistentVolumeClaim"] == {"claimName": "shared"}


def test_pvc_source_mounted_read_only():
    objs = B.build_inference_children(svc(model={"uri": "pvc://weights/llama"}), B.BuildInputs())
    pod = deployment(objs)["spec"]["template"]["spec"]
    assert {"name": "source-0", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}} in pod["volumes"]
    assert {"mountPath": "/mnt/pvc/weights", "name": "source-0", "readOnly": True} in pod["initContainers"][0]["volumeMounts"]


def test_gpu_requests_equal_limits():
    s = svc(resources={"gpus": 4, "cpu": "8", "memory": "64Gi"}, engine={"tensorParallelSize": 4})
    c = server(B.build_inference_children(s, B.BuildInputs()))
    assert c["resources"]["requests"] == c["resources"]["limits"] == {"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "4"}


@pytest.mark.parametrize(
    ("inputs", "budget"),
    [
        (B.BuildInputs(), B.STARTUP_FLOOR_SECONDS),  # nothing known: the floor
        (B.BuildInputs(load_seconds_p95=100), B.STARTUP_FLOOR_SECONDS),  # small loads: still the floor
        (B.BuildInputs(load_seconds_p95=400), 1200),  # 3x the measured p95 (= floor x 2)
        (B.BuildInputs(load_seconds_p95=410), 2400),  # next doubling step: few template changes
        (B.BuildInputs(model_bytes=140 * 10**9, load_bytes_per_second=10**8), 4800),  # 1400 s estimated, x3 -> 4200 -> 4800
    ],
)
def test_startup_probe_budget(inputs, budget):
    assert B.startup_budget_seconds(inputs) == budget
    c = server(B.build_inference_children(svc(), inputs))
    p = c["startupProbe"]
    assert p["periodSeconds"] * p["failureThreshold"] >= budget
    assert p["httpGet"]["path"] == c["readinessProbe"]["httpGet"]["path"] == "/health"


def test_drain_fits_in_grace_period():
    objs = B.build_inference_children(svc(), B.BuildInputs())
    pod = deployment(objs)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    drain = int(flag(c["args"], "--shutdown-timeout"))
    pre = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > drain + pre


def test_no_annotation_selects_another_server_program():
    """The server is vLLM's CLI whatever the CR says: the old sandbox annotation is inert, so a
    test double can be swapped in only by how a node runs the image (sandbox.node.runtimes)."""
    plain = server(B.build_inference_children(svc(), B.BuildInputs()))
    b = body()
    b["metadata"]["annotations"] = {"llmops.dev/serve-command": "standin"}
    annotated = server(B.build_inference_children(parse_inference_service(b), B.BuildInputs()))
    assert plain["command"] == annotated["command"] == ["vllm", "serve"]
    assert annotated["args"] == plain["args"]


def test_replicas_come_from_inputs():
    assert deployment(B.build_inference_children(svc(maxReplicas=5), B.BuildInputs(replicas=3)))["spec"]["replicas"] == 3


def test_hpa_and_keda_objects():
    auto = {"engine": "hpa", "target": 2, "scaleDown": {"minHoldSeconds": 600}}
    objs = B.build_inference_children(svc(minReplicas=2, maxReplicas=6, autoscaling=auto), B.BuildInputs())
    hpa = objs[-1]
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 6
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService", "name": "chat"}
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "vllm_num_requests_waiting"
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    auto = {"engine": "keda", "signal": "kvCache", "target": 0.8, "scaleToZero": {"enabled": True}}
    objs = B.build_inference_children(svc(minReplicas=0, maxReplicas=4, autoscaling=auto), B.BuildInputs())
    so = objs[-1]
    assert so["kind"] == "ScaledObject" and so["spec"]["minReplicaCount"] == 0 and so["spec"]["maxReplicaCount"] == 4
    trig = so["spec"]["triggers"][0]["metadata"]
    assert "vllm:kv_cache_usage_perc" in trig["query"] and trig["threshold"] == "0.8"
    objs = B.build_inference_children(svc(autoscaling={"engine": "builtin"}), B.BuildInputs())
    assert [o["kind"] for o in objs] == ["Deployment", "Service", "PodDisruptionBudget"]


def test_deterministic_and_input_not_mutated():
    s = svc(adapters=[{"name": "sql", "uri": "s3://ad/sql"}], cache={"size": "1Gi"})
    before = copy.deepcopy(s.model_dump())
    assert B.build_inference_children(s, B.BuildInputs(replicas=2)) == B.build_inference_children(s, B.BuildInputs(replicas=2))
    assert s.model_dump() == before


def test_no_uid_refused():
    b = body()
    del b["metadata"]["uid"]
    with pytest.raises(ValueError, match="uid"):
        B.build_inference_children(parse_inference_service(b), B.BuildInputs())


CRD = pathlib.Path(__file__).resolve().parents[2] / "crds" / "llmops.dev_inferenceservices.yaml"


def test_children_apply_cleanly(kube_client, fresh_namespace, eventually):
    kube = Kube(kube_client, discovery_ttl=0)  # the CRD becomes served during the test
    kube.apply(yaml.safe_load(CRD.read_text()))
    b = body(cache={"size": "1Gi"}, minReplicas=1, maxReplicas=3, autoscaling={"engine": "hpa"})
    b["metadata"] = {"name": "chat", "namespace": fresh_namespace}
    created = eventually(lambda: kube.apply(b), timeout=30)
    s = parse_inference_service(created)
    for obj in B.build_inference_children(s, B.BuildInputs(replicas=1)):
        out = kube.apply(obj)
        assert out["metadata"]["ownerReferences"][0]["uid"] == s.metadata.uid
    assert kube.get("apps/v1", "Deployment", fresh_namespace, "chat")["spec"]["replicas"] == 1


def test_pod_monitor_only_when_asked_and_served():
    asked = svc(monitoring={"podMonitor": True, "interval": "15s"})
    assert "PodMonitor" not in [k for k, _ in kinds(B.build_inference_children(asked, B.BuildInputs()))]  # CRD not served
    (mon,) = [o for o in B.build_inference_children(asked, B.BuildInputs(pod_monitor_served=True)) if o["kind"] == "PodMonitor"]
    assert mon["spec"]["selector"]["matchLabels"] == B.selector_labels(asked)
    assert mon["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    assert mon["metadata"]["ownerReferences"][0]["uid"] == UID
    assert "PodMonitor" not in [k for k, _ in kinds(B.build_inference_children(svc(), B.BuildInputs(pod_monitor_served=True)))]


def test_network_policy_admits_callers_on_the_api_port_and_the_operator_on_both():
    s = svc(networkPolicy={"enabled": True, "allowNamespaces": ["gateway"], "allowPodLabels": {"app": "gw"}})
    (np,) = [o for o in B.build_inference_children(s, B.BuildInputs(operator_namespace="ops")) if o["kind"] == "NetworkPolicy"]
    spec = np["spec"]
    assert spec["podSelector"]["matchLabels"] == B.selector_labels(s) and spec["policyTypes"] == ["Ingress"]
    callers, operator = spec["ingress"]
    assert [f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in callers["from"]] == ["gateway", "ml"]
    assert all(f["podSelector"] == {"matchLabels": {"app": "gw"}} for f in callers["from"])
    assert callers["ports"] == [{"port": B.PORT, "protocol": "TCP"}]  # callers never reach the adapter agent
    assert operator["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}}}]
    assert {p["port"] for p in operator["ports"]} == {B.PORT, B.ADAPTER_AGENT_PORT}
    assert "NetworkPolicy" not in [k for k, _ in kinds(B.build_inference_children(svc(), B.BuildInputs()))]
