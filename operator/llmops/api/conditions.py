"""Condition vocabulary and the one pure function that updates a condition list.

Every condition type and reason is a constant with one line saying who writes it and who
reads it. ``status.conditions`` has the metav1.Condition shape; ``lastTransitionTime`` moves
only when ``status`` flips, so reconciling an unchanged world yields an identical list (and
therefore no status patch).
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

# --- condition types: jobs (TrainingJob, FinetuneJob) -----------------------------------------
QUEUED = "Queued"  # status computer writes while the gang waits for placement/admission; printer columns and users read
RUNNING = "Running"  # status computer writes when every worker pod runs; printer column RUNNING, immutability CEL rules read
RESTARTING = "Restarting"  # status computer writes while a gang restart is under way; dashboards and users read
SUSPENDED = "Suspended"  # status computer writes while spec.runPolicy.suspend holds; users and Kueue read
SUCCEEDED = "Succeeded"  # status computer writes once rank 0 exits 0; FinetuneJob publisher and printer column read
FAILED = "Failed"  # status computer writes when the job gives up; printer columns, alerts and FinetuneJob read
STALLED = "Stalled"  # status computer writes (True only) when the heartbeat is stale; failure classifier and alerts read
CHECKPOINT_FAILING = "CheckpointFailing"  # status computer writes (True only) while saves fail; alerts and users read
PUBLISHED = "Published"  # FinetuneJob status computer writes after the output/serve step; users and Argo CD health read

# --- condition types: serving (InferenceService) ----------------------------------------------
READY = "Ready"  # serving status computer writes when readyReplicas >= min and the model is loaded; printer column, Argo CD read
MODEL_CACHED = "ModelCached"  # serving status computer writes once the fetch/verify step committed the model to the cache; autoscaler reads
PROGRESSING = "Progressing"  # serving status computer writes during rollouts and scaling; users read
DEGRADED = "Degraded"  # serving status computer writes when fewer replicas than wanted are ready; alerts read
# serving status computer writes: every wanted LoRA adapter loaded on every ready replica; FinetuneJob publisher, users read
ADAPTERS_READY = "AdaptersReady"

JOB_TYPES = (QUEUED, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED, STALLED, CHECKPOINT_FAILING)
FINETUNE_TYPES = (*JOB_TYPES, PUBLISHED)
SERVING_TYPES = (READY, MODEL_CACHED, PROGRESSING, DEGRADED, ADAPTERS_READY)

# --- reasons (CamelCase). Writer: the status computers; reader: users, alerts, tests ----------
# placement
GANG_PENDING = "GangPending"  # pods created, gang not placed yet
WAITING_FOR_QUOTA = "WaitingForQuota"  # Kueue/Volcano queue has not admitted the gang
SCHEDULING_TIMEOUT = "SchedulingTimeout"  # gang.timeoutSeconds passed while waiting
POD_PENDING = "PodPending"  # at least one worker pod not running yet
ALL_PODS_RUNNING = "AllPodsRunning"  # every worker pod runs
WORKERS_FINISHING = "WorkersFinishing"  # some workers exited 0, rank 0 still runs: the job is ending, not queued
# lifecycle
CREATED = "Created"  # first observation of the job
SUSPENDED_BY_USER = "SuspendedByUser"  # spec.runPolicy.suspend is true
RESUMED = "Resumed"  # suspend flipped back to false
COMPLETED = "Completed"  # rank 0 exited 0
DEADLINE_EXCEEDED = "DeadlineExceeded"  # activeDeadlineSeconds passed
MAX_RESTARTS_EXCEEDED = "MaxRestartsExceeded"  # counted restarts used up the budget
# failure causes (the classifier's vocabulary; also keys of status.restarts.byCause)
USER_ERROR = "UserError"  # user code exited non-zero (counted)
CONFIG_ERROR = "ConfigError"  # exit 78 / invalid configuration: fail now
NON_FINITE_LOSS = "NonFiniteLoss"  # exit 79: loss became NaN/Inf
OOM_KILLED = "OOMKilled"  # container OOMKilled (counted)
NODE_LOST = "NodeLost"  # node went NotReady/was deleted (not counted)
PREEMPTED = "Preempted"  # DisruptionTarget / preemption by priority (not counted)
EVICTED = "Evicted"  # eviction (not counted)
IMAGE_PULL_FAILED = "ImagePullFailed"  # ErrImagePull/ImagePullBackOff: fail after a grace period
CHECKPOINT_STORAGE_ERROR = "CheckpointStorageError"  # saves fail; training continues within maxAge
CHECKPOINT_UNRECOVERABLE = "CheckpointUnrecoverable"  # exit 80
TERMINATED = "Terminated"  # exit 81 after SIGTERM
INVALID_SPEC = "InvalidSpec"  # the CR passed the CRD but failed the typed model
# serving
MODEL_FETCHING = "ModelFetching"  # fetch/verify init step running
MODEL_VERIFIED = "ModelVerified"  # sha256 manifest matched, model committed to the cache
MODEL_DIGEST_MISMATCH = "ModelDigestMismatch"  # a file's sha256 differs from the manifest
REPLICAS_READY = "ReplicasReady"  # enough replicas ready
REPLICAS_UNAVAILABLE = "ReplicasUnavailable"  # fewer ready replicas than the minimum
REPLICAS_LOADING = "ReplicasLoading"  # Degraded=False: fewer ready than desired, none failing (they are starting)
SCALING_UP = "ScalingUp"  # autoscaler raised the replica count
SCALING_DOWN = "ScalingDown"  # autoscaler lowered the replica count
SCALED_TO_ZERO = "ScaledToZero"  # no replicas by opt-in scale-to-zero
ROLLOUT_IN_PROGRESS = "RolloutInProgress"  # a new revision is rolling out
ADAPTER_NOT_READY = "AdapterNotReady"  # a listed adapter failed to load
ADAPTERS_LOADED = "AdaptersLoaded"  # AdaptersReady=True: every wanted adapter is loaded on every ready replica
NO_ADAPTERS = "NoAdapters"  # AdaptersReady=True: the service has no adapters
ADAPTERS_LOADING = "AdaptersLoading"  # AdaptersReady=False: being fetched/loaded, or waiting for a FinetuneJob's output or a ready replica
ADAPTER_LIMIT_EXCEEDED = "AdapterLimitExceeded"  # AdaptersReady=False: more adapters wanted than engine.maxLoras allows per replica
INSUFFICIENT_GPU_MEMORY = "InsufficientGPUMemory"  # Degraded=True: vLLM could not fit weights + KV cache (its CUDA OOM / KV cache text)
SERVER_FAILED = "ServerFailed"  # Degraded=True: the server container exited for another reason
# finetune
TRAINING = "Training"  # the child TrainingJob runs
OUTPUT_PUBLISHED = "OutputPublished"  # Published=True: the output is committed and the InferenceService lists the adapter ready
WAITING_FOR_OUTPUT = "WaitingForOutput"  # Published=False: the job succeeded but its output report was not seen yet
WAITING_FOR_SERVICE = "WaitingForService"  # Published=False: serve.inferenceServiceName does not exist (create it, or set serve.create)
SERVICE_CREATE_FAILED = "ServiceCreateFailed"  # Published=False: serve.create was refused by the API server (message says why)
JOB_FAILED = "JobFailed"  # Published=False: the training failed, nothing to publish


class ConditionStatus(str, enum.Enum):
    """metav1.ConditionStatus."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(BaseModel):
    """A metav1.Condition."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    type: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
    ] = Field(description="Condition type, e.g. Running.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")] = Field(
        description="CamelCase reason of the last transition.",
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(default="", description="Human-readable detail.")
    last_transition_time: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="RFC 3339 time status last flipped.",
    )
    observed_generation: int | None = Field(default=None, ge=0, description="metadata.generation the condition was computed for.")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def parse_time(value: str | dt.datetime | None) -> dt.datetime | None:
    """RFC 3339 (as Kubernetes and this operator write it) -> aware datetime; None stays None.
    The one parser of the format: the inverse of ``rfc3339`` below."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def rfc3339(now: dt.datetime | str) -> str:
    """Seconds-precision UTC RFC 3339 as Kubernetes writes it ("2026-01-02T03:04:05Z")."""
    if isinstance(now, str):
        return now
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_condition(conditions: list[Condition], new: Condition, now: dt.datetime | str) -> list[Condition]:
    """Return a new list with ``new`` merged in by type (the input is not mutated).

    lastTransitionTime becomes ``now`` when the type is new or its status flips; otherwise
    the old time is kept while reason, message and observedGeneration follow ``new``.
    """
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != new.type:
            out.append(cond)
            continue
        found = True
        flipped = cond.status != new.status or cond.last_transition_time is None
        ltt = rfc3339(now) if flipped else cond.last_transition_time
        out.append(new.model_copy(update={"last_transition_time": ltt}))
    if not found:
        out.append(new.model_copy(update={"last_transition_time": rfc3339(now)}))
    return out


def find_condition(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of that type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: list[Condition], type_: str) -> bool:
    """True when the condition exists with status True."""
    c = find_condition(conditions, type_)
    return c is not None and c.status == ConditionStatus.TRUE


# --- the one-word state (status.state / status.stateReason, the STATE and REASON columns) -----
# A summary of the conditions, never a second source of truth: computed from them on every
# status write (the status models' computed fields), so it cannot disagree with them.
LOADING = "Loading"  # InferenceService: no replica serves yet and nothing has failed
JOB_STATES = (QUEUED, RUNNING, RESTARTING, SUSPENDED, SUCCEEDED, FAILED)
SERVICE_STATES = (LOADING, READY, DEGRADED, SCALED_TO_ZERO, FAILED)


def job_state(conditions: list[Condition]) -> tuple[str, str]:
    """(state, reason) of a TrainingJob or FinetuneJob: the first True of Failed, Succeeded,
    Suspended, Restarting, Running; else Queued (with the Queued reason, if any)."""
    for type_ in (FAILED, SUCCEEDED, SUSPENDED, RESTARTING, RUNNING):
        c = find_condition(conditions, type_)
        if c is not None and c.status == ConditionStatus.TRUE:
            return type_, c.reason
    queued = find_condition(conditions, QUEUED)
    return QUEUED, queued.reason if queued is not None else ""


def service_state(conditions: list[Condition]) -> tuple[str, str]:
    """(state, reason) of an InferenceService: Ready (Degraded while a replica fails beside the
    serving ones), ScaledToZero, Failed (an invalid spec, or failing with nothing serving),
    else Loading."""
    ready, degraded = find_condition(conditions, READY), find_condition(conditions, DEGRADED)
    failing = degraded is not None and degraded.status == ConditionStatus.TRUE
    if ready is not None and ready.status == ConditionStatus.TRUE:
        return (DEGRADED, degraded.reason) if failing and degraded is not None else (READY, ready.reason)
    if ready is not None and ready.reason == INVALID_SPEC:
        return FAILED, INVALID_SPEC
    if ready is not None and ready.reason == SCALED_TO_ZERO:
        return SCALED_TO_ZERO, SCALED_TO_ZERO
    if failing and degraded is not None:
        return FAILED, degraded.reason
    return LOADING, ready.reason if ready is not None else ""
