"""InferenceService -> its child objects, as plain dicts ready for server-side apply.

Pure and deterministic (no cluster, clock or randomness). The children of one service:

* a Deployment ``<name>`` of server pods: an init container runs the verified model fetch
  (``python -m llmops_runtime.serve.fetch``) into the model cache volume, then the server
  container runs vLLM's OpenAI server (``vllm serve``) on the cached copy. The cache is the
  PVC named in ``spec.cache.claimName``, a PVC ``<name>-model-cache`` the operator creates
  when ``spec.cache.size`` is set (shared by the replicas: the second one does not download
  again), else an emptyDir per pod. With LoRA on, an ``adapter-agent`` sidecar
  (``python -m llmops_runtime.serve.adapters``) fetches adapters with the same verified
  fetcher and loads them into the local vLLM when the operator asks: the pod template does
  not depend on the list of adapters, so adding or removing one restarts nothing (only
  switching LoRA on, or an adapter on a PVC claim the pods do not mount yet, does);
* a Service ``<name>`` on the server port;
* a PodDisruptionBudget ``<name>-pdb`` (at most one server evicted at a time);
* with ``autoscaling.engine`` hpa/keda: a HorizontalPodAutoscaler or KEDA ScaledObject
  ``<name>`` on the InferenceService's scale subresource, with explicit min/max replicas.

The replica count of the Deployment is decided by the caller (the plan), never read here.

The server command is always vLLM's (``vllm serve`` and the args below): nothing in a CR
selects another program. Where the server runs a test double instead (the sandbox's process
nodes, configured per node: ``llmops.sandbox.node.runtimes``) is decided by how the node runs
the image, never here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from llmops.api import labels as L
from llmops.api.inference import KIND, AutoscalingEngine, EngineQuantization, InferenceService, LoraMode, Signal
from llmops.api.wire import GROUP_VERSION
from llmops.builders import ownership
from llmops.builders.names import bounded_name

DEFAULT_SERVER_IMAGE = "ghcr.io/llmops/llmops-server:0.1.0"  # vLLM + llmops_runtime (fetcher)
SERVE_COMMAND = ["vllm", "serve"]  # vLLM's OpenAI server CLI (the server image's PATH has it)
SERVER_CONTAINER = "server"
FETCH_CONTAINER = "fetch-model"
ADAPTER_AGENT_CONTAINER = "adapter-agent"
SERVER_ROLE = "server"
PORT = 8000
ADAPTER_AGENT_PORT = 8001  # the sidecar's HTTP port (not in the Service: only the operator calls it)
#: requests = limits of the sidecar when the server has resources (keeps the pod's QoS class).
ADAPTER_AGENT_RESOURCES = {"cpu": "500m", "memory": "1Gi"}
ADAPTER_READY_ALLOWANCE_SECONDS = 900  # beyond the server's startup budget: adapter downloads and loads
ADAPTER_READY_PERIOD_SECONDS = 2  # the adapter gate is checked often: it is the last step before serving
CACHE_VOLUME = "model-cache"
CACHE_DIR = "/var/cache/llmops/models"
DSHM_VOLUME = "dshm"
PVC_ROOT = "/mnt/pvc"
MODEL_LINK = "model"  # CACHE_DIR/<name>-model is the served path (the fetcher's --link)
DRAIN_SECONDS = 30  # vLLM --shutdown-timeout: in-flight requests finish
PRESTOP_SECONDS = 5  # endpoints controllers drop the pod before the server stops accepting
GRACE_MARGIN_SECONDS = 15
STARTUP_PERIOD_SECONDS = 10
STARTUP_FLOOR_SECONDS = 600  # generous floor: a first load may compile kernels, warm caches
STARTUP_LOAD_MULTIPLE = 3.0  # budget = this many measured (or estimated) loads
DEFAULT_OPERATOR_NAMESPACE = "llmops-system"  # manifests/; the operator passes its own (POD_NAMESPACE)
DEFAULT_KEDA_PROMETHEUS = "http://prometheus-operated.monitoring.svc:9090"

#: Prometheus names (as exposed through an adapter: ':' -> '_') of the signals, for HPA/KEDA.
SIGNAL_METRICS = {
    Signal.QUEUE: "vllm:num_requests_waiting",
    Signal.KV_CACHE: "vllm:kv_cache_usage_perc",
    Signal.TTFT: "vllm:time_to_first_token_seconds",
}

MONITOR_KIND = ("monitoring.coreos.com/v1", "PodMonitor")
NETWORK_POLICY_KIND = ("networking.k8s.io/v1", "NetworkPolicy")
#: (apiVersion, kind) of every child kind an InferenceService may own (listed and pruned).
CHILD_KINDS = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "PersistentVolumeClaim"),
    ("policy/v1", "PodDisruptionBudget"),
    NETWORK_POLICY_KIND,
)
AUTOSCALER_KINDS = (
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("keda.sh/v1alpha1", "ScaledObject"),
)


# --- names -------------------------------------------------------------------------------------


def deployment_name(name: str) -> str:
    return name


def cache_claim_name(name: str) -> str:
    return bounded_name(name, "-model-cache")


def pdb_name(name: str) -> str:
    return bounded_name(name, "-pdb")


def model_link(name: str) -> str:
    return bounded_name(name, f"-{MODEL_LINK}")


def adapter_link(name: str, adapter: str, uri: str, manifest_sha256: str | None = None) -> str:
    """Cache entry name of one adapter source: a new uri (or pin) is a new path, so the
    operator sees from vLLM's ``/v1/models`` (``root``) whether the loaded copy is current."""
    h = hashlib.sha256(f"{uri}\0{manifest_sha256 or ''}".encode()).hexdigest()[:12]
    return f"lora-{name}-{adapter}-{h}"


def model_path(name: str) -> str:
    return f"{CACHE_DIR}/{model_link(name)}"


def adapter_path(name: str, adapter: str, uri: str, manifest_sha256: str | None = None) -> str:
    return f"{CACHE_DIR}/{adapter_link(name, adapter, uri, manifest_sha256)}"


def adapter_agent_url(pod_ip: str) -> str:
    return f"http://{pod_ip}:{ADAPTER_AGENT_PORT}"


def url(svc: InferenceService) -> str:
    return f"http://{svc.metadata.name}.{svc.metadata.namespace or 'default'}.svc:{PORT}/v1"


# --- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildInputs:
    """Facts decided by the plan (not read here)."""

    replicas: int = 1  # Deployment replicas
    # Every adapter the service loads (spec.adapters resolved, plus those FinetuneJobs publish):
    # name -> uri. Only whether there are any (LoRA on) and their pvc:// claims (mounted) shape
    # the pod template; the list itself does not, so adapters come and go without a restart.
    adapter_uris: Mapping[str, str] = field(default_factory=dict)
    model_bytes: int | None = None  # size of the model (from the fetch marker), if known
    load_bytes_per_second: float | None = None  # measured load rate, if known
    load_seconds_p95: float | None = None  # measured load time (start -> ready), if known
    keda_prometheus: str = DEFAULT_KEDA_PROMETHEUS
    pod_monitor_served: bool = False  # discovery: monitoring.coreos.com/v1 podmonitors exists
    operator_namespace: str = DEFAULT_OPERATOR_NAMESPACE  # may reach the adapter agent and /metrics


def owner_reference(svc: InferenceService) -> dict[str, Any]:
    return ownership.owner_reference(KIND, svc.metadata)


def owner_labels(svc: InferenceService) -> dict[str, str]:
    return ownership.owner_labels(KIND, svc.metadata.name)


def selector_labels(svc: InferenceService) -> dict[str, str]:
    return {L.OWNER_NAME: svc.metadata.name, L.PART_OF: KIND, L.ROLE: SERVER_ROLE}


def selector_string(svc: InferenceService) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(svc).items()))


def _meta(svc: InferenceService, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": svc.metadata.namespace or "default",
        "labels": dict(sorted(owner_labels(svc).items())),
        "ownerReferences": [owner_reference(svc)],
    }


def lora_enabled(svc: InferenceService, inputs: BuildInputs) -> bool:
    """LoRA on: engine.lora enabled, or the service has adapters (listed, or published to it)."""
    return svc.spec.engine.lora == LoraMode.ENABLED or bool(svc.spec.adapters) or bool(inputs.adapter_uris)


def server_args(svc: InferenceService, lora: bool | None = None) -> list[str]:
    """``vllm serve`` arguments rendered from the typed spec (no free-form flags). ``lora``:
    whether LoRA is on (default: engine.lora enabled or spec.adapters non-empty)."""
    eng, model = svc.spec.engine, svc.spec.model
    args = [
        model_path(svc.metadata.name),
        "--served-model-name", model.served_model_name or svc.metadata.name,
        "--port", str(PORT),
        "--tensor-parallel-size", str(eng.tensor_parallel_size),
        "--gpu-memory-utilization", f"{eng.gpu_memory_utilization:g}",
        "--dtype", eng.dtype.value,
        # Pickle weights run code on load: only with allowPickle may vLLM fall back to them.
        "--load-format", "auto" if model.allow_pickle else "safetensors",
        "--enable-prefix-caching" if eng.enable_prefix_caching else "--no-enable-prefix-caching",
        "--shutdown-timeout", str(DRAIN_SECONDS),
    ]
    if eng.max_model_len is not None:
        args += ["--max-model-len", str(eng.max_model_len)]
    if eng.quantization != EngineQuantization.NONE:
        args += ["--quantization", eng.quantization.value]
    if eng.max_num_seqs is not None:
        args += ["--max-num-seqs", str(eng.max_num_seqs)]
    if lora is None:
        lora = lora_enabled(svc, BuildInputs())
    if lora:
        # Fixed by engine.maxLoras, not by the number of adapters: the operator loads at most
        # that many per replica, so the list can change without changing the pod template.
        args += ["--enable-lora", "--max-loras", str(eng.max_loras), "--max-cpu-loras", str(eng.max_loras)]
    if model.trust_remote_code:
        args.append("--trust-remote-code")
    for extra in eng.extra_args:
        args.append(extra.name.value)
        if extra.value is not None:
            args.append(extra.value)
    return args


def fetch_args(uri: str, dest: str, link: str, *, revision: str | None = None, manifest_sha256: str | None = None,
               allow_pickle: bool = False) -> list[str]:
    args = ["python", "-m", "llmops_runtime.serve.fetch", "--uri", uri, "--dest", dest, "--link", link]
    if revision:
        args += ["--revision", revision]
    if manifest_sha256:
        args += ["--manifest-sha256", manifest_sha256]
    if allow_pickle:
        args.append("--allow-pickle")
    return args


def startup_budget_seconds(inputs: BuildInputs) -> int:
    """Seconds the startup probe allows: a multiple of the measured load (or size / rate), floored,
    rounded up to floor x 2^k."""
    estimate = 0.0
    if inputs.load_seconds_p95:
        estimate = inputs.load_seconds_p95
    elif inputs.model_bytes and inputs.load_bytes_per_second:
        estimate = inputs.model_bytes / inputs.load_bytes_per_second
    need = STARTUP_LOAD_MULTIPLE * estimate
    if need <= STARTUP_FLOOR_SECONDS:
        return STARTUP_FLOOR_SECONDS
    # Doubling steps above the floor: a drifting load measurement changes the pod template
    # (and so rolls the Deployment) only when it crosses a power of two.
    return STARTUP_FLOOR_SECONDS << math.ceil(math.log2(need / STARTUP_FLOOR_SECONDS))  # x 2**n, n >= 1


def per_pod_resources(svc: InferenceService) -> dict[str, str]:
    return svc.spec.resources.quantities()


def adapter_agent_args(svc: InferenceService) -> list[str]:
    return ["python", "-m", "llmops_runtime.serve.adapters", "--port", str(ADAPTER_AGENT_PORT), "--cache-dir", CACHE_DIR,
            "--server-port", str(PORT), "--max-adapters", str(svc.spec.engine.max_loras)]


def _pvc_claims(svc: InferenceService, inputs: BuildInputs) -> list[str]:
    """Claims of pvc:// sources (model and adapters), sorted and unique."""
    uris = [svc.spec.model.uri] + [a.uri for a in svc.spec.adapters if a.uri] + list(inputs.adapter_uris.values())
    return sorted({u[len("pvc://"):].split("/", 1)[0] for u in uris if u.startswith("pvc://")})


def _cache_volume(svc: InferenceService) -> dict[str, Any]:
    c = svc.spec.cache
    if c.claim_name:
        return {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": c.claim_name}}
    if c.size:
        return {"name": CACHE_VOLUME, "persistentVolumeClaim": {"claimName": cache_claim_name(svc.metadata.name)}}
    return {"name": CACHE_VOLUME, "emptyDir": {}}


def build_pod_template(svc: InferenceService, inputs: BuildInputs) -> dict[str, Any]:
    spec, tmpl, name = svc.spec, svc.spec.template, svc.metadata.name
    claims = _pvc_claims(svc, inputs)
    shm: dict[str, Any] = {"medium": "Memory"}
    if spec.resources.shared_memory:
        shm["sizeLimit"] = spec.resources.shared_memory
    volumes: list[dict[str, Any]] = [_cache_volume(svc), {"name": DSHM_VOLUME, "emptyDir": shm}]
    source_mounts: list[dict[str, Any]] = []
    for i, claim in enumerate(claims):
        vol = f"source-{i}"
        volumes.append({"name": vol, "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        source_mounts.append({"mountPath": f"{PVC_ROOT}/{claim}", "name": vol, "readOnly": True})
    volumes += [v.wire() for v in tmpl.volumes]
    cache_mount = {"mountPath": CACHE_DIR, "name": CACHE_VOLUME}
    user_env = [e.wire() for e in tmpl.env]
    fetch_env = [{"name": "LLMOPS_PVC_ROOT", "value": PVC_ROOT}, *user_env]
    env_from = [e.wire() for e in tmpl.env_from]

    def fetcher(cname: str, args: list[str]) -> dict[str, Any]:
        c: dict[str, Any] = {
            "name": cname,
            "image": image,
            "command": args,
            "env": fetch_env,
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [cache_mount, *source_mounts],
        }
        if env_from:
            c["envFrom"] = env_from
        return c

    image = spec.engine.image or DEFAULT_SERVER_IMAGE
    model = spec.model
    inits = [fetcher(FETCH_CONTAINER, fetch_args(model.uri, CACHE_DIR, model_link(name), revision=model.revision,
                                                 manifest_sha256=model.manifest_sha256, allow_pickle=model.allow_pickle))]

    res = per_pod_resources(svc)
    lora = lora_enabled(svc, inputs)
    env = list(user_env)
    if lora:
        env.append({"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"})
    budget = startup_budget_seconds(inputs)
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image,
        "command": list(SERVE_COMMAND),
        "args": server_args(svc, lora),
        "env": env,
        "ports": [{"containerPort": PORT, "name": "http", "protocol": "TCP"}],
        "resources": {"limits": dict(res), "requests": dict(res)} if res else {},
        "startupProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": STARTUP_PERIOD_SECONDS,
                          "failureThreshold": math.ceil(budget / STARTUP_PERIOD_SECONDS)},
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 15, "failureThreshold": 4},
        "lifecycle": {"preStop": {"sleep": {"seconds": PRESTOP_SECONDS}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",  # vLLM's last stderr lines name the cause
        "volumeMounts": [cache_mount, {"mountPath": "/dev/shm", "name": DSHM_VOLUME},
                         *[m.wire() for m in tmpl.volume_mounts if m.mount_path not in ("/dev/shm", CACHE_DIR)]],
    }
    if env_from:
        server["envFrom"] = env_from
    containers = [server]
    if lora:
        # Adapters are fetched and loaded at run time by this sidecar (asked by the operator),
        # never by init containers: the template stays the same when adapters change.
        agent = fetcher(ADAPTER_AGENT_CONTAINER, adapter_agent_args(svc))
        agent["ports"] = [{"containerPort": ADAPTER_AGENT_PORT, "name": "adapters", "protocol": "TCP"}]
        # A new replica joins the Service only once its adapters are loaded (or failed): the
        # startupProbe on /ready, with the server's budget plus time for the adapters. After
        # that, liveness only: a stuck agent is restarted, but never takes the server out of
        # the Service.
        agent["startupProbe"] = {"httpGet": {"path": "/ready", "port": "adapters"}, "periodSeconds": ADAPTER_READY_PERIOD_SECONDS,
                                 "failureThreshold": math.ceil((budget + ADAPTER_READY_ALLOWANCE_SECONDS) / ADAPTER_READY_PERIOD_SECONDS)}
        agent["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "adapters"}, "periodSeconds": 10, "failureThreshold": 3}
        if res:
            agent["resources"] = {"limits": dict(ADAPTER_AGENT_RESOURCES), "requests": dict(ADAPTER_AGENT_RESOURCES)}
        containers.append(agent)
    pod_spec: dict[str, Any] = {
        "containers": containers,
        "enableServiceLinks": False,
        "initContainers": inits,
        "terminationGracePeriodSeconds": PRESTOP_SECONDS + DRAIN_SECONDS + GRACE_MARGIN_SECONDS,
        "volumes": volumes,
    }
    if tmpl.service_account_name:
        pod_spec["serviceAccountName"] = tmpl.service_account_name
    if tmpl.node_selector:
        pod_spec["nodeSelector"] = dict(sorted(tmpl.node_selector.items()))
    if tmpl.tolerations:
        pod_spec["tolerations"] = [t.wire() for t in tmpl.tolerations]
    if tmpl.affinity:
        pod_spec["affinity"] = tmpl.affinity.wire() if hasattr(tmpl.affinity, "wire") else tmpl.affinity
    meta: dict[str, Any] = {"labels": dict(sorted({**tmpl.labels, **owner_labels(svc), **selector_labels(svc)}.items()))}
    if tmpl.annotations:
        meta["annotations"] = dict(sorted(tmpl.annotations.items()))
    return {"metadata": meta, "spec": pod_spec}


def build_deployment(svc: InferenceService, inputs: BuildInputs) -> dict[str, Any]:
    ro = svc.spec.rollout
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(svc, deployment_name(svc.metadata.name)),
        "spec": {
            "replicas": inputs.replicas,
            "selector": {"matchLabels": dict(sorted(selector_labels(svc).items()))},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": ro.max_surge, "maxUnavailable": ro.max_unavailable}},
            "template": build_pod_template(svc, inputs),
        },
    }


def build_service(svc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(svc, svc.metadata.name),
        "spec": {
            "ports": [{"name": "http", "port": PORT, "protocol": "TCP", "targetPort": "http"}],
            "selector": dict(sorted(selector_labels(svc).items())),
            "type": "ClusterIP",
        },
    }


def build_pdb(svc: InferenceService) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(svc, pdb_name(svc.metadata.name)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(sorted(selector_labels(svc).items()))}},
    }


def build_cache_pvc(svc: InferenceService) -> dict[str, Any] | None:
    c = svc.spec.cache
    if c.claim_name or not c.size:
        return None
    spec: dict[str, Any] = {"accessModes": [c.access_mode.value], "resources": {"requests": {"storage": c.size}}}
    if c.storage_class_name:
        spec["storageClassName"] = c.storage_class_name
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(svc, cache_claim_name(svc.metadata.name)), "spec": spec}


def _scale_target(svc: InferenceService) -> dict[str, str]:
    return {"apiVersion": GROUP_VERSION, "kind": KIND, "name": svc.metadata.name}


def _min_replicas(svc: InferenceService) -> int:
    return svc.spec.min_replicas


def build_hpa(svc: InferenceService) -> dict[str, Any]:
    a = svc.spec.autoscaling
    assert a is not None
    metric = SIGNAL_METRICS[a.signal].replace(":", "_")
    hold = int(a.scale_down.min_hold_seconds)
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _meta(svc, svc.metadata.name),
        "spec": {
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": min(hold, 3600)},
                "scaleUp": {"stabilizationWindowSeconds": a.scale_up.stabilization_seconds},
            },
            "maxReplicas": svc.spec.max_replicas,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": metric},
                                                   "target": {"type": "AverageValue", "averageValue": f"{a.target:g}"}}}],
            "minReplicas": max(1, _min_replicas(svc)),  # HPA's minReplicas 0 needs an alpha gate
            "scaleTargetRef": _scale_target(svc),
        },
    }


def build_scaled_object(svc: InferenceService, inputs: BuildInputs) -> dict[str, Any]:
    a = svc.spec.autoscaling
    assert a is not None
    ns = svc.metadata.namespace or "default"
    sel = f'namespace="{ns}",pod=~"{svc.metadata.name}-.*"'
    metric = SIGNAL_METRICS[a.signal]
    query = (f"avg(rate({metric}_sum{{{sel}}}[1m]) / rate({metric}_count{{{sel}}}[1m]))" if a.signal == Signal.TTFT
             else f"avg({metric}{{{sel}}})" if a.signal == Signal.KV_CACHE else f"sum({metric}{{{sel}}})")
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(svc, svc.metadata.name),
        "spec": {
            "cooldownPeriod": int(a.scale_to_zero.idle_seconds),
            "maxReplicaCount": svc.spec.max_replicas,
            "minReplicaCount": _min_replicas(svc),
            "scaleTargetRef": _scale_target(svc),
            "triggers": [{"type": "prometheus", "metadata": {
                "query": query, "serverAddress": inputs.keda_prometheus, "threshold": f"{a.target:g}",
                **({"metricType": "AverageValue"} if a.signal == Signal.QUEUE else {"metricType": "Value"}),
            }}],
        },
    }


def build_pod_monitor(svc: InferenceService) -> dict[str, Any]:
    """Scrape vLLM's /metrics on every server pod, metric names untouched."""
    return {
        "apiVersion": MONITOR_KIND[0], "kind": MONITOR_KIND[1], "metadata": _meta(svc, svc.metadata.name),
        "spec": {"selector": {"matchLabels": selector_labels(svc)},
                 "podMetricsEndpoints": [{"port": "http", "path": "/metrics", "interval": svc.spec.monitoring.interval}]},
    }


def build_network_policy(svc: InferenceService, inputs: BuildInputs) -> dict[str, Any]:
    """API port from the service's namespace and the allowed ones (optionally by pod labels);
    API and adapter-agent ports from the operator's namespace (scrapes, adapter loads)."""
    np = svc.spec.network_policy
    ns = svc.metadata.namespace or "default"
    pods = {"podSelector": {"matchLabels": dict(np.allow_pod_labels)}} if np.allow_pod_labels else {}
    callers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": n}}, **pods}
               for n in sorted({ns, *np.allow_namespaces})]
    operator = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": inputs.operator_namespace}}}]
    return {
        "apiVersion": NETWORK_POLICY_KIND[0], "kind": NETWORK_POLICY_KIND[1], "metadata": _meta(svc, svc.metadata.name),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(svc)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": callers, "ports": [{"port": PORT, "protocol": "TCP"}]},
                {"from": operator, "ports": [{"port": PORT, "protocol": "TCP"}, {"port": ADAPTER_AGENT_PORT, "protocol": "TCP"}]},
            ],
        },
    }


def build_inference_children(svc: InferenceService, inputs: BuildInputs) -> list[dict[str, Any]]:
    """Every child the service should have."""
    if not svc.metadata.uid:
        raise ValueError("the InferenceService has no metadata.uid: children need an owner reference")
    out: list[dict[str, Any]] = []
    pvc = build_cache_pvc(svc)
    if pvc:
        out.append(pvc)
    out += [build_deployment(svc, inputs), build_service(svc), build_pdb(svc)]
    if svc.spec.monitoring.pod_monitor and inputs.pod_monitor_served:
        out.append(build_pod_monitor(svc))
    if svc.spec.network_policy.enabled:
        out.append(build_network_policy(svc, inputs))
    a = svc.spec.autoscaling
    if a is not None and a.engine == AutoscalingEngine.HPA:
        out.append(build_hpa(svc))
    elif a is not None and a.engine == AutoscalingEngine.KEDA:
        out.append(build_scaled_object(svc, inputs))
    return out
