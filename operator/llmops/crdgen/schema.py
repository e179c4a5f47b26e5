"""pydantic JSON Schema -> Kubernetes structural openAPIV3Schema.

pydantic emits JSON Schema 2020-12: shared definitions behind ``$ref``, ``Optional[X]`` as
``anyOf: [X, {type: null}]``, numeric ``exclusiveMinimum``, ``const`` for literals,
``additionalProperties: false`` for closed models and ``propertyNames`` for constrained map
keys. A CRD must be *structural* (OpenAPI v3.0 subset, every node typed, no references, no
nullable unions), so the conversion:

1. inlines every ``$ref`` (our models are not recursive), merging the referencing site's
   description over the definition's docstring and concatenating CEL rules;
2. collapses ``anyOf [X, null]`` to X: "absent" is how Kubernetes spells None, and the
   ``default: null`` that came with it is dropped;
3. rewrites numeric exclusive bounds to ``minimum`` + ``exclusiveMinimum: true`` and ``const``
   to a one-value ``enum``;
4. drops what the API server does not take or would misuse: ``title``, ``propertyNames``,
   ``additionalProperties: false`` (unknown fields are pruned, and reported by
   ``llmops validate``), non-scalar defaults (the server would materialise whole sections of
   spec, which Argo CD then shows as drift);
5. bounds enum strings with ``maxLength`` (CEL cost estimation needs it).

The function is pure and the output order follows the model's field order, so regenerated
CRDs are byte-identical.
"""

from __future__ import annotations

import copy
from typing import Any

Schema = dict[str, Any]

DROP_KEYS = ("title", "propertyNames", "examples", "$defs", "discriminator")


class SchemaConversionError(ValueError):
    """The pydantic schema uses a construct the CRD cannot express."""


def to_structural(json_schema: Schema, keep_defaults: bool = True) -> Schema:
    """Convert a pydantic ``model_json_schema(by_alias=True)`` result to a structural schema."""
    defs = json_schema.get("$defs", {})
    return _convert(json_schema, defs, keep_defaults, path="")


def _resolve_ref(ref: str, defs: dict[str, Schema]) -> Schema:
    prefix = "#/$defs/"
    if not ref.startswith(prefix) or ref[len(prefix) :] not in defs:
        raise SchemaConversionError(f"unresolvable $ref {ref}")
    return defs[ref[len(prefix) :]]


def _merge(base: Schema, site: Schema) -> Schema:
    """The referenced definition with the referencing site's keys on top."""
    out = copy.deepcopy(base)
    for key, value in site.items():
        if key == "$ref":
            continue
        if key == "x-kubernetes-validations" and key in out:
            out[key] = [*out[key], *value]
        else:
            out[key] = copy.deepcopy(value)
    return out


def _convert(node: Schema, defs: dict[str, Schema], keep_defaults: bool, path: str) -> Schema:
    node = dict(node)
    if "$ref" in node:
        node = _merge(_resolve_ref(node["$ref"], defs), node)
    if "allOf" in node and len(node["allOf"]) == 1 and "$ref" in node["allOf"][0]:
        site = {k: v for k, v in node.items() if k != "allOf"}
        node = _merge(_resolve_ref(node["allOf"][0]["$ref"], defs), site)
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise SchemaConversionError(f"{path or '<root>'}: unions other than Optional[X] cannot be structural")
        site = {k: v for k, v in node.items() if k != "anyOf"}
        if site.get("default", 0) is None:
            site.pop("default")
        node = _merge(_resolve_ref(branches[0]["$ref"], defs) if "$ref" in branches[0] else branches[0], site)
        if "$ref" in node or "anyOf" in node or "allOf" in node:
            return _convert(node, defs, keep_defaults, path)

    out: Schema = {}
    for key, value in node.items():
        if key in DROP_KEYS:
            continue
        if key == "properties":
            out["properties"] = {name: _convert(sub, defs, keep_defaults, f"{path}.{name}") for name, sub in value.items()}
        elif key == "items":
            if not isinstance(value, dict):
                raise SchemaConversionError(f"{path}: tuple items cannot be structural")
            out["items"] = _convert(value, defs, keep_defaults, f"{path}[*]")
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = _convert(value, defs, keep_defaults, f"{path}[*]")
            # True (any value) is expressed by x-kubernetes-preserve-unknown-fields; False by pruning.
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "anyOf":
            out["anyOf"] = copy.deepcopy(value)  # only int-or-string reaches here: [integer, string]
        elif key == "const":
            out["enum"] = [value]
        elif key == "default":
            if keep_defaults and value is not None and not isinstance(value, (dict, list)):
                out["default"] = value
        else:
            out[key] = copy.deepcopy(value)

    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("type") == "string" and "enum" in out and "maxLength" not in out:
        out["maxLength"] = max(len(str(v)) for v in out["enum"])
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
    if out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("type", "object")
    declared = "properties" in out or "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if out.get("type") == "object" and not declared:
        out["x-kubernetes-preserve-unknown-fields"] = True  # an open object with nothing declared
    if "required" in out and not out["required"]:
        del out["required"]
    return out


def strip_defaults(schema: Schema) -> Schema:
    """The schema without any default (used for status: defaults there would be written by
    the API server on every read)."""
    out = {k: v for k, v in schema.items() if k != "default"}
    if "properties" in out:
        out["properties"] = {k: strip_defaults(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = strip_defaults(out["items"])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = strip_defaults(out["additionalProperties"])
    return out
