"""The pod -> operator contract: the progress report rank 0 writes on its Lease.

Rank 0 renews the per-job Lease (``spec.renewTime`` is the heartbeat) and writes this
model as JSON into the annotation ``labels.PROGRESS_ANNOTATION``. The job's ServiceAccount
may update only that Lease (``resourceNames``), so a pod cannot touch anything else.

The finetune runtime adds one typed section, ``finetune`` (dataset statistics, evaluation,
and once published the output): the FinetuneJob reconcile reads it from its child
TrainingJob's Lease and copies it into the FinetuneJob's status. The sections reuse the
FinetuneJob status models, so what a pod reports is exactly what the status shows (unknown
fields are ignored on both sides, so an older or newer pod image never breaks the reconcile).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from llmops.api.finetune import DatasetStats, EvaluationStatus, OutputStatus


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class CommittedCheckpoint(_Wire):
    """The newest fully committed checkpoint (pointer written, manifest verified)."""

    id: str = Field(description="Checkpoint id, e.g. step-00000120.")
    step: int = Field(ge=0, description="Optimizer steps completed when it was taken.")
    uri: str = Field(description="Where its manifest lives.")
    time: str = Field(description="RFC 3339 time the pointer was moved.")


class FinetuneReport(_Wire):
    """What the finetune runtime's rank 0 adds to its report (llmops_runtime.finetune)."""

    dataset: DatasetStats | None = Field(default=None, description="Dataset statistics, once the inputs are read.")
    evaluation: EvaluationStatus | None = Field(default=None, description="Validation results so far (base loss first).")
    output: OutputStatus | None = Field(
        default=None, description="The published artifact; set only after it is committed, before rank 0 exits 0.",
    )


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
    finetune: FinetuneReport | None = Field(default=None, description="Finetune runtime only: dataset, evaluation, output.")
