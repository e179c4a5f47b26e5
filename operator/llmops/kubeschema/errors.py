"""Field errors worded the way kube-apiserver words them (k8s.io/apimachinery field.Error).

A client (kubectl, Argo CD, our tests) sees the same text from the embedded API and from a
real cluster, so messages here follow apimachinery's ``ErrorBody`` forms:

    spec.nodes: Invalid value: 0: spec.nodes in body should be greater than or equal to 1
    spec.scheduling.gang.backend: Unsupported value: "x": supported values: "auto", "native"
    spec.image: Required value
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# field.ErrorType strings
INVALID = "FieldValueInvalid"
UNSUPPORTED = "FieldValueNotSupported"
REQUIRED = "FieldValueRequired"
FORBIDDEN = "FieldValueForbidden"
DUPLICATE = "FieldValueDuplicate"
TOO_LONG = "FieldValueTooLong"
TOO_MANY = "FieldValueTooMany"
TYPE_INVALID = "FieldValueTypeInvalid"
UNKNOWN = "FieldValueUnknown"  # strict field validation: a field the schema does not declare

#: CEL ``reason`` values a CRD may name, mapped to error types.
CEL_REASONS = {
    "FieldValueInvalid": INVALID,
    "FieldValueForbidden": FORBIDDEN,
    "FieldValueRequired": REQUIRED,
    "FieldValueDuplicate": DUPLICATE,
}


def format_value(value: Any) -> str:
    """How apimachinery prints a bad value: strings quoted, numbers bare, composites by type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if value is None:
        return "null"
    if isinstance(value, dict):
        return '"object"'
    if isinstance(value, list):
        return '"array"'
    return json.dumps(str(value))


def _go_map(value: dict[str, Any]) -> str:
    """Go's %#v of a map[string]interface{}, which kube prints for duplicate list-map keys."""
    inner = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in value.items())
    return "map[string]interface {}{" + inner + "}"


@dataclass
class FieldError:
    """One validation failure at a field path (empty path = the object root)."""

    path: str
    type: str
    value: Any
    detail: str

    def body(self) -> str:
        if self.type == REQUIRED:
            return "Required value" + (f": {self.detail}" if self.detail else "")
        if self.type == FORBIDDEN:
            return "Forbidden" + (f": {self.detail}" if self.detail else "")
        if self.type == DUPLICATE:
            shown = _go_map(self.value) if isinstance(self.value, dict) else format_value(self.value)
            return f"Duplicate value: {shown}"
        if self.type == UNSUPPORTED:
            return f"Unsupported value: {format_value(self.value)}" + (f": {self.detail}" if self.detail else "")
        if self.type == TOO_LONG:
            return f"Too long: {self.detail}"
        if self.type == TOO_MANY:
            return f"Too many: {format_value(self.value)}: {self.detail}"
        if self.type == TYPE_INVALID:
            return f"Invalid value: {format_value(self.value)}: {self.detail}"
        return f"Invalid value: {format_value(self.value)}" + (f": {self.detail}" if self.detail else "")

    def __str__(self) -> str:
        if self.type == UNKNOWN:
            return f'unknown field "{self.path}"'
        return f"{self.path or '<nil>'}: {self.body()}"


def invalid_message(kind_group: str, name: str, errors: list[FieldError] | list[str]) -> str:
    """The Status message of a 422: 'Kind.group "name" is invalid: ...' (brackets for several)."""
    texts = [str(e) for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return f'{kind_group} "{name}" is invalid: {joined}'
