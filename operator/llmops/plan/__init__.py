"""Pure status computers: (custom resource, observed facts, now) -> status (and the plan)."""

from llmops.plan.training import Event, Observed, Plan, compute_status, plan

__all__ = ["Event", "Observed", "Plan", "compute_status", "plan"]
