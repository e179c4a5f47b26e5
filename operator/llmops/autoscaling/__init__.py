"""Load-time-aware autoscaling policy (pure: no clock, no randomness, no cluster access)."""

from llmops.autoscaling.metrics import parse_vllm_metrics
from llmops.autoscaling.policy import (
    AutoscaleInputs,
    Behaviour,
    Decision,
    FleetSample,
    PolicyState,
    Reason,
    ReplicaSignal,
    SignalKind,
    decide,
)

__all__ = [
    "AutoscaleInputs",
    "Behaviour",
    "Decision",
    "FleetSample",
    "PolicyState",
    "Reason",
    "ReplicaSignal",
    "SignalKind",
    "decide",
    "parse_vllm_metrics",
]
