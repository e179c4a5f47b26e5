"""The pod -> operator contract: the progress report rank 0 writes on its Lease.

Rank 0 renews the per-job Lease (``spec.renewTime`` is the heartbeat) and writes this
model as JSON into the annotation ``labels.PROGRESS_ANNOTATION``. The job's ServiceAccount
may update only that Lease (``resourceNames``), so a pod cannot touch anything else.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class CommittedCheckpoint(_Wire):
    """The newest fully committed checkpoint (pointer written, manifest verified)."""

    id: str = Field(description="Checkpoint id, e.g. step-00000120.")
    step: int = Field(ge=0, description="Optimizer steps completed when it was taken.")
    uri: str = Field(description="Where its manifest lives.")
    time: str = Field(description="RFC 3339 time the pointer was moved.")


class ProgressReport(_Wire):
    """What rank 0 reports; the operator folds it into status.progress."""

    attempt: int = Field(ge=0, description="Gang restart attempt that wrote the report.")
    step: int = Field(ge=0, description="Optimizer steps completed.")
    total_steps: int | None = Field(default=None, description="Declared total, when known.")
    loss: float | None = Field(default=None, description="Last step's loss (finite).")
    tokens_per_second: float | None = Field(default=None, description="Throughput over the last window, all ranks.")
    samples_consumed: int | None = Field(default=None, description="Samples consumed so far, all ranks.")
    first_step_time: str | None = Field(default=None, description="RFC 3339 time the first step of this attempt ended.")
    checkpoint: CommittedCheckpoint | None = Field(default=None, description="Newest committed checkpoint.")
    checkpoint_failing_since: str | None = Field(default=None, description="Set while saves fail; RFC 3339.")
    checkpoint_error: str | None = Field(default=None, description="Last storage error text, while failing.")
    heartbeat: str = Field(description="RFC 3339 time of this report.")
