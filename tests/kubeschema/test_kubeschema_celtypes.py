"""celtypes: CEL types derived from a schema and rules type-checked against them. Every row's
expectation was taken from kube-apiserver v1.36 (the rule on a CRD, created with dryRun):
None where it accepted the rule, else the start of its error (position included)."""

from __future__ import annotations

from typing import Any

import pytest
from llmops.kubeschema import celtypes, crd_errors
from llmops.kubeschema.celtypes import BOOL, DOUBLE, DURATION, DYN, INT, STRING, TIMESTAMP, CelCheckError, list_of, map_of
from llmops.kubeschema.crd import rule_problems

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "i": {"type": "integer"},
        "n": {"type": "number"},
        "s": {"type": "string", "maxLength": 10},
        "b": {"type": "boolean"},
        "t": {"type": "string", "format": "date-time"},
        "d": {"type": "string", "format": "duration"},
        "ios": {"x-kubernetes-int-or-string": True},
        "pu": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "pun": {"x-kubernetes-preserve-unknown-fields": True},
        "pup": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {"type": "integer"}}},
        "o": {"type": "object", "properties": {"a": {"type": "integer"}, "my-key": {"type": "string"}, "namespace": {"type": "string"}}},
        "m": {"type": "object", "maxProperties": 5, "additionalProperties": {"type": "integer"}},
        "l": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 5}},
        "lo": {"type": "array", "maxItems": 5, "items": {"type": "object", "properties": {"k": {"type": "string"}}}},
        "emb": {"type": "object", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True},
    },
}

RULES = [
    # comprehension ranges
    ("self.m.all(k, self.m[k] > 0)", None),
    ("self.lo.exists(e, e.k == 'a')", None),
    ("self.l.exists_one(x, x == 'a')", None),
    ("self.lo.map(x, x.k).all(y, y == 'a')", None),
    ("self.l.filter(x, x == 'a').size() > 0", None),
    ("self.all(k, k in ['a'])", "1:1: expression of type 'selfType' cannot be range of a comprehension"),
    ("self.o.all(k, true)", "1:5: expression of type 'selfType.o' cannot be range"),
    ("self.s.all(c, true)", "1:5: expression of type 'string' cannot be range"),
    ("self.l.all(1, true)", "1:12: argument must be a simple name"),
    ("self.l.all(x, 1)", "1:15: expected type 'bool' but found 'int'"),
    ("self.l.filter(x, 1).size() > 0", "1:14: found no matching overload for '_?_:_' applied to '(int, list(string), list(string))'"),
    # fields
    ("self.pup.a == 1", None),
    ("self.o.my__dash__key == 'a' && self.o.__namespace__ == 'a' && self.o.namespace == 'a'", None),
    ("self.emb.kind == 'x' && self.emb.metadata.name == 'x'", None),
    ("{'a': 1}.a == 1", None),
    ("self.ios.x == 1", None),
    ("self.pu.foo == 1", "1:8: undefined field 'foo'"),
    ("self.pun == 1", "1:5: undefined field 'pun'"),
    ("self.pup.zz == 1", "1:9: undefined field 'zz'"),
    ("self.emb.foo == 1", "1:9: undefined field 'foo'"),
    ("self.apiVersion == 'x'", "1:5: undefined field 'apiVersion'"),
    ("self.lo[0].zz == 'a'", "1:11: undefined field 'zz'"),
    ("missing > 1", "1:1: undeclared reference to 'missing'"),
    # has()
    ("has(self.i) && has(self.o.a) && has(self.m.x)", None),
    ("has(self.o.a) && has(self.m.x) && has(self.zz)", "1:38: undefined field 'zz'"),
    ("has(self)", "1:5: invalid argument to has() macro"),
    ("has(self.s.x)", "1:4: type 'string' does not support field selection"),
    # operators
    ("self.i * 2 % 3 / 1 - 1 == 0", None),
    ("self.i < 1.5", None),
    ("self.t < timestamp('2020-01-01T00:00:00Z') && self.d > duration('1s')", None),
    ("self.t - self.t > duration('1s') && self.t + self.d > self.t", None),
    ("self.l + ['a'] == self.l && self.s + 'a' == 'b'", None),
    ("self.s in self.l && 'k' in self.m && self.o.a in [1, 2]", None),
    ("self.o == null && self.t == null && self.ios == null", None),
    ("self.ios + 1 == 2 && self.ios == 'a'", None),
    ("self.i + self.s == 1", "1:8: found no matching overload for '_+_' applied to '(int, string)'"),
    ("'a' + 1 == 'a1'", "1:5: found no matching overload for '_+_' applied to '(string, int)'"),
    ("self.i + self.n > 0.0", "1:8: found no matching overload for '_+_' applied to '(int, double)'"),
    ("self.m + self.m == self.m", "1:8: found no matching overload for '_+_' applied to '(map(string, int), map(string, int))'"),
    ("self.n % 2.0 == 0.0", "1:8: found no matching overload for '_%_' applied to '(double, double)'"),
    ("self.i == 1.5", "1:8: found no matching overload for '_==_' applied to '(int, double)'"),
    ("self.i == 1u", "1:8: found no matching overload for '_==_' applied to '(int, uint)'"),
    ("self.i == null", "1:8: found no matching overload for '_==_' applied to '(int, null)'"),
    ("self.t == 'x'", "1:8: found no matching overload for '_==_' applied to '(timestamp, string)'"),
    ("self.l.all(x, x > 1)", "1:17: found no matching overload for '_>_' applied to '(string, int)'"),
    ("!self.i", "1:1: found no matching overload for '!_' applied to '(int)'"),
    ("-self.s == 'a'", "1:1: found no matching overload for '-_' applied to '(string)'"),
    ("self.b || self.i", "1:15: expected type 'bool' but found 'int'"),
    ("self.i > 0 ? 1 : 'x'", "1:12: found no matching overload for '_?_:_' applied to '(bool, int, string)'"),
    ("'a' in self.o", "1:5: found no matching overload for '@in' applied to '(string, selfType.o)'"),
    ("self.o.a in ['a']", "1:10: found no matching overload for '@in' applied to '(int, list(string))'"),
    ("self.l[0] == 'a' && self.m['k'] == 1", None),
    ("self.o['a'] == 1", "1:7: found no matching overload for '_[_]' applied to '(selfType.o, string)'"),
    ("self.l[self.s] == 'a'", "1:7: found no matching overload for '_[_]' applied to '(list(string), string)'"),
    ("self.m[1] == 1", "1:7: found no matching overload for '_[_]' applied to '(map(string, int), int)'"),
    # literals
    ("[1, 'a'].size() == 2", "1:5: expected type 'int' but found 'string'"),
    ("[] == self.l && {} == self.m", None),
    # functions and methods
    ("size(self.l) == 1 && self.l.size() == 1 && size(self.m) == 1 && self.s.size() == 1", None),
    ("self.s.matches('a') && self.s.startsWith('a') && self.s.endsWith('b') && self.s.contains('c')", None),
    ("int(self.s) == 1 && string(self.i) == 'a' && double(self.i) == 1.0 && uint(self.i) == 1u && bool(self.s)", None),
    ("self.s.lowerAscii() == 'a' && self.s.split(',').size() == 1 && self.s.indexOf('a') == 1", None),
    ("url(self.s).getHost() == 'a' && quantity(self.s).isGreaterThan(quantity('1'))", None),
    ("isQuantity(self.s) && isURL(self.s) && isIP(self.s) && type(self.ios) == int", None),
    ("self.ios.matches('a') && dyn(self.s) == 1", None),
    ("size(self.o) == 1", "1:5: found no matching overload for 'size' applied to '(selfType.o)'"),
    ("self.i.size() == 1", "1:12: found no matching overload for 'size' applied to 'int.()'"),
    ("self.i.matches('a')", "1:15: found no matching overload for 'matches' applied to 'int.(string)'"),
    ("self.l.all(x, x.startsWith(1))", "1:27: found no matching overload for 'startsWith' applied to 'string.(int)'"),
    ("self.ios.endsWith(1)", "1:18: found no matching overload for 'endsWith' applied to 'dyn.(int)'"),
    ("self.l.isSorted() && self.l.sum() == 'a'", "1:32: found no matching overload for 'sum' applied to 'list(string).()'"),
    ("sets.contains(self.l, ['a']) && strings.quote(self.s) == 'a' && isSemver(self.s)", None),
    ("self.l.min() == 'a' && self.l.indexOf('a') == 0 && self.l.join(',') == 'a'", None),
    ("self.t.getFullYear() == 2020 && self.t.getHours('UTC') == 1 && self.d.getHours() == 1", None),
    ("self.d.getFullYear() == 1", "1:19: found no matching overload for 'getFullYear' applied to 'duration.()'"),
    # optional syntax (celpy cannot parse it; Kubernetes enables it)
    ("self.o.?a.hasValue() && self.m[?'k'].orValue(1) == 1", None),
    # transition rules see the same type
    ("oldSelf.i == self.i", None),
]


@pytest.mark.parametrize(("rule", "expected"), RULES, ids=[r[0] for r in RULES])
def test_rule_types(rule: str, expected: str | None) -> None:
    self_type = celtypes.decl_type(SCHEMA)
    assert self_type is not None
    if expected is None:
        assert celtypes.check(rule, {"self": self_type, "oldSelf": self_type}) == BOOL
        return
    with pytest.raises(CelCheckError) as e:
        celtypes.check(rule, {"self": self_type, "oldSelf": self_type})
    assert e.value.render(rule).startswith(f"ERROR: <input>:{expected}"), e.value.render(rule)


RESULTS = [
    ("self.i", "cel expression must evaluate to a bool"),
    ("self.ios", "cel expression must evaluate to a bool"),  # dyn is not bool
    ("self.i > 0", None),
    ("foo(self.i)", None),  # unknown functions are typed permissively, never refused here
]


@pytest.mark.parametrize(("rule", "expected"), RESULTS, ids=[r[0] for r in RESULTS])
def test_a_rule_must_be_bool(rule: str, expected: str | None) -> None:
    self_type = celtypes.decl_type(SCHEMA)
    assert self_type is not None
    assert rule_problems(self_type, {"rule": rule}) == ([("rule", expected)] if expected else [])


@pytest.mark.parametrize(("message_expression", "ok"), [("'x' + self.s", True), ("self.i", False), ("self.zz", False)])
def test_message_expression_must_be_string(message_expression: str, ok: bool) -> None:
    self_type = celtypes.decl_type(SCHEMA)
    assert self_type is not None
    problems = rule_problems(self_type, {"rule": "true", "messageExpression": message_expression})
    assert (problems == []) is ok
    assert all(field == "messageExpression" for field, _ in problems)


DECL = [
    ({"type": "integer"}, INT),
    ({"type": "number"}, DOUBLE),
    ({"type": "string", "format": "date-time"}, TIMESTAMP),
    ({"type": "string", "format": "duration"}, DURATION),
    ({"type": "string", "format": "email"}, STRING),
    ({"x-kubernetes-int-or-string": True}, DYN),
    ({"type": "array", "items": {"type": "boolean"}}, list_of(BOOL)),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, map_of(STRING, INT)),
    ({"x-kubernetes-preserve-unknown-fields": True}, None),
    ({"type": "array", "items": {"x-kubernetes-preserve-unknown-fields": True}}, None),
]


@pytest.mark.parametrize(("schema", "expected"), DECL, ids=[str(d[0]) for d in DECL])
def test_decl_type(schema: dict[str, Any], expected: celtypes.CelType | None) -> None:
    assert celtypes.decl_type(schema) == expected


def test_object_fields_follow_the_schema() -> None:
    t = celtypes.decl_type({"type": "object",
                            "properties": {"a-b": {"type": "integer"}, "if": {"type": "string"},
                                           "x": {"x-kubernetes-preserve-unknown-fields": True}}})
    assert t is not None and t.kind == "object"
    assert dict(t.fields) == {"a__dash__b": INT, "__if__": STRING}
    root = celtypes.decl_type({"type": "object"}, resource_root=True)
    assert root is not None and sorted(root.fields) == ["apiVersion", "kind", "metadata"]


def _crd(*schemas: dict[str, Any]) -> dict[str, Any]:
    versions = [{"name": f"v{i + 1}", "served": True, "storage": i == 0,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": s}}}} for i, s in enumerate(schemas)]
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "xs.t.dev"},
            "spec": {"group": "t.dev", "scope": "Namespaced", "names": {"plural": "xs", "kind": "X"}, "versions": versions}}


BAD = {"type": "object", "properties": {"a": {"type": "integer"}}, "x-kubernetes-validations": [{"rule": "self.a"}]}
GOOD = {"type": "object", "properties": {"a": {"type": "integer"}}}
SPEC = "openAPIV3Schema.properties[spec]"
KEYED = {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
         "x-kubernetes-validations": [{"rule": "self.x"}],
         "items": {"type": "object", "properties": {"k": {"type": "string"}},
                   "x-kubernetes-validations": [{"rule": "self.zz == 1"}]}}
CRDS = [
    ("one schema for all versions", _crd(BAD, BAD), [(f"spec.validation.{SPEC}.x-kubernetes-validations[0].rule", "FieldValueInvalid")]),
    ("per-version schemas", _crd(GOOD, BAD), [(f"spec.versions[1].schema.{SPEC}.x-kubernetes-validations[0].rule", "FieldValueInvalid")]),
    ("no type for rules", _crd({"x-kubernetes-preserve-unknown-fields": True, "x-kubernetes-validations": [{"rule": "true"}]}),
     [(f"spec.validation.{SPEC}.x-kubernetes-validations", "InternalError")]),
    ("list-map key without default: rules on the list and above skipped, below kept",
     _crd({"type": "object", "properties": {"l": KEYED}, "x-kubernetes-validations": [{"rule": "self.y"}]}),
     [(f"spec.validation.{SPEC}.properties[l].items.properties[k].default", "FieldValueRequired"),
      (f"spec.validation.{SPEC}.properties[l].items.x-kubernetes-validations[0].rule", "FieldValueInvalid")]),
    ("oldSelf below a plain list", _crd({"type": "object", "properties": {"l": {"type": "array", "items": {
        "type": "integer", "x-kubernetes-validations": [{"rule": "self == oldSelf"}]}}}}),
     [(f"spec.validation.{SPEC}.properties[l].items.x-kubernetes-validations[0].rule", "FieldValueInvalid")]),
    ("messageExpression not a string", _crd({**GOOD, "x-kubernetes-validations": [{"rule": "true", "messageExpression": "self.a"}]}),
     [(f"spec.validation.{SPEC}.x-kubernetes-validations[0].messageExpression", "FieldValueInvalid")]),
    ("accepted", _crd({**GOOD, "x-kubernetes-validations": [{"rule": "self.a > 0", "messageExpression": "string(self.a)"}]}), []),
]


@pytest.mark.parametrize(("crd", "expected"), [c[1:] for c in CRDS], ids=[c[0] for c in CRDS])
def test_crd_errors_name_the_real_field_paths(crd: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert [(e.field, e.reason) for e in crd_errors(crd)] == expected


def test_the_invalid_value_is_the_rule_as_go_prints_it() -> None:
    (err,) = crd_errors(_crd({**GOOD, "x-kubernetes-validations": [{"rule": "self.a > 1 && self.a"}]}))
    assert err.body.startswith('Invalid value: {"Rule":"self.a \\u003e 1 \\u0026\\u0026 self.a","Message":"",'
                               '"MessageExpression":"","Reason":null,"FieldPath":"","OptionalOldSelf":null}: '
                               "compilation failed: ERROR: <input>:1:19: expected type 'bool' but found 'int'")


def test_every_error_is_reported_in_order_and_a_failed_expression_types_as_error() -> None:
    self_type = celtypes.decl_type(SCHEMA)
    assert self_type is not None
    with pytest.raises(CelCheckError) as e:
        celtypes.check("self.l - self.zz > self.l", {"self": self_type})
    assert [(p.column, p.message) for p in e.value.problems] == [
        (8, "found no matching overload for '_-_' applied to '(list(string), !error!)'"),
        (14, "undefined field 'zz'"),
        (18, "found no matching overload for '_>_' applied to '(!error!, list(string))'"),
    ]


@pytest.mark.parametrize(
    ("literal", "bad_at"),
    [(r"'a\.b'", "'a\\."), (r"'\q'", "'\\q"), (r"'''x\.'''", "'''x\\."), (r"'a\\.b'", None), (r"r'a\.b'", None),
     (r"R'\d'", None), (r"'\n\t\x41\u0041\U00000041\101\?\`'", None)],
)
def test_string_literals_take_only_cel_escapes(literal: str, bad_at: str | None) -> None:
    rule = f"'x'.matches({literal})"
    if bad_at is None:
        assert celtypes.check(rule, {}) == BOOL
        return
    with pytest.raises(CelCheckError) as refused:
        celtypes.check(rule, {})
    problem = refused.value.problems[0]
    assert (problem.line, problem.column) == (1, 13)
    assert problem.message == f"Syntax error: token recognition error at: '{bad_at}'"
