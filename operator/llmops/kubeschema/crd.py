"""What kube-apiserver refuses when a CustomResourceDefinition is written, with its field paths.

The emulated API server calls :func:`crd_errors` on CRD create/update and answers 422 with
one cause per :class:`CrdError`, as the real server does:

    spec.validation.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule:
      Invalid value: {"Rule":"self.all(k, ...)",...}: compilation failed: ERROR: <input>:1:1: ...

Covered: list-type/list-map-key rules and CEL rules (compiled with their types, see
celtypes.py; ``oldSelf`` only where an old value can be correlated; messageExpression must
be a string). Schema paths follow apiextensions' internal form: when every version carries
the same schema it is reported under ``spec.validation.openAPIV3Schema``, otherwise under
``spec.versions[i].schema.openAPIV3Schema``. Not covered: the rest of the structural-schema
rules (see structural.check_structural) and the CEL cost estimator.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmops.kubeschema import celtypes
from llmops.kubeschema.validator import is_transition_rule

Schema = dict[str, Any]
_NO_TYPES = ("Internal error: internal error: failed to construct type information for x-kubernetes-validations "
             "rules: unable to convert structural schema to CEL declarations")


@dataclass(frozen=True)
class CrdError:
    """One cause of a refused CRD: its field path, cause reason and message body."""

    field: str
    reason: str
    body: str

    def __str__(self) -> str:
        return f"{self.field}: {self.body}"


def _go_json(value: Any) -> str:
    """encoding/json output: compact, with <, > and & escaped as Go does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _rule_value(rule: dict[str, Any]) -> str:
    """How the server prints a ValidationRule as the invalid value (Go field names)."""
    return _go_json({"Rule": rule.get("rule", ""), "Message": rule.get("message", ""),
                     "MessageExpression": rule.get("messageExpression", ""), "Reason": rule.get("reason"),
                     "FieldPath": rule.get("fieldPath", ""), "OptionalOldSelf": rule.get("optionalOldSelf")})


def rule_problems(self_type: celtypes.CelType, rule: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, detail) for one rule: field is ``rule`` or ``messageExpression``."""
    old = celtypes.UNKNOWN if rule.get("optionalOldSelf") else self_type
    variables = {"self": self_type, "oldSelf": old}
    expr = rule.get("rule") or ""
    try:
        result = celtypes.check(expr, variables)
    except celtypes.CelCheckError as e:
        return [("rule", f"compilation failed: {e.render(expr)}")]
    if result.kind not in ("bool", "unknown"):
        return [("rule", "cel expression must evaluate to a bool")]
    message_expr = rule.get("messageExpression")
    if not message_expr:
        return []
    try:
        result = celtypes.check(message_expr, variables)
    except celtypes.CelCheckError as e:
        return [("messageExpression", f"messageExpression compilation failed: {e.render(message_expr)}")]
    if result.kind not in ("string", "unknown"):
        return [("messageExpression", "messageExpression must evaluate to a string")]
    return []


def walk(schema: Schema, path: str) -> Iterator[tuple[str, Schema, str | None]]:
    """(field path, node, uncorrelatable-within) for each node; the last is the path of the
    nearest enclosing list whose items cannot be correlated with an old value (or None)."""
    yield from _walk(schema, path, None)


def _walk(node: Schema, path: str, uncorrelatable: str | None) -> Iterator[tuple[str, Schema, str | None]]:
    yield path, node, uncorrelatable
    for name, sub in (node.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from _walk(sub, f"{path}.properties[{name}]", uncorrelatable)
    addl = node.get("additionalProperties")
    if isinstance(addl, dict):
        yield from _walk(addl, f"{path}.additionalProperties", uncorrelatable)
    items = node.get("items")
    if isinstance(items, dict):
        keyed = node.get("x-kubernetes-list-type") == "map"
        yield from _walk(items, f"{path}.items", uncorrelatable or (None if keyed else path))


def list_type_errors(node: Schema, path: str) -> list[CrdError]:
    """Errors of x-kubernetes-list-type/-map-keys on one array node."""
    errs: list[CrdError] = []
    lt, keys = node.get("x-kubernetes-list-type"), node.get("x-kubernetes-list-map-keys") or []
    items = node.get("items") if isinstance(node.get("items"), dict) else {}
    if keys and lt != "map":
        errs.append(CrdError(f"{path}.x-kubernetes-list-type", "FieldValueRequired",
                             "Required value: must be map if x-kubernetes-list-map-keys is non-empty"))
    if lt == "set" and items.get("type") == "object" and items.get("x-kubernetes-map-type") != "atomic":
        errs.append(CrdError(f"{path}.items.x-kubernetes-map-type", "FieldValueInvalid",
                             "Invalid value: null: must be atomic as item of a list with x-kubernetes-list-type=set"))
    if lt != "map":
        return errs
    if not keys:
        errs.append(CrdError(f"{path}.x-kubernetes-list-map-keys", "FieldValueRequired",
                             "Required value: must not be empty if x-kubernetes-list-type is map"))
    props = items.get("properties") or {}
    if any(k not in props for k in keys):
        errs.append(CrdError(f"{path}.x-kubernetes-list-map-keys", "FieldValueInvalid",
                             f"Invalid value: {_go_json(keys)}: entries must all be names of item properties"))
    for key in keys:
        sub = props.get(key)
        if not isinstance(sub, dict):
            continue
        key_path = f"{path}.items.properties[{key}]"
        if sub.get("type") in ("object", "array"):
            errs.append(CrdError(f"{key_path}.type", "FieldValueInvalid",
                                 f'Invalid value: "{sub["type"]}": must be a scalar type if parent array\'s '
                                 "x-kubernetes-list-type is map"))
        if key not in (items.get("required") or []) and "default" not in sub:
            errs.append(CrdError(f"{key_path}.default", "FieldValueRequired",
                                 "Required value: this property is in x-kubernetes-list-map-keys, so it must "
                                 "have a default or be a required property"))
    return errs


def rule_errors(node: Schema, path: str, uncorrelatable: str | None, root: bool) -> list[CrdError]:
    """CEL problems of the x-kubernetes-validations on one node."""
    rules = node.get("x-kubernetes-validations") or []
    if not rules:
        return []
    self_type = celtypes.decl_type(node, resource_root=root)
    if self_type is None:
        return [CrdError(f"{path}.x-kubernetes-validations", "InternalError", _NO_TYPES)]
    errs = []
    for i, rule in enumerate(rules):
        where = f"{path}.x-kubernetes-validations[{i}]"
        if uncorrelatable and is_transition_rule(rule.get("rule") or ""):
            errs.append(CrdError(f"{where}.rule", "FieldValueInvalid",
                                 f"Invalid value: {_go_json(rule.get('rule', ''))}: oldSelf cannot be used on the "
                                 f"uncorrelatable portion of the schema within {uncorrelatable}"))
            continue
        for field, detail in rule_problems(self_type, rule):
            errs.append(CrdError(f"{where}.{field}", "FieldValueInvalid", f"Invalid value: {_rule_value(rule)}: {detail}"))
    return errs


def schema_errors(schema: Schema, path: str) -> list[CrdError]:
    """List-type and CEL errors of one openAPIV3Schema reported under ``path``.

    A list with a list-type error has no usable CEL type, so the server compiles no rule on
    that list or on any node above it (rules below it and beside it are still checked)."""
    errs: list[CrdError] = []
    broken: list[str] = []
    for node_path, node, _ in walk(schema, path):
        found = list_type_errors(node, node_path)
        if found:
            errs += found
            broken.append(node_path)
    for node_path, node, uncorrelatable in walk(schema, path):
        if any(b == node_path or b.startswith(node_path + ".") for b in broken):
            continue
        errs += rule_errors(node, node_path, uncorrelatable, root=node_path == path)
    return errs


def crd_errors(crd: dict[str, Any]) -> list[CrdError]:
    """Everything this module checks about a CustomResourceDefinition object."""
    versions = [v for v in ((crd.get("spec") or {}).get("versions") or []) if isinstance(v, dict)]
    schemas = [((v.get("schema") or {}).get("openAPIV3Schema")) for v in versions]
    # Test suites install the same CRDs over and over: compile each distinct set once.
    return list(_schemas_errors(json.dumps(schemas, sort_keys=True, default=str)))


@functools.lru_cache(maxsize=64)
def _schemas_errors(schemas_json: str) -> tuple[CrdError, ...]:
    schemas = json.loads(schemas_json)
    if schemas and all(s == schemas[0] for s in schemas):
        located = [("spec.validation.openAPIV3Schema", schemas[0])]
    else:
        located = [(f"spec.versions[{i}].schema.openAPIV3Schema", s) for i, s in enumerate(schemas)]
    errs: list[CrdError] = []
    for path, schema in located:
        if isinstance(schema, dict):
            errs += schema_errors(schema, path)
    return tuple(errs)
