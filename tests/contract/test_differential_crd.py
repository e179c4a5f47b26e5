"""Differential test of CRD admission: many generated CustomResourceDefinitions go to the real
kube-apiserver and to the emulated one (``?dryRun=All``, so nothing persists); both must agree
on accept/refuse, status code, reason and every cause (field path, reason and message).

The generator is seeded and builds schemas from objects, maps, lists (plain and keyed),
scalars (incl. timestamp/duration strings), int-or-string and preserve-unknown-fields nodes,
then CEL rules from a small grammar over those fields. About half the rules are ill-typed on
purpose: comprehensions over objects and scalars, operands of the wrong type, undefined
fields, non-bool results, has() on non-fields, non-string messageExpressions, oldSelf where
no old value can be correlated, and list-map keys without default or required. Every size is
bounded (maxLength/maxItems/maxProperties) so the real server's cost estimator, which the
emulator does not model, never decides a case.
"""

from __future__ import annotations

import json
import pathlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SEED = 13
CASES = 160

# name -> (schema, CEL type tag); the tag drives which expressions are well-typed.
SCALARS: dict[str, tuple[dict[str, Any], str]] = {
    "count": ({"type": "integer"}, "int"),
    "ratio": ({"type": "number"}, "double"),
    "label": ({"type": "string", "maxLength": 12}, "string"),
    "enabled": ({"type": "boolean"}, "bool"),
    "since": ({"type": "string", "format": "date-time", "maxLength": 40}, "timestamp"),
    "every": ({"type": "string", "format": "duration", "maxLength": 20}, "duration"),
    "port": ({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}, "dyn"),
    # No type at all: no CEL type either, so not a field to rules (and no rule may sit on it).
    "free": ({"x-kubernetes-preserve-unknown-fields": True}, "untyped"),
}
LITERALS = {"int": "3", "double": "1.5", "string": "'a'", "bool": "true", "timestamp": "timestamp('2024-01-01T00:00:00Z')",
            "duration": "duration('5s')", "uint": "2u", "null": "null"}


def composites(rng: random.Random) -> dict[str, tuple[dict[str, Any], str]]:
    """Objects, maps and lists, some of each flavour per case."""
    keyed_item = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 8}, "weight": {"type": "integer"}}}
    key_rule = rng.choices(["required", "default", "none"], weights=[5, 3, 1])[0]
    if key_rule == "required":
        keyed_item["required"] = ["name"]
    elif key_rule == "default":
        keyed_item["properties"]["name"]["default"] = "x"
    return {
        "limits": ({"type": "object", "properties": {"cpu": {"type": "integer"}, "memory": {"type": "string", "maxLength": 8}}}, "obj"),
        "extra": ({"type": "object", "x-kubernetes-preserve-unknown-fields": True}, "opaqueobj"),
        "labels": ({"type": "object", "maxProperties": 4, "additionalProperties": {"type": "string", "maxLength": 8}}, "map_string"),
        "sizes": ({"type": "object", "maxProperties": 4, "additionalProperties": {"type": "integer"}}, "map_int"),
        "tags": ({"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 8}}, "list_string"),
        "ports": ({"type": "array", "maxItems": 4, "items": {"type": "integer"}}, "list_int"),
        "entries": ({"type": "array", "maxItems": 4, "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                     "items": keyed_item}, "list_obj"),
    }


@dataclass
class Fields:
    """The fields of one generated spec with their type tags."""

    tags: dict[str, str]

    def of(self, rng: random.Random, *kinds: str) -> str:
        names = [n for n, t in self.tags.items() if not kinds or t in kinds or any(t.startswith(k) for k in kinds)]
        return rng.choice(names or sorted(self.tags))


def _lit(rng: random.Random, tag: str | None = None) -> str:
    return LITERALS[tag] if tag in LITERALS else LITERALS[rng.choice(sorted(LITERALS))]


def _elem(tag: str) -> str:
    return {"list_string": "string", "list_int": "int", "map_string": "string", "map_int": "string"}.get(tag, "dyn")


# One rule template per function: (rng, fields) -> CEL text. Mixing well- and ill-typed forms.
def compare(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, "int", "double", "string", "timestamp", "duration", "bool", "dyn")
    tag = f.tags[name] if rng.random() < 0.6 else rng.choice(sorted(LITERALS))
    return f"self.{name} {rng.choice(['==', '!=', '<', '>=', '<='])} {_lit(rng, tag)}"


def arithmetic(rng: random.Random, f: Fields) -> str:
    a, b = f.of(rng, "int", "double", "string", "timestamp", "duration", "dyn"), f.of(rng, "int", "double", "string", "duration", "dyn")
    return f"self.{a} {rng.choice(['+', '-', '*', '%'])} self.{b} {rng.choice(['==', '>'])} self.{a}"


def comprehension(rng: random.Random, f: Fields) -> str:
    # Not over int-or-string: its dyn type has no size bound, so the real server's cost
    # estimator (not emulated) refuses any comprehension over it.
    name = f.of(rng, *(t for t in set(f.tags.values()) if t != "dyn")) if rng.random() < 0.4 else f.of(rng, "list", "map")
    body = rng.choice(["x == 'a'", "x > 0", "x.name != ''", "true", "size(x) < 3", "1"])
    macro = rng.choice(["all", "exists", "exists_one"])
    return f"self.{name}.{macro}(x, {body})"


def projection(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, "list", "map")
    macro, body = rng.choice([("map", "x"), ("filter", "x == 'a'"), ("filter", "x")])
    return f"self.{name}.{macro}(x, {body}).size() {rng.choice(['> 0', '== 1u'])}"


def member(rng: random.Random, f: Fields) -> str:
    name = f.of(rng) if rng.random() < 0.5 else f.of(rng, "obj", "opaqueobj", "map")
    field = rng.choice(["cpu", "memory", "nope", "a"])
    return f"self.{name}.{field} == {_lit(rng, rng.choice(['int', 'string']))}"


def undefined(rng: random.Random, f: Fields) -> str:
    return rng.choice(["self.missing == 1", "has(self.missing)", "self.limits.gpu > 0", "missing > 1", "has(self)"])


def presence(rng: random.Random, f: Fields) -> str:
    name = f.of(rng)
    return rng.choice([f"has(self.{name})", f"!has(self.{name}) || self.{name} == self.{name}", f"has(self.{name}.cpu)"])


def negation(rng: random.Random, f: Fields) -> str:
    return f"!self.{f.of(rng)}"


def sizes(rng: random.Random, f: Fields) -> str:
    name = f.of(rng)
    return rng.choice([f"size(self.{name}) <= 4", f"self.{name}.size() > 0"])


def methods(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, "string", "dyn", "int", "list_string")
    method, arg = rng.choice(["startsWith", "endsWith", "contains", "matches"]), rng.choice(["'a'", "1"])
    return f"self.{name}.{method}({arg})"


def membership(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, "list", "map", "obj")
    return f"{_lit(rng, rng.choice(['string', 'int']))} in self.{name}"


def indexing(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, "list", "map", "obj", "string")
    index = rng.choice(["0", "'k'"])
    return f"self.{name}[{index}] == {_lit(rng, rng.choice(['string', 'int']))}"


def ternary(rng: random.Random, f: Fields) -> str:
    a, b = f.of(rng, "int", "string"), f.of(rng, "int", "string")
    return f"(self.enabled ? self.{a} : self.{b}) == self.{a}"


def not_bool(rng: random.Random, f: Fields) -> str:
    return rng.choice([f"self.{f.of(rng)}", "1 + 2", "'yes'", f"self.{f.of(rng, 'list')}.map(x, true)", "[true][0]"])


def conversions(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, "int", "string", "double", "obj", "list")
    value = rng.choice(["0", "'0'", "0.0"])
    return f"{rng.choice(['int', 'string', 'double'])}(self.{name}) == {value}"


def logical(rng: random.Random, f: Fields) -> str:
    return f"{compare(rng, f)} {rng.choice(['&&', '||'])} {rng.choice([compare(rng, f), f'self.{f.of(rng)}'])}"


def literals(rng: random.Random, f: Fields) -> str:
    return rng.choice(["[1, 2].size() == 2", "[1, 'a'].size() == 2", "{'a': 1}.a == 1", "{'a': 1, 'b': 'c'}.a == 1"])


WELL_TYPED = {
    "int": ["self.{f} >= 0", "self.{f} % 2 == 0 || self.{f} < 10"],
    "double": ["self.{f} < 2.0", "self.{f} > 1"],
    "string": ["self.{f}.startsWith('a')", "size(self.{f}) < 5 && self.{f} != 'x'"],
    "bool": ["self.{f} || true", "!self.{f} || self.{f}"],
    "timestamp": ["self.{f} > timestamp('2020-01-01T00:00:00Z')", "self.{f} + duration('1h') > self.{f}"],
    "duration": ["self.{f} < duration('1h')"],
    "dyn": ["self.{f} == 1 || self.{f} == 'a'", "type(self.{f}) == int"],
    "obj": ["!has(self.{f}.cpu) || self.{f}.cpu > 0", "self.{f}.memory != ''"],
    "opaqueobj": ["has(self.{f})", "self.{f} == self.{f}"],
    "map_string": ["self.{f}.all(k, self.{f}[k] != '')", "'a' in self.{f}"],
    "map_int": ["self.{f}.exists(k, self.{f}[k] > 1)"],
    "list_string": ["self.{f}.all(t, t != 'x')", "self.{f}.filter(t, t == 'a').size() <= 1"],
    "list_int": ["self.{f}.exists(p, p > 80)", "80 in self.{f}"],
    "list_obj": ["self.{f}.all(e, e.name != '' && e.weight >= 0)", "self.{f}.map(e, e.name).exists(n, n == 'a')"],
}


def well_typed(rng: random.Random, f: Fields) -> str:
    name = f.of(rng, *WELL_TYPED)
    return rng.choice(WELL_TYPED.get(f.tags[name], ["true"])).format(f=name)


TEMPLATES: list[Callable[[random.Random, Fields], str]] = [
    compare, arithmetic, comprehension, projection, member, undefined, presence, negation, sizes,
    methods, membership, indexing, ternary, not_bool, conversions, logical, literals,
]


def generate(seed: int) -> dict[str, Any]:
    """One CRD: a random spec schema and one or two rules (plus, sometimes, nested rules)."""
    rng = random.Random(seed)
    pool = {**SCALARS, **composites(rng)}
    chosen = rng.sample(sorted(pool), rng.randint(4, len(pool)))
    if "enabled" not in chosen:
        chosen.append("enabled")
    fields = Fields({n: pool[n][1] for n in chosen})
    props = {n: json.loads(json.dumps(pool[n][0])) for n in chosen}
    rules = []
    for _ in range(rng.randint(1, 2)):
        template = well_typed if rng.random() < 0.6 else rng.choice(TEMPLATES)
        rule: dict[str, Any] = {"rule": template(rng, fields)}
        if rng.random() < 0.2:
            rule["messageExpression"] = rng.choice(["'bad ' + self.label", "self.count", "string(self.count)", "'fixed'", "self.nope"])
        rules.append(rule)
    if "entries" in props and rng.random() < 0.25:
        # Rules on the list items: correlatable (oldSelf allowed) only for a keyed list.
        if rng.random() < 0.5:
            props["entries"].pop("x-kubernetes-list-type")
            props["entries"].pop("x-kubernetes-list-map-keys")
        props["entries"]["items"]["x-kubernetes-validations"] = [
            {"rule": rng.choice(["self.weight == oldSelf.weight", "self.name != ''", "self.all(k, true)", "self.weight"])}]
    if "limits" in props and rng.random() < 0.2:
        props["limits"]["x-kubernetes-validations"] = [{"rule": rng.choice(["self.cpu > 0", "self.gpu > 0", "self.cpu"])}]
    if "free" in props and rng.random() < 0.1:
        props["free"]["x-kubernetes-validations"] = [{"rule": "true"}]
    spec = {"type": "object", "properties": props, "x-kubernetes-validations": rules}
    root: dict[str, Any] = {"type": "object", "properties": {"spec": spec}}
    if rng.random() < 0.15:  # the resource root also sees apiVersion, kind and metadata.name
        root["x-kubernetes-validations"] = [{"rule": rng.choice(ROOT_RULES)}]
    return _crd(seed, root, rng)


ROOT_RULES = ["self.metadata.name.startsWith('a')", "self.apiVersion != ''", "self.metadata.labels.size() > 0", "self.kind",
              "has(self.spec) && self.spec.enabled"]


def _crd(seed: int, root: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """The CRD around a schema; sometimes with a second version, whose schema is the same
    (errors reported under spec.validation) or without rules (under spec.versions[i])."""
    versions = [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": root}}]
    if rng.random() < 0.2:
        other = json.loads(json.dumps(root))
        if rng.random() < 0.5:
            other["properties"]["spec"].pop("x-kubernetes-validations")
        versions.append({"name": "v2", "served": True, "storage": False, "schema": {"openAPIV3Schema": other}})
    plural = f"gen{seed}s"
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.diff.llmops.dev"},
        "spec": {
            "group": "diff.llmops.dev",
            "scope": "Namespaced",
            "names": {"plural": plural, "kind": f"Gen{seed}"},
            "versions": versions,
        },
    }


def outcome(kubeconfig: pathlib.Path | str, crd: dict[str, Any]) -> dict[str, Any]:
    """What the server answers to a dry-run create: code, reason, the sorted cause fields and
    the causes themselves (cel-go's random type names normalised: selfType123 -> selfType)."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        client.ApiextensionsV1Api(api).create_custom_resource_definition(crd, dry_run="All", _preload_content=False)
        return {"code": 201, "reason": None, "fields": [], "causes": []}
    except client.exceptions.ApiException as e:
        body = json.loads(e.body)
        causes = (body.get("details") or {}).get("causes") or []
        return {"code": e.status, "reason": body.get("reason"), "fields": sorted(c.get("field", "") for c in causes),
                "causes": sorted((c.get("field", ""), c.get("reason", ""), re.sub(r"selfType\d+", "selfType", c.get("message", "")))
                                 for c in causes),
                "message": body.get("message", "")}
    finally:
        api.close()


def _rules_of(crd: dict[str, Any]) -> str:
    root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    spec = root["properties"]["spec"]
    found = [f"(root) {r['rule']}" for r in root.get("x-kubernetes-validations", [])]
    found += [r["rule"] + (f"  [messageExpression: {r['messageExpression']}]" if "messageExpression" in r else "")
              for r in spec.get("x-kubernetes-validations", [])]
    if len(crd["spec"]["versions"]) > 1:
        found.append(f"({len(crd['spec']['versions'])} versions)")
    for name, sub in spec["properties"].items():
        for where, node in ((name, sub), (f"{name}[*]", sub.get("items") or {})):
            found += [f"({where}) {r['rule']}" for r in node.get("x-kubernetes-validations", [])]
    return "; ".join(found)


def _compare(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (a["code"], a["reason"], a["fields"], a["causes"]) == (b["code"], b["reason"], b["fields"], b["causes"])


def _cause_diff(real: dict[str, Any], emu: dict[str, Any]) -> str:
    only_real = [c for c in real["causes"] if c not in emu["causes"]]
    only_emu = [c for c in emu["causes"] if c not in real["causes"]]
    return "".join(f"\n    real only: {c}" for c in only_real) + "".join(f"\n    emulated only: {c}" for c in only_emu)


def test_generated_crds_are_admitted_alike(control_plane: pathlib.Path, api_server: Any, tmp_path: pathlib.Path) -> None:
    emulated = api_server.write_kubeconfig(tmp_path / "kubeconfig")
    crds = [generate(SEED * 1000 + i) for i in range(CASES)]
    results = [(crd, outcome(control_plane, crd), outcome(emulated, crd)) for crd in crds]
    diffs = [(crd, real, emu) for crd, real, emu in results if not _compare(real, emu)]
    report = "\n".join(
        f"- {crd['metadata']['name']}: {_rules_of(crd)}\n    real:     {real['code']} {real['reason']} {real['fields']}"
        f"\n    emulated: {emu['code']} {emu['reason']} {emu['fields']}{_cause_diff(real, emu)}"
        for crd, real, emu in diffs)
    assert not diffs, f"{len(diffs)} of {CASES} CRDs admitted differently:\n{report}"
    refused = sum(1 for _, real, _ in results if real["code"] != 201)
    # The sample must exercise both answers, or the agreement proves little.
    assert CASES * 0.25 < refused < CASES * 0.75, f"{refused} of {CASES} refused by the real server"


# String literals: cel-go's lexer knows a fixed set of escapes and refuses the rest ('\.' in a
# regex is the usual slip: r'\.' or '[.]' is what the server takes). celpy accepted all of them.
ESCAPES = [r"'a\.b'", r"'a\\.b'", r"r'a\.b'", r"'[.]'", r"'\n\t\x41\u0041\101'", r"'\q'", r"'\8'", r'"\""', r"'''\.'''"]


def test_string_escapes_are_admitted_alike(control_plane: pathlib.Path, api_server: Any, tmp_path: pathlib.Path) -> None:
    emulated = api_server.write_kubeconfig(tmp_path / "kubeconfig")
    rng = random.Random(SEED)
    diffs, refused = [], 0
    for i, literal in enumerate(ESCAPES):
        root = {"type": "object", "properties": {"spec": {
            "type": "object", "properties": {"label": {"type": "string", "maxLength": 12}},
            "x-kubernetes-validations": [{"rule": f"self.label.matches({literal})"}]}}}
        crd = _crd(90_000 + i, root, rng)
        real, emu = outcome(control_plane, crd), outcome(emulated, crd)
        refused += real["code"] != 201
        # cel-go goes on lexing and parsing after the first bad escape (a cascade of follow-on
        # errors the emulator does not copy): the verdict, the field and the error's kind must agree.
        verdict = [(o["code"], o["reason"], o["fields"], "token recognition error" in o.get("message", "")) for o in (real, emu)]
        if verdict[0] != verdict[1]:
            diffs.append(f"- {literal}\n    real: {real.get('message') or real['code']}\n    emulated: {emu.get('message') or emu['code']}")
    assert not diffs, "\n".join(diffs)
    assert 0 < refused < len(ESCAPES)
