"""Offline Kubernetes structural-schema + CEL validation (what kube-apiserver checks).

Used by the embedded API server (admission of custom resources), ``llmops validate`` and the
CRD generator's tests. See validator.py (objects) and structural.py (the CRD schema itself).
"""

from llmops.kubeschema.crd import CrdError, crd_errors
from llmops.kubeschema.errors import FieldError, format_value, invalid_message
from llmops.kubeschema.structural import check_structural, compile_rules, unbounded_in_rules
from llmops.kubeschema.validator import admit, apply_defaults, prune, unknown_fields, validate

__all__ = [
    "CrdError",
    "FieldError",
    "admit",
    "apply_defaults",
    "check_structural",
    "compile_rules",
    "crd_errors",
    "format_value",
    "invalid_message",
    "prune",
    "unbounded_in_rules",
    "unknown_fields",
    "validate",
]
