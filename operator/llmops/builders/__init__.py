"""Pure builders: (custom resource, observed facts) -> child objects as plain dicts."""

from llmops.builders.names import bounded_name
from llmops.builders.training import BuildInputs, build_training_children

__all__ = ["BuildInputs", "bounded_name", "build_training_children"]
