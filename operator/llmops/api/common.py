"""Building blocks shared by the three kinds: wire conventions, constrained scalar types and
the spec sections TrainingJob and FinetuneJob both carry (resources, network, scheduling,
checkpoint, failurePolicy, runPolicy, the narrow pod template).

Conventions (Kubernetes API conventions, enforced here once):

- camelCase on the wire (``alias_generator=to_camel``), snake_case in Python;
- spec models reject unknown fields (``extra="forbid"``) so a typo is an error, not a no-op;
- every number, string and list is bounded, so CEL cost estimates stay finite and the
  generated CRD carries the same limits as the Python model;
- references are names only (Secrets, ConfigMaps, PVCs, ServiceAccounts, other jobs): there is
  no namespace field anywhere, so a cross-namespace reference cannot be expressed.

CEL rules that the CRD must carry for a model are attached with :func:`cel` and mirrored by a
pydantic validator, so ``llmops validate`` (pydantic + schema) and the API server agree.
"""

from __future__ import annotations

import enum
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

import llmops
from llmops.api import runtime_env

# one constant per fact: these are llmops/__init__.py's, under the names the API models use
API_GROUP, VERSION, GROUP_VERSION = llmops.GROUP, llmops.VERSION, llmops.API_VERSION

# --- wire base classes -------------------------------------------------------------------------


class SpecModel(BaseModel):
    """Base of every spec section: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(BaseModel):
    """Base of status sections: camelCase, unknown fields ignored (old operators wrote them)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(*rules: tuple[str, str] | dict[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying x-kubernetes-validations (rule, message[, fieldPath, reason])."""
    out = []
    for rule in rules:
        out.append(dict(rule) if isinstance(rule, dict) else {"rule": rule[0], "message": rule[1]})
    return {"x-kubernetes-validations": out}


def keyed(*keys: str) -> dict[str, Any]:
    """json_schema_extra for a list of objects keyed by ``keys`` (listType=map): server-side
    apply merges items by key and the API server rejects duplicate keys."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def as_set() -> dict[str, Any]:
    """json_schema_extra for a list of unique scalars (listType=set)."""
    return {"x-kubernetes-list-type": "set"}


def immutable_while_running(fields: tuple[str, ...], running_type: str = "Running") -> list[dict[str, str]]:
    """Root-level CEL transition rules freezing ``spec.<field>`` for each field while the old
    object's ``running_type`` condition is True (the kind's status carries conditions)."""
    running = (
        "has(oldSelf.status) && has(oldSelf.status.conditions) && "
        f"oldSelf.status.conditions.exists(c, c.type == '{running_type}' && c.status == 'True')"
    )
    rules = []
    for f in fields:
        new, old = f"self.spec.{f}", f"oldSelf.spec.{f}"
        same = f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))"
        rules.append(
            {
                "rule": f"!({running}) || {same}",
                "message": f"spec.{f} is immutable while the job is Running (suspend it first)",
                "fieldPath": f".spec.{f}",
                "reason": "FieldValueForbidden",
            }
        )
    return rules


def preserve_unknown() -> dict[str, Any]:
    """json_schema_extra for opaque Kubernetes objects passed through unchanged (e.g. affinity)."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


# --- constrained scalars ---------------------------------------------------------------------

#: Kubernetes resource quantity, the common subset: decimal number with an optional SI or
#: binary suffix ("500m", "2", "16Gi", "1.5G"). Exponent forms are rejected on purpose.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


def _quantity_from_int(value: Any) -> Any:
    # Kubernetes quantities are int-or-string ("cpu: 8" is as valid as "cpu: '8'").
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity_from_int),
    StringConstraints(pattern=QUANTITY_PATTERN, max_length=32),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "maxLength": 32,
        }
    ),
]

#: RFC 1123 label (most object names: Secrets, ConfigMaps, PVCs, ServiceAccounts).
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNSLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=63)]
#: RFC 1123 subdomain (Secret/ConfigMap/PVC/PriorityClass names may contain dots).
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNSSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, min_length=1, max_length=253)]
#: Extended resource name such as nvidia.com/gpu, amd.com/gpu, habana.ai/gaudi, rdma/hca.
RESOURCE_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ResourceName = Annotated[str, StringConstraints(pattern=RESOURCE_NAME_PATTERN, min_length=1, max_length=253)]
#: C identifier-ish environment variable name (what kubelet accepts, minus exotic characters).
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN, min_length=1, max_length=128)]
#: Label/annotation keys and values; values are bounded to keep CEL costs and objects small.
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=253)]
# A qualified name as pods want it in label/annotation/nodeSelector keys: an optional DNS-subdomain
# prefix and '/', then 1-63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
QUALIFIED_NAME_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
LabelValue = Annotated[str, StringConstraints(max_length=63, pattern=LABEL_VALUE_PATTERN)]


def qualified_keys(what: str) -> dict[str, Any]:
    """CEL on a map: every key is a qualified name (the structural schema cannot constrain keys,
    and pods with a bad key are refused only when the operator creates them)."""
    return cel((f"self.all(k, size(k) <= 317 && k.matches('{QUALIFIED_NAME_PATTERN}'))",
                f"{what} keys must be qualified names: an optional DNS prefix and '/', then at most 63 of "
                "[A-Za-z0-9-_.] starting and ending alphanumeric (e.g. 'team' or 'example.com/team')"))
ShortText = Annotated[str, StringConstraints(max_length=1024)]
Arg = Annotated[str, StringConstraints(max_length=4096)]
ImageRef = Annotated[str, StringConstraints(min_length=1, max_length=512, pattern=r"^[^\s]+$")]
#: Checkpoint / artifact locations this project can write: S3 (or compatible) and PVCs.
STORAGE_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[^\s]*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?)$"
StorageUri = Annotated[str, StringConstraints(pattern=STORAGE_URI_PATTERN, max_length=1024)]
#: RFC 3339 timestamps as Kubernetes writes them (status only).
Time = Annotated[str, StringConstraints(max_length=64)]

MAX_LIST = 64  # default bound on user lists (env, volumes, tolerations, ...)
MAX_MAP = 64  # default bound on user maps (labels, nodeSelector, ...)


# --- errors ----------------------------------------------------------------------------------


class ApiValidationError(ValueError):
    """A custom resource failed the typed model; each entry names the field path."""

    def __init__(self, kind: str, name: str, errors: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.name = name
        self.errors = errors
        joined = "; ".join(f"{path}: {msg}" for path, msg in errors)
        super().__init__(f'{kind} "{name}" is invalid: {joined}')


def field_path(loc: tuple[Any, ...]) -> str:
    """Pydantic location -> Kubernetes-style path: ('spec','env',0,'name') -> spec.env[0].name."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "model-")):
            continue  # pydantic's internal validator frames
        else:
            out += ("." if out else "") + str(part)
    return out


def errors_from(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten a pydantic ValidationError into (field path, message) pairs."""
    out = []
    for err in exc.errors():
        path = field_path(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not part of the API)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append((f"{prefix}{path}" if path else prefix.rstrip("."), msg))
    return out


# --- resources -------------------------------------------------------------------------------


class Resources(SpecModel):
    """Per-node (per-pod) resources. One worker pod runs on each node and owns its GPUs."""

    gpus: int = Field(
        default=0, ge=0, le=64, strict=True,
        description="Accelerators per node (whole devices, an integer >= 0). 0 runs on CPU.",
    )
    gpu_resource_name: ResourceName = Field(
        default="nvidia.com/gpu",
        description="Extended resource that counts accelerators, e.g. nvidia.com/gpu, amd.com/gpu, habana.ai/gaudi.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request and limit per node, e.g. \"8\" or \"500m\".")
    memory: Quantity | None = Field(default=None, description="Memory request and limit per node, e.g. \"64Gi\".")
    shared_memory: Quantity | None = Field(
        default=None,
        description="Size of the in-memory /dev/shm volume (NCCL and data loaders need more than the 64Mi default).",
    )

    def quantities(self) -> dict[str, str]:
        """What one pod requests (requests == limits): cpu, memory and the accelerators under
        their resource name, sorted by name; unset ones left out."""
        out = {"cpu": self.cpu, "memory": self.memory, self.gpu_resource_name: str(self.gpus) if self.gpus else None}
        return {k: v for k, v in sorted(out.items()) if v}


# --- network ---------------------------------------------------------------------------------


class RdmaResource(SpecModel):
    """One RDMA device resource requested per node."""

    name: ResourceName = Field(description="Device plugin resource, e.g. rdma/hca or an SR-IOV resource name.")
    count: int = Field(default=1, ge=1, le=64, description="Devices per node.")


class Rdma(SpecModel):
    """RDMA / InfiniBand / RoCE settings for multi-node collectives."""

    resources: list[RdmaResource] = Field(
        default_factory=list, max_length=8, json_schema_extra=keyed("name"), description="Device resources requested per node (keyed by name)."
    )
    networks: list[DNSLabel] = Field(
        default_factory=list, max_length=8, json_schema_extra=as_set(),
        description="Multus NetworkAttachmentDefinition names in the job's namespace (names only: no namespace).",
    )
    nccl_socket_ifname: Annotated[str, StringConstraints(max_length=128, pattern=r"^[A-Za-z0-9_,^=.-]*$")] | None = Field(
        default=None, description="NCCL_SOCKET_IFNAME for bootstrap traffic, e.g. eth0 or ^lo,docker."
    )
    nccl_ib_hca: Annotated[str, StringConstraints(max_length=256, pattern=r"^[A-Za-z0-9_,^=:.-]*$")] | None = Field(
        default=None, description="NCCL_IB_HCA selecting the HCAs, e.g. mlx5_0,mlx5_1."
    )

    @field_validator("resources")
    @classmethod
    def _unique_resources(cls, v: list[RdmaResource]) -> list[RdmaResource]:
        _require_unique([r.name for r in v], "name")
        return v


class Network(SpecModel):
    """Network settings of the worker pods."""

    rdma: Rdma | None = Field(default=None, description="RDMA devices, secondary networks and NCCL hints.")


# --- scheduling ------------------------------------------------------------------------------


class GangBackend(str, enum.Enum):
    """Who enforces all-or-nothing placement of the worker pods."""

    AUTO = "auto"  # the operator picks the first served: native, volcano, coscheduling, kueue, none
    NATIVE = "native"  # Kubernetes' own PodGroup (scheduling.k8s.io, GangScheduling feature)
    VOLCANO = "volcano"  # Volcano PodGroup + schedulerName volcano
    COSCHEDULING = "coscheduling"  # scheduler-plugins PodGroup (scheduling.x-k8s.io)
    KUEUE = "kueue"  # Kueue admits the job's quota (queueName required in practice)
    NONE = "none"  # no gang object; the operator's all-or-nothing timeout still applies


class Gang(SpecModel):
    """Gang scheduling: all worker pods start together or none do."""

    backend: GangBackend = Field(default=GangBackend.AUTO, description="Gang backend: auto, native, volcano, coscheduling, kueue or none.")
    timeout_seconds: int | None = Field(
        default=None, ge=1, le=86400,
        description="How long the gang may wait to be placed; then every pod is deleted, the job reports Queued (SchedulingTimeout) and retries with backoff.",
    )


class Scheduling(SpecModel):
    """Placement policy of the worker pods."""

    gang: Gang = Field(default_factory=Gang, description="Gang scheduling settings.")
    queue_name: DNSLabel | None = Field(
        default=None, description="Queue (Kueue LocalQueue or Volcano queue) name, in the job's namespace."
    )
    priority_class_name: DNSSubdomain | None = Field(default=None, description="PriorityClass of the worker pods.")


# --- checkpoint ------------------------------------------------------------------------------


class Credentials(SpecModel):
    """How pods authenticate to checkpoint storage: a Secret or the pod's ServiceAccount (IRSA etc.)."""

    secret_name: DNSSubdomain | None = Field(
        default=None,
        description="Secret in the job's namespace with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and optional AWS_ENDPOINT_URL). Name only: no namespace.",
    )
    service_account_name: DNSSubdomain | None = Field(
        default=None, description="Use this ServiceAccount's workload identity instead of a Secret."
    )

    @model_validator(mode="after")
    def _one_of(self) -> Credentials:
        if self.secret_name and self.service_account_name:
            raise ValueError("set secretName or serviceAccountName, not both")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(("!(has(self.secretName) && has(self.serviceAccountName))", "set secretName or serviceAccountName, not both"))
    )


class ResumePolicy(str, enum.Enum):
    """Whose checkpoints at ``checkpoint.uri`` a job may resume."""

    SAME_RUN = "SameRun"  # only this object's (its uid); another run's checkpoints there fail the job, untouched
    CONTINUE = "Continue"  # also the newest one an earlier object left (a deleted and re-created job continues)


class Checkpoint(SpecModel):
    """Step-level checkpoints: sharded, committed by manifest then pointer, resumed after restarts."""

    uri: StorageUri = Field(description="Where checkpoints go: s3://bucket/prefix or pvc://claim/path (claim in the job's namespace).")
    every_steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Save every N optimizer steps.")
    every_seconds: int | None = Field(default=None, ge=30, le=604800, description="Save at least this often (seconds).")
    keep_last: int = Field(default=3, ge=1, le=100, description="Committed checkpoints kept; older ones are deleted after a newer commit.")
    max_age_seconds: int | None = Field(
        default=None, ge=60, le=604800,
        description="While saves fail, keep training as long as the last good checkpoint is younger than this.",
    )
    credentials: Credentials | None = Field(default=None, description="Storage credentials (S3 only).")
    resume_policy: ResumePolicy = Field(
        default=ResumePolicy.SAME_RUN,
        description="SameRun: resume only checkpoints this object wrote; if the uri holds another run's (a deleted "
                    "job's), fail with CheckpointOwnedByAnotherRun and touch nothing. Continue: also continue from "
                    "the newest checkpoint another run left there (same world size), keeping it until a newer commit.",
    )

    @model_validator(mode="after")
    def _trigger(self) -> Checkpoint:
        if self.every_steps is None and self.every_seconds is None:
            raise ValueError("set everySteps and/or everySeconds")
        return self

    model_config = ConfigDict(json_schema_extra=cel(("has(self.everySteps) || has(self.everySeconds)", "set everySteps and/or everySeconds")))


# --- failure / run policy --------------------------------------------------------------------


class Backoff(SpecModel):
    """Exponential delay between gang restarts."""

    initial_seconds: int = Field(default=10, ge=0, le=3600, description="Delay before the first restart.")
    max_seconds: int = Field(default=300, ge=0, le=86400, description="Upper bound of the delay.")

    @model_validator(mode="after")
    def _order(self) -> Backoff:
        if self.initial_seconds > self.max_seconds:
            raise ValueError("initialSeconds must be <= maxSeconds")
        return self

    model_config = ConfigDict(json_schema_extra=cel(("self.initialSeconds <= self.maxSeconds", "initialSeconds must be <= maxSeconds")))


class FailurePolicy(SpecModel):
    """When and how often the whole gang restarts from the last committed checkpoint."""

    max_restarts: int = Field(default=3, ge=0, le=1000, description="Restarts counted against the budget (infrastructure disruptions are not counted).")
    backoff: Backoff = Field(default_factory=Backoff, description="Delay between restarts.")
    hang_timeout_seconds: int | None = Field(
        default=None, ge=60, le=86400,
        description="Restart the gang when rank 0's heartbeat is older than this (unset: hang detection off).",
    )


class RunPolicy(SpecModel):
    """Lifecycle knobs of the job as a whole."""

    suspend: bool = Field(default=False, description="True deletes the worker pods and keeps the job (resume from the checkpoint on false).")
    active_deadline_seconds: int | None = Field(default=None, ge=1, le=31_536_000, description="Fail the job after this many seconds of running.")
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0, le=31_536_000, description="Delete the job this long after it finished.")


# --- narrow pod template ---------------------------------------------------------------------


class KeyRef(SpecModel):
    """A key in a Secret or ConfigMap of the same namespace (name only, no namespace)."""

    name: DNSSubdomain = Field(description="Object name in the job's namespace.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(description="Key inside the object.")
    optional: bool | None = Field(default=None, description="Start even when the key is missing.")


class FieldRef(SpecModel):
    """Downward API field of the pod."""

    field_path: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(description="e.g. metadata.name, status.podIP.")


class ResourceFieldRef(SpecModel):
    """Downward API resource of the trainer container."""

    resource: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(description="e.g. limits.memory.")
    divisor: Quantity | None = Field(default=None, description="Unit of the exposed value.")


class EnvVarSource(SpecModel):
    """Where an env value comes from; exactly one source."""

    secret_key_ref: KeyRef | None = Field(default=None, description="Key of a Secret in the job's namespace.")
    config_map_key_ref: KeyRef | None = Field(default=None, description="Key of a ConfigMap in the job's namespace.")
    field_ref: FieldRef | None = Field(default=None, description="Pod field via the downward API.")
    resource_field_ref: ResourceFieldRef | None = Field(default=None, description="Container resource via the downward API.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvVarSource:
        if sum(x is not None for x in (self.secret_key_ref, self.config_map_key_ref, self.field_ref, self.resource_field_ref)) != 1:
            raise ValueError("set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), has(self.resourceFieldRef)].filter(x, x).size() == 1",
                "set exactly one of secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef",
            )
        )
    )


def _reserved_env_rule() -> dict[str, str]:
    names = ", ".join(f"'{n}'" for n in sorted(runtime_env.RESERVED_NAMES))
    prefixes = " || ".join(f"self.startsWith('{p}')" for p in runtime_env.RESERVED_PREFIXES)
    return {
        "rule": f"!(self in [{names}]) && !({prefixes})",
        "message": "is reserved by the operator (rendezvous, rank and checkpoint variables are set by llmops)",
    }


class EnvVar(SpecModel):
    """An environment variable of the trainer container. Reserved names are rejected."""

    name: Annotated[EnvName, Field(json_schema_extra=cel(_reserved_env_rule()))] = Field(description="Variable name; names the operator sets (RANK, WORLD_SIZE, MASTER_ADDR, LLMOPS_*, ...) are refused.")
    value: Annotated[str, StringConstraints(max_length=32768)] | None = Field(default=None, description="Literal value.")
    value_from: EnvVarSource | None = Field(default=None, description="Value from a Secret/ConfigMap key or the downward API.")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if runtime_env.is_reserved(v):
            raise ValueError(f"{v!r} is reserved by the operator (rendezvous, rank and checkpoint variables are set by llmops)")
        return v

    @model_validator(mode="after")
    def _one_value(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set value or valueFrom, not both")
        return self

    model_config = ConfigDict(json_schema_extra=cel(("!(has(self.value) && has(self.valueFrom))", "set value or valueFrom, not both")))


class NameRef(SpecModel):
    """A reference by name to an object in the same namespace."""

    name: DNSSubdomain = Field(description="Object name in the job's namespace (no namespace field by design).")
    optional: bool | None = Field(default=None, description="Start even when the object is missing.")


class EnvFromSource(SpecModel):
    """Import every key of a ConfigMap or Secret as environment variables."""

    prefix: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(default=None, description="Prefix added to each key.")
    config_map_ref: NameRef | None = Field(default=None, description="ConfigMap in the job's namespace.")
    secret_ref: NameRef | None = Field(default=None, description="Secret in the job's namespace.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of configMapRef, secretRef")
        return self

    model_config = ConfigDict(json_schema_extra=cel(("has(self.configMapRef) != has(self.secretRef)", "set exactly one of configMapRef, secretRef")))


class TolerationOperator(str, enum.Enum):
    """Toleration match operator."""

    EXISTS = "Exists"
    EQUAL = "Equal"


class TaintEffect(str, enum.Enum):
    """Taint effect a toleration matches."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Toleration(SpecModel):
    """A core/v1 Toleration."""

    key: LabelKey | None = Field(default=None, description="Taint key; empty with Exists matches all taints.")
    operator: TolerationOperator | None = Field(default=None, description="Exists or Equal (default Equal).")
    value: Annotated[str, StringConstraints(max_length=63)] | None = Field(default=None, description="Taint value for Equal.")
    effect: TaintEffect | None = Field(default=None, description="Effect to match; empty matches all.")
    toleration_seconds: int | None = Field(default=None, ge=0, le=31_536_000, description="How long a NoExecute taint is tolerated.")


class PvcSource(SpecModel):
    """A PersistentVolumeClaim in the job's namespace."""

    claim_name: DNSSubdomain = Field(description="Claim name (same namespace).")
    read_only: bool = Field(default=False, description="Mount read-only.")


class ConfigMapSource(SpecModel):
    """A ConfigMap in the job's namespace as files."""

    name: DNSSubdomain = Field(description="ConfigMap name (same namespace).")


class SecretSource(SpecModel):
    """A Secret in the job's namespace as files (read by the kubelet, never by the operator)."""

    secret_name: DNSSubdomain = Field(description="Secret name (same namespace).")


class EmptyDirSource(SpecModel):
    """Scratch space for the pod's lifetime."""

    medium: Annotated[str, StringConstraints(pattern=r"^(|Memory)$", max_length=6)] | None = Field(default=None, description="\"\" (node disk) or Memory.")
    size_limit: Quantity | None = Field(default=None, description="Upper bound on usage.")


class Volume(SpecModel):
    """A narrow core/v1 Volume: a PVC, ConfigMap, Secret or emptyDir."""

    name: DNSLabel = Field(description="Volume name, referenced by volumeMounts.")
    persistent_volume_claim: PvcSource | None = Field(default=None, description="PVC source.")
    config_map: ConfigMapSource | None = Field(default=None, description="ConfigMap source.")
    secret: SecretSource | None = Field(default=None, description="Secret source.")
    empty_dir: EmptyDirSource | None = Field(default=None, description="emptyDir source.")

    @model_validator(mode="after")
    def _exactly_one(self) -> Volume:
        if sum(x is not None for x in (self.persistent_volume_claim, self.config_map, self.secret, self.empty_dir)) != 1:
            raise ValueError("set exactly one of persistentVolumeClaim, configMap, secret, emptyDir")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            (
                "[has(self.persistentVolumeClaim), has(self.configMap), has(self.secret), has(self.emptyDir)].filter(x, x).size() == 1",
                "set exactly one of persistentVolumeClaim, configMap, secret, emptyDir",
            )
        )
    )


class VolumeMount(SpecModel):
    """Where a volume appears in the trainer container."""

    name: DNSLabel = Field(description="Name of a volume in volumes.")
    mount_path: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^/")] = Field(description="Absolute path in the container.")
    sub_path: Annotated[str, StringConstraints(max_length=1024)] | None = Field(default=None, description="Path inside the volume.")
    read_only: bool = Field(default=False, description="Mount read-only.")


AFFINITY_KEYS = ("nodeAffinity", "podAffinity", "podAntiAffinity")
#: core/v1 Affinity: the three known keys, each an opaque object passed through unchanged.
#: Typed as an object with those properties (not a CEL rule over its keys: CEL cannot iterate
#: an object type, and the real API server refuses such a rule). Unknown keys are refused by
#: kubectl's strict field validation and by the model below.
Affinity = Annotated[
    dict[str, Any],
    Field(
        json_schema_extra={
            "type": "object",
            "properties": {k: {**preserve_unknown(), "description": f"core/v1 {k[0].upper()}{k[1:]}, passed through unchanged."} for k in AFFINITY_KEYS},
        }
    ),
]


class PodTemplate(SpecModel):
    """The narrow part of a pod the user may shape. No embedded PodTemplateSpec: the operator
    owns containers, ports, restart policy and the rendezvous environment."""

    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_MAP, json_schema_extra=qualified_keys("labels"), description="Extra labels on every worker pod.")
    annotations: dict[LabelKey, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, max_length=MAX_MAP, json_schema_extra=qualified_keys("annotations"), description="Extra annotations on every worker pod.")
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_MAP, json_schema_extra=qualified_keys("nodeSelector"), description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_LIST, description="Taints the pods tolerate.")
    affinity: Affinity | None = Field(default=None, description="core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), passed through unchanged.")
    env: list[EnvVar] = Field(default_factory=list, max_length=MAX_LIST, json_schema_extra=keyed("name"), description="Environment of the trainer container (keyed by name; reserved names refused).")
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=16, description="ConfigMaps/Secrets imported as environment.")
    volumes: list[Volume] = Field(default_factory=list, max_length=32, json_schema_extra=keyed("name"), description="Extra volumes (keyed by name).")
    volume_mounts: list[VolumeMount] = Field(default_factory=list, max_length=32, json_schema_extra=keyed("mountPath"), description="Mounts of those volumes in the trainer container.")
    service_account_name: DNSSubdomain | None = Field(default=None, description="ServiceAccount of the pods (same namespace).")

    @field_validator("affinity")
    @classmethod
    def _affinity_keys(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        extra = set(v or {}) - set(AFFINITY_KEYS)
        if extra:
            raise ValueError(f"unknown affinity keys {sorted(extra)}")
        return v

    model_config = ConfigDict(
        json_schema_extra=cel({
            "rule": "!has(self.volumeMounts) || self.volumeMounts.all(m, m.name == 'dshm' || "
                    "(has(self.volumes) && self.volumes.exists(v, v.name == m.name)))",
            "message": "every volumeMounts name must be a volume in volumes (or dshm, the operator's shared memory)",
            "fieldPath": ".volumeMounts", "reason": "FieldValueInvalid",
        })
    )

    @model_validator(mode="after")
    def _keys(self) -> PodTemplate:
        _require_unique([e.name for e in self.env], "env name")
        _require_unique([v.name for v in self.volumes], "volume name")
        known = {v.name for v in self.volumes}
        for m in self.volume_mounts:
            if m.name not in known and m.name != "dshm":
                raise ValueError(f"volumeMounts name {m.name!r} is not a volume in volumes")
        return self


def _require_unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what} {v!r}")
        seen.add(v)


# --- object metadata -------------------------------------------------------------------------


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads. The API server owns the rest."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str = Field(description="Object name.")
    namespace: str | None = Field(default=None, description="Namespace.")
    uid: str | None = Field(default=None, description="Server-assigned uid.")
    generation: int | None = Field(default=None, description="Spec generation.")
    resource_version: str | None = Field(default=None, description="Optimistic-concurrency token.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")


#: Object names start with a letter because they become Service names (RFC 1035 labels).
OBJECT_NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def check_object_name(name: str, max_length: int, why: str) -> list[tuple[str, str]]:
    """metadata.name rules: RFC 1035 label short enough for the longest child name."""
    errs = []
    if len(name) > max_length:
        errs.append(("metadata.name", f"must be no more than {max_length} characters ({why})"))
    if not re.match(OBJECT_NAME_PATTERN, name):
        errs.append(("metadata.name", "must start with a lowercase letter and contain only lowercase letters, digits and '-'"))
    return errs


def parse_resource(model: type[BaseModel], body: dict[str, Any], kind: str, name_max: int, why: str) -> Any:
    """Validate a whole custom resource body against its model, collecting every error
    (name rules and model errors) into one ApiValidationError naming each field."""
    name = str(((body or {}).get("metadata") or {}).get("name") or "")
    errs = check_object_name(name, name_max, why)
    obj = None
    try:
        obj = model.model_validate(body)
    except ValidationError as exc:
        errs += errors_from(exc)
    if errs:
        raise ApiValidationError(kind, name, errs)
    return obj
