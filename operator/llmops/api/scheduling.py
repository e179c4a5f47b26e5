"""Placement of the worker pods: gang backend, queue and priority."""

from __future__ import annotations

import enum

from pydantic import Field

from llmops.api.scalars import DNSLabel, DNSSubdomain
from llmops.api.wire import SpecModel


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
        description=(
            "How long the gang may wait to be placed; then every pod is deleted, "
            "the job reports Queued (SchedulingTimeout) and retries with backoff."
        ),
    )


class Scheduling(SpecModel):
    """Placement policy of the worker pods."""

    gang: Gang = Field(default_factory=Gang, description="Gang scheduling settings.")
    queue_name: DNSLabel | None = Field(
        default=None, description="Queue (Kueue LocalQueue or Volcano queue) name, in the job's namespace."
    )
    priority_class_name: DNSSubdomain | None = Field(default=None, description="PriorityClass of the worker pods.")
