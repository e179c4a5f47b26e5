"""Step-level checkpoint settings of a job: where, how often, how many kept, whose resumed."""

from __future__ import annotations

import enum

from pydantic import ConfigDict, Field, model_validator

from llmops.api.cel import cel
from llmops.api.scalars import DNSSubdomain, StorageUri
from llmops.api.wire import SpecModel


class Credentials(SpecModel):
    """How pods authenticate to checkpoint storage: a Secret or the pod's ServiceAccount (IRSA etc.)."""

    secret_name: DNSSubdomain | None = Field(
        default=None,
        description=(
            "Secret in the job's namespace with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and optional AWS_ENDPOINT_URL). "
            "Name only: no namespace."
        ),
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

    model_config = ConfigDict(
        json_schema_extra=cel(("has(self.everySteps) || has(self.everySeconds)", "set everySteps and/or everySeconds"))
    )
