"""TrainingJob: distributed training of user code on a gang of worker pods (one per node).

The operator starts ``procsPerNode`` processes per pod (torchrun's contract, no SSH), plain
or under a DeepSpeed ZeRO engine, restarts the whole gang from the last committed checkpoint on failure, and reports
progress in status. The spec here is the API; the status model is what the status computer
writes (conditions first, then facts; no phase).
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
from llmops.api.scalars import Arg, ImageRef, Time
from llmops.api.scheduling import GangBackend, Scheduling
from llmops.api.schema import keyed
from llmops.api.template import PodTemplate
from llmops.api.wire import GROUP_VERSION, ObjectMeta, SpecModel, StatusModel, derived

KIND: Final = "TrainingJob"
PLURAL = "trainingjobs"
SHORT_NAME = "tj"
MAX_NODES = 1024
#: metadata.name bound: the longest child name is "<name>-worker-<rank>" (rank < MAX_NODES,
#: so at most 4 digits: 12 characters of suffix) and "<name>-progress"; 40 leaves room for
#: those and a short attempt/hash suffix while every child name stays <= 63 (RFC 1123 label).
NAME_MAX = 40
NAME_MAX_WHY = "child names such as <name>-worker-<rank> must stay within 63 characters"


class Launcher(str, enum.Enum):
    """Process launcher inside each worker pod."""

    TORCHRUN = "torchrun"
    DEEPSPEED = "deepspeed"  # the same launcher; the workers train under a DeepSpeed ZeRO engine


class ZeroStage(enum.IntEnum):
    """What DeepSpeed ZeRO partitions across the data-parallel ranks."""

    OPTIMIZER = 1  # optimizer state (fp32 master weights and moments)
    GRADIENTS = 2  # optimizer state and gradients
    PARAMETERS = 3  # optimizer state, gradients and the parameters themselves


class DeepSpeed(SpecModel):
    """DeepSpeed settings; only with ``launcher: deepspeed``."""

    zero_stage: ZeroStage = Field(
        default=ZeroStage.GRADIENTS,
        description="ZeRO stage: 1 partitions the optimizer state, 2 also the gradients, 3 also the parameters.",
    )


#: Spec fields that may not change while the job's Running condition is True: changing any of
#: them would silently mean a different job. Suspend the job (or delete it) to change them.
IMMUTABLE_WHILE_RUNNING = ("image", "command", "args", "launcher", "deepspeed", "nodes", "procsPerNode", "resources", "checkpoint")


def immutable_while_running_rules() -> list[dict[str, str]]:
    """Root-level CEL transition rules for IMMUTABLE_WHILE_RUNNING (see llmops.api.cel)."""
    return immutable_while_running(IMMUTABLE_WHILE_RUNNING, RUNNING)


class TrainingJobSpec(SpecModel):
    """Desired state of a TrainingJob."""

    image: ImageRef = Field(description="Container image with the user's training code (and torch/deepspeed).")
    command: list[Arg] = Field(
        min_length=1, max_length=64,
        description="Training program and its arguments, run under the launcher, e.g. [python, -m, train]. No shell wrapping is added.",
    )
    args: list[Arg] = Field(default_factory=list, max_length=256, description="Extra arguments appended to command.")
    launcher: Launcher = Field(
        default=Launcher.TORCHRUN,
        description=(
            "torchrun: plain torch.distributed workers; deepspeed: the same workers under a DeepSpeed ZeRO engine. "
            "No SSH either way."
        ),
    )
    deepspeed: DeepSpeed | None = Field(default=None, description="DeepSpeed settings (launcher deepspeed only; zeroStage 2 when omitted).")
    nodes: int = Field(ge=1, le=MAX_NODES, strict=True, description="Worker pods in the gang, one per node.")
    min_nodes: int | None = Field(
        default=None, ge=1, le=MAX_NODES, strict=True,
        description="Elastic minimum: the gang may restart with as few as minNodes pods when nodes are lost. Unset: exactly nodes.",
    )
    procs_per_node: int | None = Field(
        default=None, ge=1, le=64, strict=True,
        description="Processes per pod (ranks per node). Default: resources.gpus, or 1 without GPUs.",
    )
    total_steps: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Declared number of optimizer steps, for progress and ETA.",
    )
    resources: Resources = Field(default_factory=Resources, description="Per-node resources (GPUs, CPU, memory, /dev/shm).")
    network: Network = Field(default_factory=Network, description="RDMA devices, secondary networks and NCCL settings.")
    scheduling: Scheduling = Field(default_factory=Scheduling, description="Gang scheduling, queue and priority.")
    checkpoint: Checkpoint | None = Field(default=None, description="Step-level checkpoints; without it a restart starts from step 0.")
    failure_policy: FailurePolicy = Field(default_factory=FailurePolicy, description="Restart budget, backoff and hang detection.")
    run_policy: RunPolicy = Field(default_factory=RunPolicy, description="Suspend, deadline and TTL.")
    template: PodTemplate = Field(default_factory=PodTemplate, description="The narrow part of the worker pods the user may shape.")

    @model_validator(mode="after")
    def _min_nodes(self) -> TrainingJobSpec:
        if self.min_nodes is not None and self.min_nodes > self.nodes:
            raise ValueError(f"minNodes ({self.min_nodes}) must be <= nodes ({self.nodes})")
        return self

    @model_validator(mode="after")
    def _deepspeed_only_with_its_launcher(self) -> TrainingJobSpec:
        if self.deepspeed is not None and self.launcher != Launcher.DEEPSPEED:
            raise ValueError("deepspeed settings need launcher: deepspeed")
        return self

    model_config = ConfigDict(
        json_schema_extra=cel(
            {"rule": "!has(self.minNodes) || self.minNodes <= self.nodes", "message": "minNodes must be <= nodes",
             "fieldPath": ".minNodes"},
            {"rule": "!has(self.deepspeed) || self.launcher == 'deepspeed'", "message": "deepspeed settings need launcher: deepspeed",
             "fieldPath": ".deepspeed"},
        )
    )

    def effective_procs_per_node(self) -> int:
        """procsPerNode with its default resolved."""
        if self.procs_per_node is not None:
            return self.procs_per_node
        return self.resources.gpus or 1

    def world_size(self) -> int:
        return self.nodes * self.effective_procs_per_node()

    def zero_stage(self) -> ZeroStage | None:
        """The ZeRO stage the workers run, None without DeepSpeed."""
        if self.launcher != Launcher.DEEPSPEED:
            return None
        return (self.deepspeed or DeepSpeed()).zero_stage


# --- status ----------------------------------------------------------------------------------


class Restarts(StatusModel):
    """Gang restarts so far."""

    total: int = Field(default=0, ge=0, description="All gang restarts.")
    counted: int = Field(default=0, ge=0, description="Restarts counted against failurePolicy.maxRestarts.")
    by_cause: dict[Annotated[str, StringConstraints(max_length=64)], int] = Field(
        default_factory=dict, max_length=32, description="Restarts per cause (condition reason, e.g. NodeLost, OOMKilled)."
    )


class Progress(StatusModel):
    """Training progress, folded from rank 0's report."""

    step: int = Field(default=0, ge=0, description="Optimizer steps completed.")
    total_steps: int | None = Field(default=None, ge=0, description="Declared total steps.")
    loss: float | None = Field(default=None, description="Loss of the last reported step.")
    tokens_per_second: float | None = Field(default=None, ge=0, description="Throughput over the last window, all ranks.")
    eta: Time | None = Field(default=None, description="RFC 3339 estimated completion time.")
    last_heartbeat: Time | None = Field(default=None, description="RFC 3339 time of rank 0's last report.")


class CheckpointStatus(StatusModel):
    """The newest committed checkpoint."""

    id: Annotated[str, StringConstraints(max_length=128)] | None = Field(default=None, description="Checkpoint id, e.g. step-00000120.")
    step: int = Field(ge=0, description="Step the checkpoint holds.")
    uri: Annotated[str, StringConstraints(max_length=2048)] = Field(description="Manifest location.")
    time: Time | None = Field(default=None, description="RFC 3339 commit time.")


class GangStatus(StatusModel):
    """The gang object the operator created."""

    backend: GangBackend = Field(description="Resolved backend (never auto).")
    name: Annotated[str, StringConstraints(max_length=253)] | None = Field(
        default=None, description="PodGroup/Workload name, when the backend has one.",
    )


class LastFailure(StatusModel):
    """The previous attempt's failure, remembered for the "same failure again" rules."""

    reason: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="Condition reason of the failure, e.g. NonFiniteLoss, Hang, OOMKilled.",
    )
    attempt: int = Field(ge=0, description="Attempt that failed.")
    step: int | None = Field(default=None, ge=0, description="Step it failed at, when known.")
    generation: int | None = Field(default=None, ge=0, description="metadata.generation it failed under.")


class TrainingJobStatus(StatusModel):
    """Observed state of a TrainingJob (written only by the operator's status computer)."""

    conditions: list[Condition] = Field(
        default_factory=list, max_length=16, json_schema_extra=keyed("type"),
        description="Queued, Running, Restarting, Suspended, Succeeded, Failed, Stalled, CheckpointFailing.",
    )
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation this status describes.")
    attempt: int = Field(default=0, ge=0, description="Current gang attempt (0 for the first start).")
    restarts: Restarts = Field(default_factory=Restarts, description="Gang restarts by cause.")
    progress: Progress | None = Field(default=None, description="Latest progress report.")
    checkpoint: CheckpointStatus | None = Field(default=None, description="Newest committed checkpoint.")
    resumed_from_step: int | None = Field(default=None, ge=0, description="Step the current attempt resumed from.")
    resumed_from_checkpoint: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        default=None,
        description="Checkpoint id the current attempt's pods were told to resume from (fixed for the attempt: pod specs are immutable).",
    )
    gang: GangStatus | None = Field(default=None, description="Gang backend in use and its object.")
    start_time: Time | None = Field(default=None, description="RFC 3339 time the first attempt started running.")
    completion_time: Time | None = Field(default=None, description="RFC 3339 time the job succeeded or failed.")
    last_failure: LastFailure | None = Field(
        default=None, description="The last attempt's failure (for the rules that fail a job when the same failure repeats).",
    )

    @derived(
        alias="state", json_schema_extra={"maxLength": 32},
        description="One word for the job: Queued, Running, Restarting, Suspended, Succeeded or Failed (summarizes the conditions).",
    )
    def state(self) -> str:
        return job_state(self.conditions)[0]

    @derived(alias="stateReason", description="The reason of the condition that gives the state.", json_schema_extra={"maxLength": 1024})
    def state_reason(self) -> str | None:
        return job_state(self.conditions)[1] or None


class TrainingJob(BaseModel):
    """A TrainingJob object as read from the API server."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    api_version: Literal["llmops.dev/v1alpha1"] = Field(default=GROUP_VERSION, description="llmops.dev/v1alpha1.")
    kind: Literal["TrainingJob"] = Field(default=KIND, description="TrainingJob.")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: TrainingJobSpec = Field(description="Desired state.")
    status: TrainingJobStatus = Field(default_factory=TrainingJobStatus, description="Observed state.")


def parse_training_job(body: dict[str, Any]) -> TrainingJob:
    """Parse a TrainingJob body (dict from the API server or YAML).

    Raises llmops.api.errors.ApiValidationError whose ``errors`` name each field path.
    """
    return parse_resource(TrainingJob, body, KIND, NAME_MAX, NAME_MAX_WHY)
