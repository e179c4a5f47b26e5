"""The one Event type every planner returns: a transition the handler announces once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    """One Kubernetes Event to emit on the custom resource (only on transitions)."""

    type: str  # Normal or Warning
    reason: str
    message: str
