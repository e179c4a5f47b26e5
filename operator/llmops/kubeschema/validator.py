"""Validate objects against a structural openAPIV3Schema the way kube-apiserver does.

The admission path of a custom resource in a real API server is: decode, prune unknown
fields, apply defaults, validate the schema (types, bounds, enums, required, list types),
then run the CEL ``x-kubernetes-validations`` of every node. This module provides the same
steps as pure functions so the embedded API server and ``llmops validate`` reject exactly
what a cluster would, with the same words:

- :func:`prune` drops fields the schema does not declare (unless the node says
  ``x-kubernetes-preserve-unknown-fields``), and nulls of non-nullable fields;
- :func:`apply_defaults` fills ``default`` values of absent properties (CEL sees them);
- :func:`validate` returns :class:`FieldError` s; CEL rules of a node run unless a value
  under it has the wrong type or a required field is missing (a rule never sees those), and
  transition rules (those naming ``oldSelf``) only when an old object is given and the node
  can be correlated with its old value (object properties, map values, ``listType=map``
  items by key), as the API server does;
- :func:`unknown_fields` lists what pruning would drop, for strict (client-side) checks.
"""

from __future__ import annotations

import copy
import math
import re
from functools import lru_cache
from typing import Any

import celpy

from llmops.kubeschema.errors import (
    CEL_REASONS,
    DUPLICATE,
    INVALID,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    TYPE_INVALID,
    UNKNOWN,
    UNSUPPORTED,
    FieldError,
)

Schema = dict[str, Any]

_OLD_SELF = re.compile(r"\boldSelf\b")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


# --- paths -----------------------------------------------------------------------------------


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _index(path: str, i: int | str) -> str:
    return f"{path}[{i}]"


def _join_field_path(path: str, field_path: str) -> str:
    """CEL fieldPath (".spec.nodes", "['a.b']", ".env[0]") appended to the node's path."""
    fp = field_path.strip()
    fp = re.sub(r"\['([^']*)'\]", r".\1", fp)
    if fp.startswith("."):
        fp = fp[1:]
    if not fp:
        return path
    return f"{path}.{fp}" if path else fp


# --- pruning and defaulting --------------------------------------------------------------------


def _is_object_schema(schema: Schema) -> bool:
    return schema.get("type") == "object" or "properties" in schema or "additionalProperties" in schema


def prune(schema: Schema, obj: dict[str, Any]) -> dict[str, Any]:
    """A new object without the fields ``schema`` does not declare (apiVersion, kind and
    metadata are always kept at the root, as for every Kubernetes object)."""
    out = _prune(schema, copy.deepcopy(obj), root=True)
    return out if isinstance(out, dict) else {}


def _prune(schema: Schema, value: Any, root: bool = False, embedded: bool = False) -> Any:
    if isinstance(value, dict) and (_is_object_schema(schema) or schema.get("x-kubernetes-preserve-unknown-fields")):
        props: dict[str, Schema] = schema.get("properties", {})
        addl = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        keep_meta = root or embedded or bool(schema.get("x-kubernetes-embedded-resource"))
        out: dict[str, Any] = {}
        for key, sub in value.items():
            if keep_meta and key == "metadata":
                out[key] = sub  # ObjectMeta is the API server's own; the schema only restricts name
                continue
            if key in props:
                child_schema = props[key]
                if sub is None and not child_schema.get("nullable"):
                    continue  # nulls of non-nullable fields are dropped, as the API server does
                out[key] = _prune(child_schema, sub, embedded=bool(child_schema.get("x-kubernetes-embedded-resource")))
            elif isinstance(addl, dict):
                if sub is None and not addl.get("nullable"):
                    continue
                out[key] = _prune(addl, sub)
            elif addl is True or preserve or (keep_meta and key in ("apiVersion", "kind", "metadata")):
                out[key] = sub
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(schema["items"], item) for item in value]
    return value


def unknown_fields(schema: Schema, obj: Any, path: str = "", root: bool = True) -> list[FieldError]:
    """Fields pruning would drop, as strict field validation reports them."""
    errs: list[FieldError] = []
    if isinstance(obj, dict) and _is_object_schema(schema) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        props = schema.get("properties", {})
        addl = schema.get("additionalProperties")
        for key, sub in obj.items():
            if root and key == "metadata":
                continue  # ObjectMeta: validated by the API server itself, not the CRD schema
            if key in props:
                errs += unknown_fields(props[key], sub, _child(path, key), root=False)
            elif isinstance(addl, dict):
                errs += unknown_fields(addl, sub, _index(path, key), root=False)
            elif addl is True or (root and key in ("apiVersion", "kind", "metadata")):
                continue
            else:
                errs.append(FieldError(_child(path, key), UNKNOWN, sub, ""))
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            errs += unknown_fields(schema["items"], item, _index(path, i), root=False)
    return errs


def apply_defaults(schema: Schema, obj: dict[str, Any]) -> dict[str, Any]:
    """A new object with ``default`` values filled in for absent properties, recursively."""
    return _default(schema, copy.deepcopy(obj))


def _default(schema: Schema, value: Any) -> Any:
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if (key not in value or (value[key] is None and not sub.get("nullable"))) and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _default(sub, value[key])
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            for key in list(value):
                if key not in schema.get("properties", {}):
                    value[key] = _default(addl, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_default(schema["items"], item) for item in value]
    return value


# --- CEL -------------------------------------------------------------------------------------

_ENV = celpy.Environment()


@lru_cache(maxsize=4096)
def _program(expr: str) -> Any:
    return _ENV.program(_ENV.compile(expr))


def to_cel(value: Any) -> Any:
    """Python JSON value -> CEL value."""
    return celpy.json_to_cel(value)


def is_transition_rule(rule: str) -> bool:
    return bool(_OLD_SELF.search(rule))


# --- validation ------------------------------------------------------------------------------


def admit(schema: Schema, obj: dict[str, Any], old: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[FieldError]]:
    """What the API server does with a create (old None) or update: prune, default, validate.
    Returns the object as it would be stored and the errors (store only when empty)."""
    stored = apply_defaults(schema, prune(schema, obj))
    old_stored = apply_defaults(schema, prune(schema, old)) if old is not None else None
    return stored, validate(schema, stored, old_stored)


def validate(schema: Schema, obj: Any, old: Any | None = None) -> list[FieldError]:
    """Every schema and CEL error of ``obj`` (expected pruned and defaulted, as the API server
    validates it); ``old`` enables transition rules (updates)."""
    errs = _Errors()
    _validate(schema, obj, "", old, old is not None, errs)
    # As kube-apiserver: CEL runs only when no schema error makes the object unusable for it;
    # otherwise one <nil> cause says that rules were skipped.
    if any(e.type in BLOCKING for e in errs):
        if _has_rules(schema):
            errs.append(FieldError("", INVALID, None, RULES_SKIPPED))
        return list(errs)
    for args in errs.rules:
        _cel(*args, errs)
    return list(errs)


#: Schema error types that stop CEL validation of the whole object (apiextensions hasBlockingErr).
BLOCKING = (UNSUPPORTED, REQUIRED, TOO_LONG, TOO_MANY, TYPE_INVALID)
RULES_SKIPPED = ("some validation rules were not checked because the object was invalid; correct the existing "
                 "errors to complete validation")


def _has_rules(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("x-kubernetes-validations"):
        return True
    subs = [*(schema.get("properties") or {}).values(), schema.get("items"), schema.get("additionalProperties")]
    return any(_has_rules(sub) for sub in subs)


class _Errors(list[FieldError]):
    """Schema errors, plus the CEL evaluations deferred until the schema pass is done."""

    def __init__(self) -> None:
        super().__init__()
        self.rules: list[tuple[Schema, Any, str, Any, bool]] = []


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _type_ok(t: str, value: Any) -> bool:
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        # JSON has no integer type: an integral float (2.0) is an integer, as in the API server.
        return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True


def _validate(schema: Schema, value: Any, path: str, old: Any, has_old: bool, errs: list[FieldError]) -> None:
    shown = path or "<nil>"
    if value is None:
        if schema.get("nullable"):
            return
        if "type" in schema:
            errs.append(FieldError(path, TYPE_INVALID, "null", f'{shown} in body must be of type {schema["type"]}: "null"'))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if not (isinstance(value, str) or _type_ok("integer", value)):
            got = _type_name(value)
            errs.append(FieldError(path, TYPE_INVALID, got, f'{shown} in body must be of type integer,string: "{got}"'))
            return
    elif "type" in schema and not _type_ok(schema["type"], value):
        got = _type_name(value)
        errs.append(FieldError(path, TYPE_INVALID, got, f'{shown} in body must be of type {schema["type"]}: "{got}"'))
        return

    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_quote(v) for v in schema["enum"])
        errs.append(FieldError(path, UNSUPPORTED, value, f"supported values: {supported}"))

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        _numbers(schema, value, path, errs)
    elif isinstance(value, str):
        _strings(schema, value, path, errs)
    elif isinstance(value, list):
        _arrays(schema, value, path, old, has_old, errs)
    elif isinstance(value, dict):
        _objects(schema, value, path, old, has_old, errs)

    _junctors(schema, value, path, errs)

    if schema.get("x-kubernetes-validations") and isinstance(errs, _Errors):  # junctor branches run no CEL
        errs.rules.append((schema, value, path, old, has_old))


def _junctors(schema: Schema, value: Any, path: str, errs: list[FieldError]) -> None:
    """allOf/anyOf/oneOf/not: value validation only (structural schemas put no types there,
    except the int-or-string pattern, whose type check already ran)."""
    shown = path or "<nil>"
    for sub in schema.get("allOf", []):
        errs.extend(_plain(sub, value, path))
    if "anyOf" in schema and not schema.get("x-kubernetes-int-or-string") and all(_plain(sub, value, path) for sub in schema["anyOf"]):
        errs.append(FieldError(path, INVALID, value, f"{shown} in body must validate at least one schema (anyOf)"))
    if "oneOf" in schema:
        passing = sum(1 for sub in schema["oneOf"] if not _plain(sub, value, path))
        if passing != 1:
            errs.append(FieldError(path, INVALID, value, f"{shown} in body must validate one and only one schema (oneOf)"))
    if "not" in schema and not _plain(schema["not"], value, path):
        errs.append(FieldError(path, INVALID, value, f"{shown} in body should not validate the schema (not)"))


def _plain(sub: Schema, value: Any, path: str) -> list[FieldError]:
    """Errors of ``value`` under a junctor branch (no CEL, no transition context)."""
    out: list[FieldError] = []
    _validate({k: v for k, v in sub.items() if k != "x-kubernetes-validations"}, value, path, None, False, out)
    return out


def _quote(v: Any) -> str:
    return f'"{v}"' if isinstance(v, str) else str(v)


def _num(v: float) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _numbers(schema: Schema, value: float, path: str, errs: list[FieldError]) -> None:
    shown = path or "<nil>"
    fmt = schema.get("format")
    if fmt == "int32" and not -(2**31) <= value < 2**31:
        errs.append(FieldError(path, INVALID, value, f"{shown} in body must be of type int32"))
    if fmt == "int64" and not -(2**63) <= value < 2**63:
        errs.append(FieldError(path, INVALID, value, f"{shown} in body must be of type int64"))
    if isinstance(value, float) and not math.isfinite(value):
        errs.append(FieldError(path, INVALID, value, f"{shown} in body must be a finite number"))
    if "minimum" in schema:
        lo = schema["minimum"]
        if schema.get("exclusiveMinimum") is True:
            if value <= lo:
                errs.append(FieldError(path, INVALID, value, f"{shown} in body should be greater than {_num(lo)}"))
        elif value < lo:
            errs.append(FieldError(path, INVALID, value, f"{shown} in body should be greater than or equal to {_num(lo)}"))
    if "maximum" in schema:
        hi = schema["maximum"]
        if schema.get("exclusiveMaximum") is True:
            if value >= hi:
                errs.append(FieldError(path, INVALID, value, f"{shown} in body should be less than {_num(hi)}"))
        elif value > hi:
            errs.append(FieldError(path, INVALID, value, f"{shown} in body should be less than or equal to {_num(hi)}"))
    if "multipleOf" in schema:
        m = schema["multipleOf"]
        if m and (value / m) != int(value / m):
            errs.append(FieldError(path, INVALID, value, f"{shown} in body should be a multiple of {_num(m)}"))


def _strings(schema: Schema, value: str, path: str, errs: list[FieldError]) -> None:
    shown = path or "<nil>"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errs.append(FieldError(path, TOO_LONG, value, f"may not be longer than {schema['maxLength']}"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errs.append(FieldError(path, INVALID, value, f"{shown} in body should be at least {schema['minLength']} chars long"))
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        errs.append(FieldError(path, INVALID, value, f"{shown} in body should match '{schema['pattern']}'"))
    fmt = schema.get("format")
    if fmt == "date-time" and not _DATE_TIME.match(value):
        errs.append(FieldError(path, INVALID, value, f"{shown} in body must be of type date-time: {_quote(value)}"))


def _arrays(schema: Schema, value: list[Any], path: str, old: Any, has_old: bool, errs: list[FieldError]) -> None:
    shown = path or "<nil>"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        errs.append(FieldError(path, TOO_MANY, len(value), f"must have at most {schema['maxItems']} items"))
    if "minItems" in schema and len(value) < schema["minItems"]:
        errs.append(FieldError(path, INVALID, len(value), f"{shown} in body should have at least {schema['minItems']} items"))
    list_type = schema.get("x-kubernetes-list-type")
    keys = schema.get("x-kubernetes-list-map-keys", [])
    old_by_key: dict[Any, Any] = {}
    if list_type == "set":
        seen: list[Any] = []
        for i, item in enumerate(value):
            if item in seen:
                errs.append(FieldError(_index(path, i), DUPLICATE, item, ""))
            seen.append(item)
    elif list_type == "map" and keys:
        seen_keys: set[Any] = set()
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            k = tuple(_freeze(item.get(x)) for x in keys)
            if k in seen_keys:
                errs.append(FieldError(_index(path, i), DUPLICATE, {x: item.get(x) for x in keys}, ""))
            seen_keys.add(k)
        if has_old and isinstance(old, list):
            for item in old:
                if isinstance(item, dict):
                    old_by_key[tuple(_freeze(item.get(x)) for x in keys)] = item
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            if list_type == "map" and keys and isinstance(item, dict):
                k = tuple(_freeze(item.get(x)) for x in keys)
                correlated = k in old_by_key
                _validate(items, item, _index(path, i), old_by_key.get(k), correlated, errs)
            else:
                _validate(items, item, _index(path, i), None, False, errs)


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _objects(schema: Schema, value: dict[str, Any], path: str, old: Any, has_old: bool, errs: list[FieldError]) -> None:
    shown = path or "<nil>"
    for name in schema.get("required", []):
        if name not in value:
            errs.append(FieldError(_child(path, name), REQUIRED, None, ""))
    if "maxProperties" in schema and len(value) > schema["maxProperties"]:
        errs.append(FieldError(path, TOO_MANY, len(value), f"must have at most {schema['maxProperties']} items"))
    if "minProperties" in schema and len(value) < schema["minProperties"]:
        errs.append(FieldError(path, INVALID, len(value), f"{shown} in body should have at least {schema['minProperties']} properties"))
    props: dict[str, Schema] = schema.get("properties", {})
    addl = schema.get("additionalProperties")
    old_map = old if (has_old and isinstance(old, dict)) else None
    for key, _sub in value.items():
        if key in props:
            child_schema, child_path = props[key], _child(path, key)
        elif isinstance(addl, dict):
            child_schema, child_path = addl, _index(path, key)
        else:
            continue  # unknown fields are pruned before validation
        correlated = old_map is not None and key in old_map
        _validate(child_schema, value[key], child_path, old_map.get(key) if old_map else None, correlated, errs)


def _cel(schema: Schema, value: Any, path: str, old: Any, has_old: bool, errs: list[FieldError]) -> None:
    rules = schema.get("x-kubernetes-validations") or []
    if not rules:
        return
    type_name = schema.get("type", _type_name(value))
    activation: dict[str, Any] | None = None
    for rule in rules:
        expr = rule["rule"]
        transition = is_transition_rule(expr)
        if transition and (not has_old or old is None):
            continue
        if activation is None:
            activation = {"self": to_cel(value)}
        act = dict(activation)
        if transition:
            act["oldSelf"] = to_cel(old)
        target = _join_field_path(path, rule.get("fieldPath", ""))
        try:
            result = _program(expr).evaluate(act)
        except Exception as exc:  # CELEvalError and friends: reported like the API server does
            errs.append(FieldError(target, INVALID, type_name, f"{_eval_error(exc)} evaluating rule: {expr}"))
            continue
        if isinstance(result, Exception):
            errs.append(FieldError(target, INVALID, type_name, f"{_eval_error(result)} evaluating rule: {expr}"))
            continue
        if bool(result):
            continue
        message = rule.get("message") or f"failed rule: {expr}"
        if rule.get("messageExpression"):
            try:
                msg = _program(rule["messageExpression"]).evaluate(act)
                if isinstance(msg, str) and msg.strip() and "\n" not in msg:
                    message = str(msg)
            except Exception:  # a failing messageExpression falls back to message, as in kube
                pass
        etype = CEL_REASONS.get(rule.get("reason", ""), INVALID)
        if etype == INVALID:
            errs.append(FieldError(target, INVALID, type_name, message))
        elif etype == DUPLICATE:
            errs.append(FieldError(target, DUPLICATE, value, message))
        else:
            errs.append(FieldError(target, etype, None, message))


def _eval_error(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return str(exc)

