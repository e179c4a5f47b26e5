"""check_structural / compile_rules / unbounded_in_rules: each structural-schema rule and each
CEL compile-time rule the API server enforces on CRD creation, one table row per rule."""

from __future__ import annotations

from typing import Any

import pytest
from llmops.kubeschema import check_structural, compile_rules, unbounded_in_rules


def obj(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, **extra}


GOOD = obj(
    {
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40}}},
        "spec": obj(
            {
                "n": {"type": "integer", "minimum": 1, "default": 1},
                "env": {"type": "array", "maxItems": 4, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                        "items": obj({"name": {"type": "string", "maxLength": 8}}, required=["name"])},
                "any": {"x-kubernetes-preserve-unknown-fields": True, "type": "object"},
                "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            },
            **{"x-kubernetes-validations": [{"rule": "self.n <= 4 && self.env.all(e, e.name != 'X')", "message": "m"}]},
        ),
    }
)

STRUCTURAL_ROWS = [
    ("good", GOOD, []),
    ("root not object", {"type": "string"}, ["<root>: type must be object"]),
    ("missing type", obj({"a": {"description": "x"}}), [".a: type must not be empty"]),
    ("$ref", obj({"a": {"$ref": "#/x", "type": "object"}}), [".a: $ref is not supported"]),
    ("nullable anyOf", obj({"a": {"type": "string", "anyOf": [{"type": "string"}, {"type": "null"}]}}),
     [".a(anyOf): type must not be set inside allOf/anyOf/oneOf/not", ".a(anyOf): type must not be set inside allOf/anyOf/oneOf/not"]),
    ("junctor adds a field", obj({"a": obj({}, allOf=[{"properties": {"b": {}}}])}),
     [".a: allOf names property 'b' that is not declared outside it"]),
    ("uniqueItems", obj({"a": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}),
     [".a: uniqueItems cannot be set to true"]),
    ("numeric exclusiveMinimum", obj({"a": {"type": "integer", "exclusiveMinimum": 0}}),
     [".a: exclusiveMinimum must be a boolean (OpenAPI v3.0)"]),
    ("props and additionalProperties", obj({"a": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}}}),
     [".a: additionalProperties and properties are mutually exclusive"]),
    ("preserve false", obj({"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": False}}),
     [".a: x-kubernetes-preserve-unknown-fields must be true or undefined"]),
    ("unknown keyword", obj({"a": {"type": "string", "const": "x"}}), [".a: unknown field 'const'"]),
    ("metadata beyond name", obj({"metadata": obj({"labels": {"type": "object"}})}),
     [".metadata: only name and generateName may be specified (found labels)"]),
    ("map key not required",
     obj({"l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                "items": obj({"k": {"type": "string"}})}}),
     [".l: map key 'k' must be required or have a default"]),
    ("invalid default", obj({"n": {"type": "integer", "minimum": 1, "default": 0}}),
     [".n: default is invalid: <nil>: Invalid value: 0: <nil> in body should be greater than or equal to 1"]),
    ("enum of wrong type", obj({"e": {"type": "string", "enum": ["a", 1]}}), [".e: enum value 1 is not of type string"]),
]


@pytest.mark.parametrize(("schema", "expected"), [r[1:] for r in STRUCTURAL_ROWS], ids=[r[0] for r in STRUCTURAL_ROWS])
def test_structural(schema: dict[str, Any], expected: list[str]) -> None:
    assert check_structural(schema) == expected


def rules(*rs: dict[str, Any], props: dict[str, Any] | None = None) -> dict[str, Any]:
    default = {"a": {"type": "integer"}, "l": {"type": "array", "maxItems": 2, "items": obj({"v": {"type": "string", "maxLength": 3}})}}
    return obj({"s": obj(props or default, **{"x-kubernetes-validations": list(rs)})})


COMPILE_ROWS = [
    ("ok", rules({"rule": "self.a > 0", "message": "m"}), []),
    ("syntax", rules({"rule": "self.a >", "message": "m"}), [".s: x-kubernetes-validations[0]: compilation failed"]),
    ("undefined field", rules({"rule": "self.b > 0", "message": "m"}),
     [".s: x-kubernetes-validations[0]: compilation failed: ERROR: <input>:1:5: undefined field 'b'"]),
    ("method call is not a field", rules({"rule": "self.l.all(x, x.v.size() < 3)", "message": "m"}), []),
    ("no message", rules({"rule": "self.a > 0"}), [".s: x-kubernetes-validations[0]: message or messageExpression is required"]),
    ("bad reason", rules({"rule": "self.a > 0", "message": "m", "reason": "Nope"}),
     [".s: x-kubernetes-validations[0]: reason must be one of"]),
    ("bad fieldPath", rules({"rule": "self.a > 0", "message": "m", "fieldPath": ".zz"}),
     [".s: x-kubernetes-validations[0]: fieldPath '.zz' does not name a field"]),
    ("bad messageExpression", rules({"rule": "self.a > 0", "messageExpression": "'x' +"}),
     [".s: x-kubernetes-validations[0]: messageExpression compilation failed"]),
]


@pytest.mark.parametrize(("schema", "expected_prefixes"), [r[1:] for r in COMPILE_ROWS], ids=[r[0] for r in COMPILE_ROWS])
def test_compile_rules(schema: dict[str, Any], expected_prefixes: list[str]) -> None:
    got = compile_rules(schema)
    assert len(got) == len(expected_prefixes), got
    for g, p in zip(got, expected_prefixes, strict=True):
        assert g.startswith(p), (g, p)


def test_oldself_on_uncorrelatable_items() -> None:
    schema = obj({"l": {"type": "array", "maxItems": 3,
                        "items": {"type": "string", "maxLength": 3,
                                  "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "m"}]}}})
    assert compile_rules(schema) == [
        ".l[*]: x-kubernetes-validations[0]: oldSelf cannot be used on the uncorrelatable portion of the schema"
    ]


def test_unbounded_in_rules() -> None:
    unbounded = rules({"rule": "self.l.all(x, x.v != '')", "message": "m"},
                      props={"l": {"type": "array", "items": obj({"v": {"type": "string"}})}})
    assert unbounded_in_rules(unbounded) == [".s.l: array touched by a CEL rule needs maxItems",
                                             ".s.l[*].v: string touched by a CEL rule needs maxLength"]
    assert unbounded_in_rules(GOOD) == []
