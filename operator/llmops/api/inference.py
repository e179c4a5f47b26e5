"""InferenceService: a verified model (plus LoRA adapters) served by vLLM, autoscaled with
knowledge of how long a replica takes to load.

Replica counts: ``minReplicas``/``maxReplicas`` bound every engine. With the builtin
autoscaler the operator sets the Deployment's replicas itself (never this spec). With
``hpa``/``keda`` the rendered HPA/ScaledObject targets this object's scale subresource, which
reads and writes ``spec.replicas``. Scale-to-zero is opt-in only.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from llmops.api.cel import cel
from llmops.api.conditions import Condition, service_state
from llmops.api.finetune import Revision, Sha256
from llmops.api.parse import parse_resource
from llmops.api.resources import Resources
from llmops.api.scalars import MAX_MAP, DNSLabel, DNSSubdomain, ImageRef, LabelKey, Quantity, StorageUri, Time
from llmops.api.schema import keyed
from llmops.api.template import PodTemplate
from llmops.api.wire import GROUP_VERSION, ObjectMeta, SpecModel, StatusModel, derived

KIND: Final = "InferenceService"
PLURAL = "inferenceservices"
SHORT_NAME = "lsvc"
#: Children: Deployment/Service "<name>", PVC "<name>-model-cache" (12), PDB "<name>-pdb",
#: HPA/ScaledObject "<name>"; 45 keeps the longest within 63 with room for a hash suffix.
NAME_MAX = 45
NAME_MAX_WHY = "child names such as <name>-model-cache must stay within 63 characters"

SERVING_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[^\s]*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?|hf://[A-Za-z0-9][-A-Za-z0-9_.]*(/[-A-Za-z0-9_.]+)?|oci://[^\s]+)$"
ServingUri = Annotated[str, StringConstraints(pattern=SERVING_URI_PATTERN, max_length=1024)]


class WeightFormat(str, enum.Enum):
    """Weight file format the server may load."""

    SAFETENSORS = "safetensors"
    PICKLE = "pickle"  # .bin/.pt; executes code on load, so it needs allowPickle


class Model(SpecModel):
    """The model to serve."""

    uri: ServingUri = Field(description="s3://bucket/prefix, pvc://claim/path (same namespace), hf://org/name or oci://registry/repo:tag.")
    revision: Revision | None = Field(default=None, description="Pinned revision; required for hf://.")
    manifest_sha256: Sha256 | None = Field(
        default=None, description="sha256 of the manifest listing every file's sha256; the fetch step verifies it.",
    )
    format: WeightFormat = Field(default=WeightFormat.SAFETENSORS, description="safetensors (default) or pickle (needs allowPickle).")
    allow_pickle: bool = Field(default=False, description="Acknowledge that pickle weights run code when loaded.")
    trust_remote_code: bool = Field(default=False, description="Let vLLM run Python code shipped with the model.")
    served_model_name: Annotated[
        str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_./:]*$")
    ] | None = Field(default=None, description="Model name clients send (default: the InferenceService name).")

    @model_validator(mode="after")
    def _checks(self) -> Model:
        if self.format == WeightFormat.PICKLE and not self.allow_pickle:
            raise ValueError("format pickle needs allowPickle: true")
        if self.uri.startswith("hf://") and not self.revision:
            raise ValueError("revision is required for hf:// models (pin a commit)")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "self.format != 'pickle' || self.allowPickle", "message": "format pickle needs allowPickle: true",
             "fieldPath": ".allowPickle"},
            {"rule": "!self.uri.startsWith('hf://') || has(self.revision)",
             "message": "revision is required for hf:// models (pin a commit)", "fieldPath": ".revision", "reason": "FieldValueRequired"},
        )
    )


class Adapter(SpecModel):
    """A LoRA adapter loaded on every replica."""

    name: DNSLabel = Field(description="Adapter name clients use as the model name.")
    uri: StorageUri | None = Field(default=None, description="s3:// or pvc:// location of the adapter (safetensors).")
    from_finetune_job: DNSLabel | None = Field(
        default=None, description="Name of a FinetuneJob in the same namespace whose output to load.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> Adapter:
        if (self.uri is None) == (self.from_finetune_job is None):
            raise ValueError("set exactly one of uri, fromFinetuneJob")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(("has(self.uri) != has(self.fromFinetuneJob)", "set exactly one of uri, fromFinetuneJob"))
    )


class Dtype(str, enum.Enum):
    """vLLM --dtype."""

    AUTO = "auto"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


class EngineQuantization(str, enum.Enum):
    """vLLM --quantization."""

    NONE = "none"
    AWQ = "awq"
    GPTQ = "gptq"
    FP8 = "fp8"
    BITSANDBYTES = "bitsandbytes"


class LoraMode(str, enum.Enum):
    """When vLLM's LoRA support is on (adapters then load at run time, without a restart)."""

    # on while the service has adapters (spec.adapters or published by a FinetuneJob); switching it on restarts the replicas once
    AUTO = "auto"
    # always on: the first adapter (e.g. a FinetuneJob's) loads without a restart; vLLM reserves memory for maxLoras adapters
    ENABLED = "enabled"


class ExtraArgName(str, enum.Enum):
    """vLLM flags a user may add; everything else is rendered from typed fields or refused.
    Each is accepted by the pinned vLLM's own parser (tests/serve/test_vllm_args.py)."""

    MAX_NUM_BATCHED_TOKENS = "--max-num-batched-tokens"
    BLOCK_SIZE = "--block-size"
    KV_CACHE_DTYPE = "--kv-cache-dtype"
    ENFORCE_EAGER = "--enforce-eager"
    SEED = "--seed"
    MAX_LORA_RANK = "--max-lora-rank"
    ENABLE_CHUNKED_PREFILL = "--enable-chunked-prefill"
    SCHEDULING_POLICY = "--scheduling-policy"


class ExtraArg(SpecModel):
    """One allowlisted vLLM flag."""

    name: ExtraArgName = Field(description="Flag from the allowlist.")
    value: Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z0-9_.:=-]*$")] | None = Field(
        default=None, description="Flag value; unset for boolean flags.",
    )


class Engine(SpecModel):
    """vLLM engine settings (rendered into the server's arguments)."""

    image: ImageRef | None = Field(default=None, description="Server image (default: the operator's pinned llmops server image).")
    tensor_parallel_size: int = Field(default=1, ge=1, le=16, description="GPUs one replica shards the model over (<= resources.gpus).")
    max_model_len: int | None = Field(default=None, ge=16, le=10_485_760, description="Context length limit (default: the model's).")
    gpu_memory_utilization: float = Field(default=0.9, ge=0.1, le=0.99, description="Share of GPU memory vLLM may use.")
    dtype: Dtype = Field(default=Dtype.AUTO, description="auto, float16, bfloat16 or float32.")
    quantization: EngineQuantization = Field(default=EngineQuantization.NONE, description="Weight quantization the checkpoint uses.")
    enable_prefix_caching: bool = Field(default=True, description="Reuse KV cache across requests with a common prefix.")
    max_num_seqs: int | None = Field(default=None, ge=1, le=4096, description="Concurrent sequences per replica.")
    max_loras: int = Field(
        default=4, ge=1, le=64,
        description=(
            "Most adapters loaded per replica (vLLM --max-loras and --max-cpu-loras); "
            "adapters beyond it are not loaded and condition AdaptersReady says so."
        ),
    )
    lora: LoraMode = Field(
        default=LoraMode.AUTO,
        description="auto: LoRA on while the service has adapters (turning it on restarts the replicas once); enabled: always on.",
    )
    extra_args: list[ExtraArg] = Field(
        default_factory=list, max_length=16, json_schema_extra=keyed("name"), description="Allowlisted extra flags (keyed by name).",
    )


class AutoscalingEngine(str, enum.Enum):
    """Who scales the replicas."""

    BUILTIN = "builtin"  # the operator's load-time-aware policy
    HPA = "hpa"  # a rendered HorizontalPodAutoscaler on the scale subresource
    KEDA = "keda"  # a rendered KEDA ScaledObject on the scale subresource


class Signal(str, enum.Enum):
    """Load signal the autoscaler tracks."""

    QUEUE = "queue"  # waiting requests per replica (vllm:num_requests_waiting)
    KV_CACHE = "kvCache"  # KV-cache usage fraction 0..1
    TTFT = "ttft"  # time to first token, seconds (p90)


class ScaleUp(SpecModel):
    """Scale-up behaviour."""

    stabilization_seconds: int = Field(
        default=0, ge=0, le=3600,
        description=(
            "Window the signal must stay high before a scale-up. The builtin policy also adds replicas "
            "at most once per measured load time (the replicas already loading count)."
        ),
    )
    max_step: int | None = Field(
        default=None, ge=1, le=100, description="Most replicas added per decision (default: derived from load time).",
    )


class ScaleDown(SpecModel):
    """Scale-down behaviour. The defaults were chosen on the tune half of the autoscaling bench
    (docs/autoscaling.md, "Where every setting comes from")."""

    hold_load_time_multiple: float = Field(
        default=1.0, ge=0, le=100, description="Hold scale-down for this many measured load times after the last high signal.",
    )
    min_hold_seconds: int = Field(default=900, ge=0, le=86400, description="Lower bound of that hold.")


class ScaleToZero(SpecModel):
    """Opt-in scale to zero."""

    enabled: bool = Field(default=False, description="Allow zero replicas when idle.")
    idle_seconds: int = Field(default=900, ge=60, le=604800, description="Idle time before scaling to zero (the load time is added).")


class Autoscaling(SpecModel):
    """Autoscaling policy."""

    engine: AutoscalingEngine = Field(default=AutoscalingEngine.BUILTIN, description="builtin, hpa or keda.")
    signal: Signal = Field(default=Signal.QUEUE, description="queue, kvCache or ttft.")
    target: float = Field(
        default=4.0, gt=0, le=100_000,
        description="Target per replica: waiting requests (queue), usage fraction (kvCache) or seconds (ttft).",
    )
    scale_up: ScaleUp = Field(default_factory=ScaleUp, description="Scale-up behaviour.")
    scale_down: ScaleDown = Field(default_factory=ScaleDown, description="Scale-down behaviour.")
    scale_to_zero: ScaleToZero = Field(default_factory=ScaleToZero, description="Opt-in scale to zero.")

    @model_validator(mode="after")
    def _target(self) -> Autoscaling:
        if self.signal == Signal.KV_CACHE and self.target > 1:
            raise ValueError("target of signal kvCache is a fraction <= 1")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "self.signal != 'kvCache' || self.target <= 1.0", "message": "target of signal kvCache is a fraction <= 1",
             "fieldPath": ".target"}
        )
    )


class AccessMode(str, enum.Enum):
    """PVC access mode of the model cache."""

    READ_WRITE_MANY = "ReadWriteMany"
    READ_WRITE_ONCE = "ReadWriteOnce"


class Cache(SpecModel):
    """Model cache volume shared by the replicas (the second replica does not download again)."""

    claim_name: DNSSubdomain | None = Field(
        default=None, description="Existing PVC in the same namespace; otherwise the operator creates <name>-model-cache.",
    )
    size: Quantity | None = Field(default=None, description="Size of the created PVC.")
    storage_class_name: DNSSubdomain | None = Field(default=None, description="StorageClass of the created PVC.")
    access_mode: AccessMode = Field(default=AccessMode.READ_WRITE_MANY, description="ReadWriteMany (shared) or ReadWriteOnce.")

    @model_validator(mode="after")
    def _one(self) -> Cache:
        if self.claim_name is not None and (self.size is not None or self.storage_class_name is not None):
            raise ValueError("size and storageClassName apply to a created PVC, not claimName")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "!has(self.claimName) || (!has(self.size) && !has(self.storageClassName))",
                "size and storageClassName apply to a created PVC, not claimName",
            )
        )
    )


class Monitoring(SpecModel):
    """Prometheus Operator scraping of vLLM's own metrics (names unchanged)."""

    pod_monitor: bool = Field(
        default=False, description="Create a monitoring.coreos.com/v1 PodMonitor for the server pods (only where that CRD is served).",
    )
    interval: Annotated[str, StringConstraints(pattern=r"^[0-9]+(s|m)$", max_length=8)] = Field(
        default="30s", description="Scrape interval, e.g. 30s.",
    )


class NetworkPolicyOption(SpecModel):
    """Ingress to the server pods. When enabled, only these may reach the API port (8000), and
    only the operator's namespace may reach the adapter agent (8001) and scrape metrics."""

    enabled: bool = Field(default=False, description="Create a NetworkPolicy for the server pods.")
    allow_namespaces: list[DNSLabel] = Field(
        default_factory=list, max_length=32,
        description=(
            "Namespaces whose pods may call the API (e.g. the gateway's, Prometheus's). "
            "The service's own namespace is always allowed."
        ),
    )
    allow_pod_labels: dict[LabelKey, Annotated[str, StringConstraints(max_length=63)]] = Field(
        default_factory=dict, max_length=MAX_MAP, description="Within those namespaces, only pods with these labels (empty: every pod).",
    )


class Rollout(SpecModel):
    """How a new revision replaces the old one. The default needs no spare GPU."""

    max_surge: int = Field(default=0, ge=0, le=100, description="Extra replicas during a rollout (each needs GPUs).")
    max_unavailable: int = Field(default=1, ge=0, le=100, description="Replicas that may be down during a rollout.")

    @model_validator(mode="after")
    def _progress(self) -> Rollout:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("maxSurge and maxUnavailable cannot both be 0")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(("self.maxSurge > 0 || self.maxUnavailable > 0", "maxSurge and maxUnavailable cannot both be 0"))
    )


def _scale_to_zero(spec: InferenceServiceSpec) -> bool:
    return spec.autoscaling is not None and spec.autoscaling.scale_to_zero.enabled


_ZERO_OK = "(has(self.autoscaling) && has(self.autoscaling.scaleToZero) && self.autoscaling.scaleToZero.enabled)"


class InferenceServiceSpec(SpecModel):
    """Desired state of an InferenceService."""

    model: Model = Field(description="The model to serve.")
    adapters: list[Adapter] = Field(
        default_factory=list, max_length=32, json_schema_extra=keyed("name"),
        description="LoRA adapters loaded on every replica (keyed by name).",
    )
    engine: Engine = Field(default_factory=Engine, description="vLLM engine settings.")
    resources: Resources = Field(default_factory=Resources, description="Per-replica resources.")
    min_replicas: int = Field(
        default=1, ge=0, le=1000, strict=True, description="Fewest replicas; 0 only with autoscaling.scaleToZero.enabled.",
    )
    max_replicas: int = Field(default=1, ge=1, le=1000, strict=True, description="Most replicas.")
    replicas: int | None = Field(
        default=None, ge=0, le=1000, strict=True,
        description="Scale subresource target for HPA/KEDA (engine hpa/keda); the builtin autoscaler never writes it.",
    )
    autoscaling: Autoscaling | None = Field(default=None, description="Autoscaling policy (unset: fixed at minReplicas).")
    cache: Cache = Field(default_factory=Cache, description="Model cache PVC.")
    rollout: Rollout = Field(default_factory=Rollout, description="Rollout of a new revision.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Prometheus Operator scraping (optional).")
    network_policy: NetworkPolicyOption = Field(
        default_factory=NetworkPolicyOption, description="Ingress restriction for the server pods (optional).",
    )
    template: PodTemplate = Field(default_factory=PodTemplate, description="The narrow part of the server pods the user may shape.")

    @model_validator(mode="after")
    def _replicas(self) -> InferenceServiceSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must be <= maxReplicas ({self.max_replicas})")
        if self.min_replicas == 0 and not _scale_to_zero(self):
            raise ValueError("minReplicas 0 needs autoscaling.scaleToZero.enabled: true (scale-to-zero is opt-in)")
        if self.replicas is not None and self.replicas == 0 and not _scale_to_zero(self):
            raise ValueError("replicas 0 needs autoscaling.scaleToZero.enabled: true (scale-to-zero is opt-in)")
        if self.replicas is not None and self.replicas > self.max_replicas:
            raise ValueError("replicas must be <= maxReplicas")
        if self.engine.tensor_parallel_size > max(self.resources.gpus, 1) and self.resources.gpus > 0:
            raise ValueError("engine.tensorParallelSize must be <= resources.gpus")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must be <= maxReplicas", "fieldPath": ".minReplicas"},
            {"rule": f"self.minReplicas > 0 || {_ZERO_OK}",
             "message": "minReplicas 0 needs autoscaling.scaleToZero.enabled: true (scale-to-zero is opt-in)", "fieldPath": ".minReplicas"},
            {"rule": f"!has(self.replicas) || self.replicas > 0 || {_ZERO_OK}",
             "message": "replicas 0 needs autoscaling.scaleToZero.enabled: true (scale-to-zero is opt-in)", "fieldPath": ".replicas"},
            {"rule": "!has(self.replicas) || self.replicas <= self.maxReplicas", "message": "replicas must be <= maxReplicas",
             "fieldPath": ".replicas"},
            {"rule": "!has(self.engine) || !has(self.resources) || self.resources.gpus == 0"
                     " || self.engine.tensorParallelSize <= self.resources.gpus",
             "message": "engine.tensorParallelSize must be <= resources.gpus", "fieldPath": ".engine.tensorParallelSize"},
        )
    )


# --- status ----------------------------------------------------------------------------------


class LoadSeconds(StatusModel):
    """Measured model load time of replicas (fetch + load until ready)."""

    last: float | None = Field(default=None, ge=0, description="Load time of the most recent replica.")
    p95: float | None = Field(default=None, ge=0, description="95th percentile over recent replicas.")


class ScaleDecision(StatusModel):
    """The autoscaler's last change of replicas."""

    time: Time = Field(description="RFC 3339 time of the decision.")
    from_: int = Field(alias="from", ge=0, description="Replicas before.")
    to: int = Field(ge=0, description="Replicas after.")
    signal: Annotated[str, StringConstraints(max_length=32)] | None = Field(default=None, description="Signal that drove it.")
    value: float | None = Field(default=None, description="Signal value per replica at the time.")
    reason: Annotated[str, StringConstraints(max_length=1024)] = Field(default="", description="Why, in words.")


class ResolvedModel(StatusModel):
    """The model actually served."""

    uri: Annotated[str, StringConstraints(max_length=2048)] = Field(description="Resolved location (revision pinned).")
    digest: Annotated[str, StringConstraints(max_length=128)] | None = Field(default=None, description="sha256 of the verified manifest.")


class AdapterStatus(StatusModel):
    """Readiness of one adapter across replicas (spec.adapters first, then those FinetuneJobs publish)."""

    name: Annotated[str, StringConstraints(max_length=63)] = Field(description="Adapter name.")
    uri: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None, description="Resolved location (a FinetuneJob's status.output.uri for fromFinetuneJob and published adapters).",
    )
    finetune_job: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        default=None, description="FinetuneJob the adapter comes from, if any.",
    )
    ready: bool = Field(default=False, description="Loaded on every ready replica.")
    loaded_replicas: int | None = Field(default=None, ge=0, description="Ready replicas that have it loaded.")
    message: Annotated[str, StringConstraints(max_length=4096)] = Field(default="", description="Why not, when not ready.")


class InferenceServiceStatus(StatusModel):
    """Observed state of an InferenceService."""

    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, json_schema_extra=keyed("type"),
        description="Ready, ModelCached, Progressing, Degraded, AdaptersReady.",
    )
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation this status describes.")
    url: Annotated[str, StringConstraints(max_length=2048)] | None = Field(
        default=None, description="In-cluster base URL of the OpenAI-compatible API.",
    )
    replicas: int | None = Field(default=None, ge=0, description="Current replicas (scale subresource statusReplicasPath).")
    ready_replicas: int | None = Field(default=None, ge=0, description="Replicas serving.")
    desired_replicas: int | None = Field(default=None, ge=0, description="Replicas the autoscaler wants.")
    selector: Annotated[str, StringConstraints(max_length=1024)] | None = Field(
        default=None, description="Label selector of the server pods (scale subresource labelSelectorPath).",
    )
    load_seconds: LoadSeconds | None = Field(default=None, description="Measured load time.")
    last_scale_decision: ScaleDecision | None = Field(default=None, description="Last replica change by the autoscaler.")
    model: ResolvedModel | None = Field(default=None, description="Resolved model.")
    adapters: list[AdapterStatus] = Field(
        default_factory=list, max_length=64, json_schema_extra=keyed("name"),
        description="Per-adapter readiness: spec.adapters, then adapters FinetuneJobs publish into this service (at most 64 listed).",
    )

    @derived(
        alias="state", json_schema_extra={"maxLength": 32},
        description="One word for the service: Loading, Ready, Degraded, ScaledToZero or Failed (summarizes the conditions).",
    )
    def state(self) -> str:
        return service_state(self.conditions)[0]

    @derived(alias="stateReason", description="The reason of the condition that gives the state.", json_schema_extra={"maxLength": 1024})
    def state_reason(self) -> str | None:
        return service_state(self.conditions)[1] or None


class InferenceService(BaseModel):
    """An InferenceService object as read from the API server."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["llmops.dev/v1alpha1"] = Field(default=GROUP_VERSION, description="llmops.dev/v1alpha1.")
    kind: Literal["InferenceService"] = Field(default=KIND, description="InferenceService.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: InferenceServiceSpec = Field(description="Desired state.")
    status: InferenceServiceStatus = Field(default_factory=InferenceServiceStatus, description="Observed state.")


def parse_inference_service(body: dict[str, Any]) -> InferenceService:
    """Parse an InferenceService body; raises ApiValidationError naming each field."""
    return parse_resource(InferenceService, body, KIND, NAME_MAX, NAME_MAX_WHY)
