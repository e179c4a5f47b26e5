"""The narrow pod template: the part of the worker pods a user may shape (labels, placement,
environment, volumes). No embedded PodTemplateSpec: the operator owns containers, ports,
restart policy and the rendezvous environment."""

from __future__ import annotations

import enum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, StringConstraints, field_validator, model_validator

from llmops.api import runtime_env
from llmops.api.cel import cel, qualified_keys
from llmops.api.scalars import MAX_LIST, MAX_MAP, DNSLabel, DNSSubdomain, EnvName, LabelKey, LabelValue, Quantity
from llmops.api.schema import keyed, preserve_unknown, require_unique
from llmops.api.wire import SpecModel


class KeyRef(SpecModel):
    """A key in a Secret or ConfigMap of the same namespace (name only, no namespace)."""

    name: DNSSubdomain = Field(description="Object name in the job's namespace.")
    key: Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")] = Field(
        description="Key inside the object.",
    )
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
                "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef), has(self.resourceFieldRef)]"
                ".filter(x, x).size() == 1",
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

    name: Annotated[EnvName, Field(json_schema_extra=cel(_reserved_env_rule()))] = Field(
        description="Variable name; names the operator sets (RANK, WORLD_SIZE, MASTER_ADDR, LLMOPS_*, ...) are refused.",
    )
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

    prefix: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = Field(
        default=None, description="Prefix added to each key.",
    )
    config_map_ref: NameRef | None = Field(default=None, description="ConfigMap in the job's namespace.")
    secret_ref: NameRef | None = Field(default=None, description="Secret in the job's namespace.")

    @model_validator(mode="after")
    def _exactly_one(self) -> EnvFromSource:
        if (self.config_map_ref is None) == (self.secret_ref is None):
            raise ValueError("set exactly one of configMapRef, secretRef")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(("has(self.configMapRef) != has(self.secretRef)", "set exactly one of configMapRef, secretRef"))
    )


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

    medium: Annotated[str, StringConstraints(pattern=r"^(|Memory)$", max_length=6)] | None = Field(
        default=None, description="\"\" (node disk) or Memory.",
    )
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
    mount_path: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^/")] = Field(
        description="Absolute path in the container.",
    )
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
            "properties": {
                k: {**preserve_unknown(), "description": f"core/v1 {k[0].upper()}{k[1:]}, passed through unchanged."} for k in AFFINITY_KEYS
            },
        }
    ),
]


class PodTemplate(SpecModel):
    """The narrow part of a pod the user may shape. No embedded PodTemplateSpec: the operator
    owns containers, ports, restart policy and the rendezvous environment."""

    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_MAP, json_schema_extra=qualified_keys("labels"),
        description="Extra labels on every worker pod.")
    annotations: dict[LabelKey, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict, max_length=MAX_MAP, json_schema_extra=qualified_keys("annotations"),
        description="Extra annotations on every worker pod.")
    node_selector: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=MAX_MAP, json_schema_extra=qualified_keys("nodeSelector"),
        description="Node labels the pods require.")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=MAX_LIST, description="Taints the pods tolerate.")
    affinity: Affinity | None = Field(
        default=None, description="core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity), passed through unchanged.",
    )
    env: list[EnvVar] = Field(
        default_factory=list, max_length=MAX_LIST, json_schema_extra=keyed("name"),
        description="Environment of the trainer container (keyed by name; reserved names refused).",
    )
    env_from: list[EnvFromSource] = Field(default_factory=list, max_length=16, description="ConfigMaps/Secrets imported as environment.")
    volumes: list[Volume] = Field(
        default_factory=list, max_length=32, json_schema_extra=keyed("name"), description="Extra volumes (keyed by name).",
    )
    volume_mounts: list[VolumeMount] = Field(
        default_factory=list, max_length=32, json_schema_extra=keyed("mountPath"),
        description="Mounts of those volumes in the trainer container.",
    )
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
        require_unique([e.name for e in self.env], "env name")
        require_unique([v.name for v in self.volumes], "volume name")
        known = {v.name for v in self.volumes}
        for m in self.volume_mounts:
            if m.name not in known and m.name != "dshm":
                raise ValueError(f"volumeMounts name {m.name!r} is not a volume in volumes")
        return self
