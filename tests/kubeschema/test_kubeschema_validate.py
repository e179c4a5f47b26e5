"""kubeschema.validate / prune / apply_defaults / unknown_fields: one table row per schema rule
(types, formats, bounds, patterns, enums, required, list types, maps, CEL with self/oldSelf,
messageExpression, fieldPath, reason), each asserting the exact kube-apiserver wording."""

from __future__ import annotations

from typing import Any

import pytest
from llmops.kubeschema import apply_defaults, invalid_message, prune, unknown_fields, validate

OBJ = "object"


def obj(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, **extra}


SCHEMA_ROWS: list[tuple[str, dict[str, Any], Any, list[str]]] = [
    ("int ok", obj({"n": {"type": "integer", "minimum": 1}}), {"n": 1}, []),
    ("int integral float ok", obj({"n": {"type": "integer"}}), {"n": 2.0}, []),
    ("minimum", obj({"n": {"type": "integer", "minimum": 1}}), {"n": 0},
     ["n: Invalid value: 0: n in body should be greater than or equal to 1"]),
    ("maximum", obj({"n": {"type": "integer", "maximum": 8}}), {"n": 9},
     ["n: Invalid value: 9: n in body should be less than or equal to 8"]),
    ("exclusiveMinimum", obj({"x": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}), {"x": 0},
     ["x: Invalid value: 0: x in body should be greater than 0"]),
    ("multipleOf", obj({"n": {"type": "integer", "multipleOf": 2}}), {"n": 3},
     ["n: Invalid value: 3: n in body should be a multiple of 2"]),
    ("fraction for integer", obj({"n": {"type": "integer"}}), {"n": 0.5},
     ['n: Invalid value: "number": n in body must be of type integer: "number"']),
    ("string for integer", obj({"n": {"type": "integer"}}), {"n": "2"},
     ['n: Invalid value: "string": n in body must be of type integer: "string"']),
    ("bool is not integer", obj({"n": {"type": "integer"}}), {"n": True},
     ['n: Invalid value: "boolean": n in body must be of type integer: "boolean"']),
    ("int32 format", obj({"n": {"type": "integer", "format": "int32"}}), {"n": 2**31},
     [f"n: Invalid value: {2**31}: n in body must be of type int32"]),
    ("date-time format", obj({"t": {"type": "string", "format": "date-time"}}), {"t": "yesterday"},
     ['t: Invalid value: "yesterday": t in body must be of type date-time: "yesterday"']),
    ("maxLength", obj({"s": {"type": "string", "maxLength": 3}}), {"s": "abcd"}, ["s: Too long: may not be longer than 3"]),
    ("minLength", obj({"s": {"type": "string", "minLength": 1}}), {"s": ""},
     ['s: Invalid value: "": s in body should be at least 1 chars long']),
    ("pattern", obj({"s": {"type": "string", "pattern": "^[a-z]+$"}}), {"s": "A"},
     ["s: Invalid value: \"A\": s in body should match '^[a-z]+$'"]),
    ("enum", obj({"b": {"type": "string", "enum": ["auto", "none"]}}), {"b": "x"},
     ['b: Unsupported value: "x": supported values: "auto", "none"']),
    ("required", obj({"spec": obj({"image": {"type": "string"}}, required=["image"])}), {"spec": {}}, ["spec.image: Required value"]),
    ("minItems", obj({"l": {"type": "array", "items": {"type": "string"}, "minItems": 1}}), {"l": []},
     ["l: Invalid value: 0: l in body should have at least 1 items"]),
    ("maxItems", obj({"l": {"type": "array", "items": {"type": "string"}, "maxItems": 1}}), {"l": ["a", "b"]},
     ["l: Too many: 2: must have at most 1 items"]),
    ("item path", obj({"l": {"type": "array", "items": {"type": "integer", "minimum": 0}}}), {"l": [1, -1]},
     ["l[1]: Invalid value: -1: l[1] in body should be greater than or equal to 0"]),
    ("list-type set", obj({"l": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}}), {"l": ["a", "a"]},
     ['l[1]: Duplicate value: "a"']),
    (
        "list-type map",
        obj({"env": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                     "items": obj({"name": {"type": "string"}, "value": {"type": "string"}}, required=["name"])}}),
        {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        ['env[1]: Duplicate value: map[string]interface {}{"name":"A"}'],
    ),
    ("map values", obj({"m": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 2}}}), {"m": {"k": "abc"}},
     ["m[k]: Too long: may not be longer than 2"]),
    ("maxProperties", obj({"m": {"type": "object", "additionalProperties": {"type": "string"}, "maxProperties": 1}}),
     {"m": {"a": "1", "b": "2"}}, ["m: Too many: 2: must have at most 1 items"]),
    ("null non-nullable", obj({"s": {"type": "string"}}), {"s": None},
     ['s: Invalid value: "null": s in body must be of type string: "null"']),
    ("null nullable", obj({"s": {"type": "string", "nullable": True}}), {"s": None}, []),
    ("int-or-string", obj({"p": {"x-kubernetes-int-or-string": True}}), {"p": [1]},
     ['p: Invalid value: "array": p in body must be of type integer,string: "array"']),
    ("preserve unknown accepts anything", obj({"a": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}),
     {"a": {"x": [1, {"y": 2}]}}, []),
]


@pytest.mark.parametrize(("schema", "value", "expected"), [r[1:] for r in SCHEMA_ROWS], ids=[r[0] for r in SCHEMA_ROWS])
def test_schema_rules(schema: dict[str, Any], value: Any, expected: list[str]) -> None:
    assert [str(e) for e in validate(schema, value)] == expected


RANGE = obj(
    {"min": {"type": "integer"}, "max": {"type": "integer"}},
    **{"x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must be <= max"}]},
)

SKIPPED = ('<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; '
           'correct the existing errors to complete validation')
CEL_ROWS: list[tuple[str, dict[str, Any], Any, Any, list[str]]] = [
    ("rule passes", obj({"r": RANGE}), {"r": {"min": 1, "max": 2}}, None, []),
    ("rule fails", obj({"r": RANGE}), {"r": {"min": 3, "max": 2}}, None, ['r: Invalid value: "object": min must be <= max']),
    ("rule skipped on schema error", obj({"r": RANGE}), {"r": {"min": "x", "max": 2}}, None,
     ['r.min: Invalid value: "string": r.min in body must be of type integer: "string"', SKIPPED]),
    (
        "missing key is an evaluation error",
        obj({"r": RANGE}),
        {"r": {"min": 1}},
        None,
        ["r: Invalid value: \"object\": no such member in mapping: 'max' evaluating rule: self.min <= self.max"],
    ),
    (
        "fieldPath and reason",
        obj({"s": obj({"a": {"type": "integer"}},
                      **{"x-kubernetes-validations": [{"rule": "self.a > 0", "message": "must be positive", "fieldPath": ".a",
                                                       "reason": "FieldValueForbidden"}]})}),
        {"s": {"a": 0}},
        None,
        ["s.a: Forbidden: must be positive"],
    ),
    (
        "messageExpression",
        obj({"s": obj({"a": {"type": "integer"}},
                      **{"x-kubernetes-validations": [{"rule": "self.a < 3", "messageExpression": "'a is ' + string(self.a)"}]})}),
        {"s": {"a": 5}},
        None,
        ['s: Invalid value: "object": a is 5'],
    ),
    (
        "string rule on item",
        obj({"env": {"type": "array",
                     "items": {"type": "string",
                               "x-kubernetes-validations": [{"rule": "!self.startsWith('LLMOPS_')", "message": "is reserved"}]}}}),
        {"env": ["OK", "LLMOPS_X"]},
        None,
        ['env[1]: Invalid value: "string": is reserved'],
    ),
    (
        "root rule path is <nil>",
        obj({"a": {"type": "integer"}}, **{"x-kubernetes-validations": [{"rule": "self.a == 1", "message": "a must be 1"}]}),
        {"a": 2},
        None,
        ['<nil>: Invalid value: "object": a must be 1'],
    ),
]

IMMUTABLE = obj({"spec": obj({"x": {"type": "string",
                                    "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "x is immutable"}]}})})


@pytest.mark.parametrize(("schema", "value", "old", "expected"), [r[1:] for r in CEL_ROWS], ids=[r[0] for r in CEL_ROWS])
def test_cel_rules(schema: dict[str, Any], value: Any, old: Any, expected: list[str]) -> None:
    assert [str(e) for e in validate(schema, value, old)] == expected


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (None, {"spec": {"x": "a"}}, []),  # create: transition rules do not run
        ({"spec": {"x": "a"}}, {"spec": {"x": "a"}}, []),
        ({"spec": {"x": "a"}}, {"spec": {"x": "b"}}, ['spec.x: Invalid value: "string": x is immutable']),
        ({"spec": {}}, {"spec": {"x": "b"}}, []),  # no old value to correlate: rule skipped
    ],
)
def test_transition_rules(old: Any, new: Any, expected: list[str]) -> None:
    assert [str(e) for e in validate(IMMUTABLE, new, old)] == expected


def test_transition_rule_on_keyed_list_items_correlates_by_key() -> None:
    item = obj({"name": {"type": "string"},
                "v": {"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "v is immutable"}]}},
               required=["name"])
    schema = obj({"l": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": item}})
    old = {"l": [{"name": "a", "v": "1"}, {"name": "b", "v": "2"}]}
    new = {"l": [{"name": "b", "v": "2"}, {"name": "a", "v": "9"}, {"name": "c", "v": "3"}]}
    assert [str(e) for e in validate(schema, new, old)] == ['l[1].v: Invalid value: "string": v is immutable']


PRUNE_SCHEMA = obj(
    {
        "spec": obj({"a": {"type": "integer"}, "m": {"type": "object", "additionalProperties": {"type": "string"}},
                     "any": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                     "l": {"type": "array", "items": obj({"k": {"type": "string"}})}}),
    }
)


def test_prune_drops_unknown_and_keeps_root_meta() -> None:
    body = {"apiVersion": "v", "kind": "K", "metadata": {"name": "x"},
            "spec": {"a": 1, "zz": 2, "m": {"k": "v"}, "any": {"q": 1}, "l": [{"k": "1", "junk": 2}], "s": None}, "top": 1}
    out = prune(PRUNE_SCHEMA, body)
    assert out == {"apiVersion": "v", "kind": "K", "metadata": {"name": "x"},
                   "spec": {"a": 1, "m": {"k": "v"}, "any": {"q": 1}, "l": [{"k": "1"}]}}
    assert body["spec"]["zz"] == 2  # input untouched
    assert [str(e) for e in unknown_fields(PRUNE_SCHEMA, body)] == ['unknown field "spec.zz"', 'unknown field "spec.l[0].junk"',
                                                                    'unknown field "spec.s"', 'unknown field "top"']


def test_prune_leaves_root_metadata_alone() -> None:
    schema = obj({"metadata": obj({"name": {"type": "string", "maxLength": 5}}), "spec": obj({})})
    body = {"metadata": {"name": "x", "labels": {"a": "b"}, "uid": "u"}, "spec": {}}
    assert prune(schema, body) == body
    assert unknown_fields(schema, body) == []


def test_apply_defaults_fills_absent_only() -> None:
    schema = obj({"spec": obj({"a": {"type": "integer", "default": 3}, "b": {"type": "string", "default": "x"},
                               "o": obj({"c": {"type": "integer", "default": 1}})})})
    assert apply_defaults(schema, {"spec": {"b": "y", "o": {}}}) == {"spec": {"a": 3, "b": "y", "o": {"c": 1}}}
    assert apply_defaults(schema, {}) == {}


def test_invalid_message_shapes() -> None:
    errs = validate(obj({"n": {"type": "integer", "minimum": 1}, "s": {"type": "string"}}, required=["s"]), {"n": 0})
    assert invalid_message("TrainingJob.llmops.dev", "x", errs[:1]) == 'TrainingJob.llmops.dev "x" is invalid: s: Required value'
    assert invalid_message("TrainingJob.llmops.dev", "x", errs) == (
        'TrainingJob.llmops.dev "x" is invalid: [s: Required value, n: Invalid value: 0: n in body should be greater than or equal to 1]'
    )


JUNCTOR_ROWS = [
    ("anyOf passes", obj({"s": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]}}), {"s": "bx"}, []),
    ("anyOf fails", obj({"s": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]}}), {"s": "c"},
     ['s: Invalid value: "c": s in body must validate at least one schema (anyOf)']),
    ("oneOf both", obj({"n": {"type": "integer", "oneOf": [{"minimum": 1}, {"minimum": 2}]}}), {"n": 3},
     ["n: Invalid value: 3: n in body must validate one and only one schema (oneOf)"]),
    ("not", obj({"n": {"type": "integer", "not": {"minimum": 5}}}), {"n": 7},
     ["n: Invalid value: 7: n in body should not validate the schema (not)"]),
    ("allOf", obj({"n": {"type": "integer", "allOf": [{"maximum": 3}]}}), {"n": 4},
     ["n: Invalid value: 4: n in body should be less than or equal to 3"]),
]


@pytest.mark.parametrize(("schema", "value", "expected"), [r[1:] for r in JUNCTOR_ROWS], ids=[r[0] for r in JUNCTOR_ROWS])
def test_junctors(schema: dict[str, Any], value: Any, expected: list[str]) -> None:
    assert [str(e) for e in validate(schema, value)] == expected


def test_admit_prunes_defaults_then_validates() -> None:
    from llmops.kubeschema import admit

    schema = obj({"spec": obj({"min": {"type": "integer", "default": 1}, "max": {"type": "integer", "default": 4}},
                              **{"x-kubernetes-validations": [{"rule": "self.min <= self.max", "message": "min must be <= max"}]})})
    stored, errs = admit(schema, {"spec": {"max": 2, "junk": 1}})
    assert stored == {"spec": {"max": 2, "min": 1}} and errs == []
    _, errs = admit(schema, {"spec": {"min": 9}})
    assert [str(e) for e in errs] == ['spec: Invalid value: "object": min must be <= max']
