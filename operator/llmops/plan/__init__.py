"""The planners: (custom resource, observed facts, now) -> the whole status, the children and
the Events, pure; one module per kind, with the shared condition helpers in ``conditions``."""

from llmops.plan.conditions import Event
from llmops.plan.training import Observed, Plan, compute_status, plan

__all__ = ["Event", "Observed", "Plan", "compute_status", "plan"]
