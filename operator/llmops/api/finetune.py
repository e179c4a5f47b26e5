"""FinetuneJob: parameters + fixed code + dataset = a training job.

A FinetuneJob owns one TrainingJob that runs the project's fixed finetune runtime
(``llmops_runtime.finetune``) with these parameters, mirrors its progress, then publishes
the adapter (or merged model) and optionally hands it to an InferenceService. It reuses the
TrainingJob's resource, scheduling, checkpoint, failure and pod-template sections.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.alias_generators import to_camel

from llmops.api.cel import cel, immutable_while_running
from llmops.api.checkpoint import Checkpoint
from llmops.api.conditions import RUNNING, Condition, job_state
from llmops.api.parse import parse_resource
from llmops.api.policy import FailurePolicy, RunPolicy
from llmops.api.resources import Network, Resources
from llmops.api.scalars import DNSLabel, ImageRef, StorageUri, Time
from llmops.api.scheduling import Scheduling
from llmops.api.schema import keyed
from llmops.api.template import PodTemplate
from llmops.api.training import CheckpointStatus, Progress, Restarts
from llmops.api.wire import GROUP_VERSION, ObjectMeta, SpecModel, StatusModel, derived

KIND: Final = "FinetuneJob"
PLURAL = "finetunejobs"
SHORT_NAME = "ftj"
#: The child TrainingJob is named "<name>-train" (6 characters) and must itself fit
#: TrainingJob's 40-character bound.
NAME_MAX = 34
NAME_MAX_WHY = "the child TrainingJob <name>-train must fit the TrainingJob name bound"

#: Model/dataset locations: S3, a PVC in the same namespace, or a Hugging Face repo.
MODEL_URI_PATTERN = r"^(s3://[a-z0-9][a-z0-9.-]{1,62}(/[^\s]*)?|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^\s]*)?|hf://[A-Za-z0-9][-A-Za-z0-9_.]*(/[-A-Za-z0-9_.]+)?)$"
ModelUri = Annotated[str, StringConstraints(pattern=MODEL_URI_PATTERN, max_length=1024)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[a-f0-9]{64}$", min_length=64, max_length=64)]
Revision = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][-A-Za-z0-9_./]*$", max_length=128)]
FieldName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class BaseModelRef(SpecModel):
    """The model to start from."""

    uri: ModelUri = Field(description="s3://bucket/prefix, pvc://claim/path (same namespace) or hf://org/name.")
    revision: Revision | None = Field(default=None, description="Pinned revision (commit hash or tag); required for hf://.")
    manifest_sha256: Sha256 | None = Field(
        default=None, description="sha256 of the model's manifest (file list with per-file sha256); verified before use.",
    )
    allow_pickle: bool = Field(default=False, description="Accept pickle (.bin/.pt) weights. Off: safetensors only.")
    trust_remote_code: bool = Field(default=False, description="Run Python code shipped with the model. Off by default.")

    @model_validator(mode="after")
    def _pinned(self) -> BaseModelRef:
        if self.uri.startswith("hf://") and not self.revision:
            raise ValueError("revision is required for hf:// models (pin a commit)")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "!self.uri.startsWith('hf://') || has(self.revision)",
             "message": "revision is required for hf:// models (pin a commit)", "fieldPath": ".revision", "reason": "FieldValueRequired"}
        )
    )


class DatasetFormat(str, enum.Enum):
    """On-disk format of the dataset."""

    JSONL = "jsonl"
    JSON = "json"
    PARQUET = "parquet"


class Dataset(SpecModel):
    """Training data and how to read it."""

    uri: StorageUri = Field(description="s3://bucket/key-or-prefix or pvc://claim/path (same namespace).")
    format: DatasetFormat = Field(default=DatasetFormat.JSONL, description="jsonl, json or parquet.")
    text_field: FieldName | None = Field(default=None, description="Field holding plain text examples.")
    messages_field: FieldName | None = Field(
        default=None, description="Field holding chat messages [{role, content}] (rendered with the tokenizer's chat template).",
    )
    validation_split: float = Field(default=0.05, ge=0.0, le=0.5, description="Share of examples held out for validation (deterministic).")
    sha256: Sha256 | None = Field(default=None, description="Expected sha256 of the dataset file (single-file datasets).")

    @model_validator(mode="after")
    def _one_field(self) -> Dataset:
        if (self.text_field is None) == (self.messages_field is None):
            raise ValueError("set exactly one of textField, messagesField")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(("has(self.textField) != has(self.messagesField)", "set exactly one of textField, messagesField"))
    )


class MethodType(str, enum.Enum):
    """What is trained."""

    FULL = "full"
    LORA = "lora"
    QLORA = "qlora"  # LoRA on a quantized base (needs a GPU and bitsandbytes)


class Quantization(str, enum.Enum):
    """Base model quantization while training."""

    NONE = "none"
    INT8 = "8bit"
    INT4 = "4bit"


TargetModule = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.*-]+$")]


class Lora(SpecModel):
    """LoRA adapter shape."""

    r: int = Field(default=16, ge=1, le=1024, description="Adapter rank.")
    alpha: int = Field(default=32, ge=1, le=4096, description="Scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.05, ge=0.0, le=0.9, description="Dropout on the adapter input.")
    target_modules: list[TargetModule] = Field(
        default_factory=list, max_length=32, json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Module names to adapt (e.g. q_proj, v_proj); empty: the architecture's default attention projections.",
    )


class Method(SpecModel):
    """Finetune method."""

    type: MethodType = Field(default=MethodType.LORA, description="full, lora or qlora.")
    lora: Lora | None = Field(default=None, description="Adapter settings (lora/qlora; defaults when unset).")
    quantization: Quantization = Field(default=Quantization.NONE, description="none, 8bit or 4bit (qlora needs 8bit or 4bit).")

    @model_validator(mode="after")
    def _consistent(self) -> Method:
        if self.type == MethodType.FULL and self.lora is not None:
            raise ValueError("lora settings need type lora or qlora")
        if self.type == MethodType.QLORA and self.quantization == Quantization.NONE:
            raise ValueError("qlora needs quantization 8bit or 4bit")
        if self.type != MethodType.QLORA and self.quantization != Quantization.NONE:
            raise ValueError("quantization is only supported with type qlora")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            ("self.type != 'full' || !has(self.lora)", "lora settings need type lora or qlora"),
            ("self.type != 'qlora' || self.quantization != 'none'", "qlora needs quantization 8bit or 4bit"),
            ("self.type == 'qlora' || self.quantization == 'none'", "quantization is only supported with type qlora"),
        )
    )


class Precision(str, enum.Enum):
    """Mixed precision mode."""

    AUTO = "auto"  # bf16 where supported, else fp32
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Hyperparameters(SpecModel):
    """Optimisation settings."""

    max_steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Optimizer steps to run (or set epochs).")
    epochs: float | None = Field(default=None, gt=0, le=1000, description="Passes over the training split (or set maxSteps).")
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="Peak learning rate.")
    warmup_steps: int = Field(default=0, ge=0, le=1_000_000, description="Linear warm-up steps.")
    batch_size: int = Field(
        default=8, ge=1, le=4096, description="Examples per optimizer step per data-parallel rank, before accumulation.",
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, le=1024, description="Micro-batches accumulated per optimizer step.")
    max_seq_length: int = Field(default=2048, ge=8, le=1_048_576, description="Tokens per example after packing/truncation.")
    packing: bool = Field(default=False, description="Pack several examples into one sequence.")
    precision: Precision = Field(default=Precision.AUTO, description="auto, fp32, bf16 or fp16.")
    seed: int = Field(default=42, ge=0, le=2**31 - 1, description="Seed for shuffling, initialisation and dropout.")

    @model_validator(mode="after")
    def _length(self) -> Hyperparameters:
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of maxSteps, epochs")
        return self

    model_config = ConfigDict(json_schema_extra=cel(("has(self.maxSteps) != has(self.epochs)", "set exactly one of maxSteps, epochs")))


class Evaluation(SpecModel):
    """Validation during training."""

    every_steps: int | None = Field(default=None, ge=1, le=10_000_000, description="Evaluate every N steps (default: at each checkpoint).")
    early_stop_patience: int | None = Field(
        default=None, ge=1, le=1000, description="Stop after this many evaluations without improvement.",
    )


class OutputMode(str, enum.Enum):
    """What is published."""

    ADAPTER = "adapter"  # the LoRA adapter only
    MERGED = "merged"  # base + adapter merged into a full model


class Output(SpecModel):
    """Where and what to publish (always safetensors with a sha256 manifest and a model card)."""

    uri: StorageUri = Field(description="s3://bucket/prefix or pvc://claim/path; written atomically.")
    mode: OutputMode = Field(default=OutputMode.ADAPTER, description="adapter or merged.")


class Serve(SpecModel):
    """Hand the result to an InferenceService in the same namespace."""

    inference_service_name: DNSLabel = Field(description="InferenceService name (same namespace; no namespace field by design).")
    adapter_name: DNSLabel | None = Field(default=None, description="Adapter name to publish under (default: the FinetuneJob's name).")
    create: bool = Field(default=False, description="Create the InferenceService if it does not exist.")


class FinetuneJobSpec(SpecModel):
    """Desired state of a FinetuneJob."""

    base_model: BaseModelRef = Field(description="The model to finetune.")
    dataset: Dataset = Field(description="Training data.")
    method: Method = Field(default_factory=Method, description="full, lora or qlora and their settings.")
    hyperparameters: Hyperparameters = Field(description="Optimisation settings.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Validation during training.")
    output: Output = Field(description="Where the adapter or merged model goes.")
    serve: Serve | None = Field(default=None, description="Optionally publish into an InferenceService.")
    image: ImageRef | None = Field(
        default=None, description="Override of the finetune runtime image (default: the operator's trainer image).",
    )
    nodes: int = Field(default=1, ge=1, le=1024, strict=True, description="Worker pods, one per node.")
    procs_per_node: int | None = Field(
        default=None, ge=1, le=64, strict=True, description="Processes per pod. Default: resources.gpus, or 1.",
    )
    resources: Resources = Field(default_factory=Resources, description="Per-node resources.")
    network: Network = Field(default_factory=Network, description="RDMA devices and NCCL settings.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Gang scheduling, queue and priority.")
    checkpoint: Checkpoint | None = Field(default=None, description="Step-level checkpoints for exact resume.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, description="Restart budget, backoff and hang detection.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Suspend, deadline and TTL.")
    template: PodTemplate = Field(default_factory=PodTemplate, description="The narrow part of the worker pods the user may shape.")

    @model_validator(mode="after")
    def _servable(self) -> FinetuneJobSpec:
        if self.serve is not None and self.output.mode != OutputMode.ADAPTER:
            raise ValueError("serve needs output.mode adapter (a merged model is served by an InferenceService of its own)")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "!has(self.serve) || !has(self.output.mode) || self.output.mode == 'adapter'",
             "message": "serve needs output.mode adapter (a merged model is served by an InferenceService of its own)",
             "fieldPath": ".serve"}
        )
    )


#: Spec fields frozen while the child training runs: they define the run, or they reach
#: TrainingJob fields that are themselves immutable while it runs (image, procsPerNode,
#: checkpoint), so an edit is refused here instead of failing every apply of the child.
IMMUTABLE_WHILE_RUNNING = (
    "baseModel", "dataset", "method", "hyperparameters", "output", "image", "nodes", "procsPerNode", "resources", "checkpoint",
)


def immutable_while_running_rules() -> list[dict[str, str]]:
    """Root-level CEL transition rules for IMMUTABLE_WHILE_RUNNING (see llmops.api.cel)."""
    return immutable_while_running(IMMUTABLE_WHILE_RUNNING, RUNNING)


# --- status ----------------------------------------------------------------------------------


class DatasetStats(StatusModel):
    """What the runtime counted in the dataset."""

    examples: int | None = Field(default=None, ge=0, description="Training examples.")
    validation_examples: int | None = Field(default=None, ge=0, description="Validation examples.")
    tokens: int | None = Field(default=None, ge=0, description="Training tokens.")
    sha256: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, description="sha256 of the dataset as read.")


class EvaluationStatus(StatusModel):
    """Validation results."""

    base_validation_loss: float | None = Field(default=None, description="Validation loss of the base model before training.")
    validation_loss: float | None = Field(default=None, description="Latest validation loss.")
    perplexity: float | None = Field(default=None, ge=0, description="exp(validation loss).")
    best_step: int | None = Field(default=None, ge=0, description="Step of the best validation loss.")
    best_validation_loss: float | None = Field(default=None, description="Best validation loss so far.")


class OutputStatus(StatusModel):
    """The published artifact."""

    uri: Annotated[str, StringConstraints(max_length=2048)] = Field(description="Location of the published model/adapter.")
    manifest_sha256: Annotated[str, StringConstraints(max_length=64)] | None = Field(default=None, description="sha256 of its manifest.")
    size_bytes: int | None = Field(default=None, ge=0, description="Total bytes.")
    base_model_revision: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None, description="Revision of the base model used.",
    )


class ServedStatus(StatusModel):
    """Where the result was published for serving."""

    inference_service_name: Annotated[str, StringConstraints(max_length=63)] = Field(description="InferenceService name.")
    adapter_name: Annotated[str, StringConstraints(max_length=63)] | None = Field(default=None, description="Adapter name in it.")


class FinetuneJobStatus(StatusModel):
    """Observed state of a FinetuneJob."""

    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, json_schema_extra=keyed("type"), description="Job conditions plus Published.",
    )
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation this status describes.")
    training_job_name: Annotated[str, StringConstraints(max_length=63)] | None = Field(default=None, description="The child TrainingJob.")
    attempt: int = Field(default=0, ge=0, description="Gang attempt of the child TrainingJob.")
    restarts: Restarts = Field(default_factory=Restarts, description="Restarts of the child TrainingJob.")
    progress: Progress | None = Field(default=None, description="Training progress.")
    checkpoint: CheckpointStatus | None = Field(default=None, description="Newest committed checkpoint.")
    dataset: DatasetStats | None = Field(default=None, description="Dataset statistics.")
    evaluation: EvaluationStatus | None = Field(default=None, description="Validation results.")
    output: OutputStatus | None = Field(default=None, description="Published artifact.")
    served: ServedStatus | None = Field(default=None, description="InferenceService the result was published to.")
    start_time: Time | None = Field(default=None, description="RFC 3339 start time.")
    completion_time: Time | None = Field(default=None, description="RFC 3339 completion time.")

    @derived(
        alias="state", json_schema_extra={"maxLength": 32},
        description="One word for the job: Queued, Running, Restarting, Suspended, Succeeded or Failed (summarizes the conditions).",
    )
    def state(self) -> str:
        return job_state(self.conditions)[0]

    @derived(alias="stateReason", description="The reason of the condition that gives the state.", json_schema_extra={"maxLength": 1024})
    def state_reason(self) -> str | None:
        return job_state(self.conditions)[1] or None


class FinetuneJob(BaseModel):
    """A FinetuneJob object as read from the API server."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["llmops.dev/v1alpha1"] = Field(default=GROUP_VERSION, description="llmops.dev/v1alpha1.")
    kind: Literal["FinetuneJob"] = Field(default=KIND, description="FinetuneJob.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: FinetuneJobSpec = Field(description="Desired state.")
    status: FinetuneJobStatus = Field(default_factory=FinetuneJobStatus, description="Observed state.")


def parse_finetune_job(body: dict[str, Any]) -> FinetuneJob:
    """Parse a FinetuneJob body; raises ApiValidationError naming each field."""
    return parse_resource(FinetuneJob, body, KIND, NAME_MAX, NAME_MAX_WHY)
