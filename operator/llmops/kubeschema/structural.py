"""Offline checks a real API server applies when a CRD is created.

kube-apiserver rejects a CustomResourceDefinition whose openAPIV3Schema is not *structural*
(every node typed, no ``$ref``, logical junctors that only add value validation, no
``nullable`` via ``anyOf``, ``metadata`` restricted to name/generateName, ...), whose CEL
rules do not compile against the schema's types, or whose rules could cost too much (lists,
maps and strings a rule touches must carry maxItems/maxProperties/maxLength). We cannot run
an API server here, so these functions re-check the same rules on the generated schema:

- :func:`check_structural` -> violations of the structural-schema rules;
- :func:`compile_rules` -> CEL rules that do not compile against the schema's CEL types
  (celtypes.py: undefined fields, wrong operand types, ranges over objects, non-bool
  results), use ``oldSelf`` where no old value can be correlated, or carry an invalid
  reason/fieldPath or no message;
- :func:`unbounded_in_rules` -> unbounded lists/maps/strings that a rule touches (the cost
  estimator would reject or over-estimate them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llmops.kubeschema import celtypes
from llmops.kubeschema.crd import rule_problems
from llmops.kubeschema.errors import CEL_REASONS
from llmops.kubeschema.validator import is_transition_rule, validate

Schema = dict[str, Any]

#: Fields of apiextensions.k8s.io/v1 JSONSchemaProps; anything else fails decoding.
KNOWN_KEYS = frozenset(
    [
        "id", "$schema", "$ref", "description", "type", "format", "title", "default", "maximum", "exclusiveMaximum", "minimum",
        "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "enum",
        "maxProperties", "minProperties", "required", "items", "allOf", "oneOf", "anyOf", "not", "properties",
        "additionalProperties", "patternProperties", "dependencies", "additionalItems", "definitions", "externalDocs", "example",
        "nullable", "x-kubernetes-preserve-unknown-fields", "x-kubernetes-embedded-resource", "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys", "x-kubernetes-list-type", "x-kubernetes-map-type", "x-kubernetes-validations",
    ]
)
#: Known to JSONSchemaProps but refused in CRDs.
FORBIDDEN_KEYS = ("$ref", "id", "$schema", "definitions", "additionalItems", "patternProperties", "dependencies")
#: Not allowed inside allOf/anyOf/oneOf/not (structural rule 3).
JUNCTOR_FORBIDDEN = ("description", "type", "default", "additionalProperties", "nullable", "x-kubernetes-preserve-unknown-fields",
                     "x-kubernetes-embedded-resource", "x-kubernetes-list-type", "x-kubernetes-list-map-keys", "x-kubernetes-map-type")
JUNCTORS = ("allOf", "anyOf", "oneOf")
TYPES = ("object", "array", "string", "integer", "number", "boolean")


def _walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema, bool]]:
    """(path, node, correlatable) for every node outside logical junctors. ``correlatable`` is
    False below an array that is not listType=map (where oldSelf cannot be bound)."""
    yield from _walk_inner(schema, path, True)


def _walk_inner(schema: Schema, path: str, correlatable: bool) -> Iterator[tuple[str, Schema, bool]]:
    yield path, schema, correlatable
    for name, sub in (schema.get("properties") or {}).items():
        if isinstance(sub, dict):
            yield from _walk_inner(sub, f"{path}.{name}", correlatable)
    addl = schema.get("additionalProperties")
    if isinstance(addl, dict):
        yield from _walk_inner(addl, f"{path}[*]", correlatable)
    items = schema.get("items")
    if isinstance(items, dict):
        keyed = schema.get("x-kubernetes-list-type") == "map"
        yield from _walk_inner(items, f"{path}[*]", correlatable and keyed)


def check_structural(schema: Schema) -> list[str]:
    """Violations of the structural-schema rules, each prefixed by the node path."""
    errs: list[str] = []
    if schema.get("type") != "object":
        errs.append("<root>: type must be object")
    _structural(schema, "", errs, root=True)
    return errs


def _structural(node: Any, path: str, errs: list[str], root: bool = False, in_junctor: bool = False) -> None:
    where = path or "<root>"
    if not isinstance(node, dict):
        errs.append(f"{where}: must be a schema object")
        return
    for key in node:
        if key not in KNOWN_KEYS:
            errs.append(f"{where}: unknown field {key!r}")
    for key in FORBIDDEN_KEYS:
        if key in node:
            errs.append(f"{where}: {key} is not supported")
    if node.get("uniqueItems") is True:
        errs.append(f"{where}: uniqueItems cannot be set to true")
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if key in node and not isinstance(node[key], bool):
            errs.append(f"{where}: {key} must be a boolean (OpenAPI v3.0)")
    if node.get("x-kubernetes-preserve-unknown-fields") is False:
        errs.append(f"{where}: x-kubernetes-preserve-unknown-fields must be true or undefined")
    if in_junctor:
        for key in JUNCTOR_FORBIDDEN:
            if key in node:
                errs.append(f"{where}: {key} must not be set inside allOf/anyOf/oneOf/not")
    else:
        t = node.get("type")
        exempt = node.get("x-kubernetes-int-or-string") or node.get("x-kubernetes-preserve-unknown-fields")
        if not t and not exempt:
            errs.append(f"{where}: type must not be empty")
        if t and t not in TYPES:
            errs.append(f"{where}: unsupported type {t!r}")
        if node.get("x-kubernetes-embedded-resource") and t != "object":
            errs.append(f"{where}: x-kubernetes-embedded-resource needs type object")
    if "properties" in node and "additionalProperties" in node:
        errs.append(f"{where}: additionalProperties and properties are mutually exclusive")
    if node.get("additionalProperties") is False:
        errs.append(f"{where}: additionalProperties: false is not allowed")
    if "items" in node and not isinstance(node["items"], dict):
        errs.append(f"{where}: items must be a single schema")
    if node.get("type") == "array" and "items" not in node and not in_junctor:
        errs.append(f"{where}: items must be specified for arrays")
    if "enum" in node and node.get("type") in TYPES:
        for v in node["enum"]:
            if validate({"type": node["type"]}, v):
                errs.append(f"{where}: enum value {v!r} is not of type {node['type']}")
    _list_types(node, where, errs)

    # Junctors may only repeat fields declared outside (rule 2) and add value validation.
    for j in (*JUNCTORS, "not"):
        subs = node.get(j)
        if subs is None:
            continue
        for sub in subs if isinstance(subs, list) else [subs]:
            if isinstance(sub, dict):
                for name in sub.get("properties") or {}:
                    if name not in (node.get("properties") or {}):
                        errs.append(f"{where}: {j} names property {name!r} that is not declared outside it")
                if node.get("x-kubernetes-int-or-string") and j == "anyOf" and sub in ({"type": "integer"}, {"type": "string"}):
                    continue  # the one allowed typed junctor: int-or-string
                _structural(sub, f"{path}({j})", errs, in_junctor=True)

    if root and "metadata" in (node.get("properties") or {}):
        meta = node["properties"]["metadata"]
        for k in meta:
            if k not in ("type", "properties", "description"):
                errs.append(f".metadata: only restrictions on name and generateName are allowed (found {k})")
        for name, sub in (meta.get("properties") or {}).items():
            if name not in ("name", "generateName"):
                errs.append(f".metadata: only name and generateName may be specified (found {name})")
            elif sub.get("type") != "string":
                errs.append(f".metadata.{name}: type must be string")

    for name, sub in (node.get("properties") or {}).items():
        if root and name == "metadata":
            continue
        _structural(sub, f"{path}.{name}", errs, in_junctor=in_junctor)
    if isinstance(node.get("additionalProperties"), dict):
        _structural(node["additionalProperties"], f"{path}[*]", errs, in_junctor=in_junctor)
    if isinstance(node.get("items"), dict):
        _structural(node["items"], f"{path}[*]", errs, in_junctor=in_junctor)

    if "default" in node and not in_junctor:
        for e in validate(_without_rules(node), node["default"]):
            errs.append(f"{where}: default is invalid: {e}")


def _without_rules(node: Schema) -> Schema:
    return {k: v for k, v in node.items() if k != "x-kubernetes-validations"}


def _list_types(node: Schema, where: str, errs: list[str]) -> None:
    lt = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys")
    if lt is None:
        if keys:
            errs.append(f"{where}: x-kubernetes-list-map-keys needs x-kubernetes-list-type map")
        return
    if lt not in ("atomic", "set", "map"):
        errs.append(f"{where}: x-kubernetes-list-type must be atomic, set or map")
    if node.get("type") != "array":
        errs.append(f"{where}: x-kubernetes-list-type only applies to arrays")
        return
    items = node.get("items") or {}
    if lt == "set" and items.get("type") in ("object", "array"):
        errs.append(f"{where}: listType set needs scalar items")
    if lt == "map":
        if items.get("type") != "object":
            errs.append(f"{where}: listType map needs object items")
        if not keys:
            errs.append(f"{where}: listType map needs x-kubernetes-list-map-keys")
        for k in keys or []:
            sub = (items.get("properties") or {}).get(k)
            if sub is None:
                errs.append(f"{where}: map key {k!r} is not a property of the items")
            elif k not in (items.get("required") or []) and "default" not in sub:
                errs.append(f"{where}: map key {k!r} must be required or have a default")
            elif sub.get("type") not in ("string", "integer", "number", "boolean"):
                errs.append(f"{where}: map key {k!r} must be a scalar")


# --- CEL rules ----------------------------------------------------------------------------------

_REF = re.compile(r"(?<![\w.])(self|oldSelf)((?:\.[A-Za-z_]\w*)+)(\s*\()?")


def _rule_refs(expr: str) -> list[tuple[str, list[str]]]:
    """(variable, member chain) for each self./oldSelf. reference; a trailing method call is dropped."""
    out = []
    for m in _REF.finditer(expr):
        chain = m.group(2).lstrip(".").split(".")
        if m.group(3):
            chain = chain[:-1]
        out.append((m.group(1), chain))
    return out


def _resolve(node: Schema, chain: list[str]) -> tuple[Schema | None, str | None]:
    """Follow a member chain through properties; (node, None) or (None, undefined member)."""
    for member in chain:
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return None, None  # dynamic: nothing to check
        if isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
            continue
        props = node.get("properties") or {}
        if member not in props:
            return None, member
        node = props[member]
    return node, None


def compile_rules(schema: Schema) -> list[str]:
    """CEL problems the API server would report when the CRD is created (each rule compiled
    against the node's CEL type, see celtypes.py), plus this project's rule that every rule
    carries a message."""
    errs: list[str] = []
    for path, node, correlatable in _walk(schema):
        where = path or "<root>"
        rules = node.get("x-kubernetes-validations") or []
        self_type = celtypes.decl_type(node, resource_root=not path) if rules else None
        for i, rule in enumerate(rules):
            label = f"{where}: x-kubernetes-validations[{i}]"
            expr = rule.get("rule")
            if not isinstance(expr, str) or not expr.strip():
                errs.append(f"{label}: rule is required")
                continue
            if self_type is None:
                errs.append(f"{label}: no CEL type can be derived for this node (it needs a type)")
                continue
            problems = rule_problems(self_type, rule)
            errs += [f"{label}: {detail.splitlines()[0]}" for _, detail in problems]
            if any(f == "rule" for f, _ in problems):
                continue
            errs += _rule_lint(node, rule, label, correlatable)
    return errs


def _rule_lint(node: Schema, rule: dict[str, Any], label: str, correlatable: bool) -> list[str]:
    errs = []
    if not rule.get("message") and not rule.get("messageExpression"):
        errs.append(f"{label}: message or messageExpression is required")
    if "reason" in rule and rule["reason"] not in CEL_REASONS:
        errs.append(f"{label}: reason must be one of {sorted(CEL_REASONS)}")
    if "fieldPath" in rule:
        fp = rule["fieldPath"]
        chain = [p for p in re.split(r"\.|\[", fp.replace("]", "")) if p]
        if not fp.startswith((".", "[")) or _resolve(node, [c.strip("'") for c in chain])[1] is not None:
            errs.append(f"{label}: fieldPath {fp!r} does not name a field of this node")
    if is_transition_rule(rule["rule"]) and not correlatable:
        errs.append(f"{label}: oldSelf cannot be used on the uncorrelatable portion of the schema")
    return errs


def unbounded_in_rules(schema: Schema) -> list[str]:
    """Lists, maps and strings reachable from a rule's references without a size bound."""
    errs: list[str] = []
    for path, node, _ in _walk(schema):
        for rule in node.get("x-kubernetes-validations") or []:
            expr = rule.get("rule", "")
            refs = _rule_refs(expr) or [("self", [])]
            if re.search(r"(?<![\w.])(self|oldSelf)(?![\w.])", expr):
                refs.append(("self", []))
            for _, chain in refs:
                target, _missing = _resolve(node, chain)
                if target is None:
                    continue
                for sub_path, sub, _c in _walk(target, path + "".join(f".{c}" for c in chain)):
                    t = sub.get("type")
                    if t == "array" and "maxItems" not in sub:
                        errs.append(f"{sub_path}: array touched by a CEL rule needs maxItems")
                    bounded = "maxLength" in sub or "enum" in sub or sub.get("format") in ("date-time", "date", "duration")
                    if t == "string" and not bounded:
                        errs.append(f"{sub_path}: string touched by a CEL rule needs maxLength")
                    if t == "object" and isinstance(sub.get("additionalProperties"), dict) and "maxProperties" not in sub:
                        errs.append(f"{sub_path}: map touched by a CEL rule needs maxProperties")
    return sorted(set(errs))
