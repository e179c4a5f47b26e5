"""Failure and run policy of a job: restart budget, backoff, hang detection, suspend,
deadline and TTL."""

from __future__ import annotations

from pydantic import ConfigDict, Field, model_validator

from llmops.api.cel import cel
from llmops.api.wire import SpecModel


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

    max_restarts: int = Field(
        default=3, ge=0, le=1000, description="Restarts counted against the budget (infrastructure disruptions are not counted).",
    )
    backoff: Backoff = Field(default_factory=Backoff, description="Delay between restarts.")
    hang_timeout_seconds: int | None = Field(
        default=None, ge=60, le=86400,
        description="Restart the gang when rank 0's heartbeat is older than this (unset: hang detection off).",
    )


class RunPolicy(SpecModel):
    """Lifecycle knobs of the job as a whole."""

    suspend: bool = Field(
        default=False, description="True deletes the worker pods and keeps the job (resume from the checkpoint on false).",
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, le=31_536_000, description="Fail the job after this many seconds of running.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None, ge=0, le=31_536_000, description="Delete the job this long after it finished.",
    )
