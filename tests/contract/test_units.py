"""The emulator's pure pieces, table-driven: JSON merge / JSON / strategic merge patch,
single-manager apply, label and field selector parsing, the printer-column JSONPath subset
and kubectl-style ages. (Everything else in this directory goes through HTTP.)"""

from __future__ import annotations

import datetime as dt

import pytest
from llmops.sandbox.apiserver import fieldmanager, patching
from llmops.sandbox.apiserver.errors import ApiError
from llmops.sandbox.apiserver.selectors import parse_field_selector, parse_label_selector, selector_string
from llmops.sandbox.apiserver.tables import human_age, jsonpath

R = patching.builtin_list_rule

SMP = [
    ("map merge + null delete", {"a": {"b": 1, "c": 2}}, {"a": {"b": None, "d": 3}}, {"a": {"c": 2, "d": 3}}),
    ("containers by name", {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]},
     {"containers": [{"name": "a", "image": "2"}, {"name": "c"}]},
     # the real server's order: patch items first, b re-inserted before nothing it preceded
     {"containers": [{"name": "a", "image": "2"}, {"name": "c"}, {"name": "b"}]}),
    ("$patch delete item", {"containers": [{"name": "a"}, {"name": "b"}]},
     {"containers": [{"name": "a", "$patch": "delete"}]}, {"containers": [{"name": "b"}]}),
    ("$patch replace map", {"x": {"a": 1, "b": 2}}, {"x": {"$patch": "replace", "c": 3}}, {"x": {"c": 3}}),
    ("conditions by type", {"conditions": [{"type": "A", "status": "False"}]},
     {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]},
     {"conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "True"}]}),
    ("finalizers as a set", {"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["a", "b"]}},
     {"metadata": {"finalizers": ["a", "b"]}}),
    ("deleteFromPrimitiveList", {"finalizers": ["a", "b"]}, {"$deleteFromPrimitiveList/finalizers": ["a"]},
     {"finalizers": ["b"]}),
    ("setElementOrder ignored", {"containers": [{"name": "a"}]},
     {"$setElementOrder/containers": [{"name": "a"}], "containers": [{"name": "a", "image": "x"}]},
     {"containers": [{"name": "a", "image": "x"}]}),
    ("atomic list replaced", {"args": ["a", "b"]}, {"args": ["c"]}, {"args": ["c"]}),
]


@pytest.mark.parametrize(("case", "old", "patch", "want"), SMP, ids=[c[0] for c in SMP])
def test_strategic_merge(case, old, patch, want) -> None:
    assert patching.strategic_merge(old, patch, R) == want


JSON_PATCH = [
    ([{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2]}, {"a": [1, 2, 3]}),
    ([{"op": "remove", "path": "/a/0"}], {"a": [1, 2]}, {"a": [2]}),
    ([{"op": "move", "from": "/a", "path": "/b"}], {"a": 1}, {"b": 1}),
    ([{"op": "copy", "from": "/a", "path": "/b"}], {"a": 1}, {"a": 1, "b": 1}),
    ([{"op": "replace", "path": "/m~1n", "value": 2}], {"m/n": 1}, {"m/n": 2}),
]


@pytest.mark.parametrize(("ops", "doc", "want"), JSON_PATCH)
def test_json_patch(ops, doc, want) -> None:
    assert patching.json_patch(doc, ops) == want


@pytest.mark.parametrize("ops", [[{"op": "test", "path": "/a", "value": 2}],
                                 [{"op": "remove", "path": "/nope"}],
                                 [{"op": "replace", "path": "/a/b", "value": 1}]])
def test_json_patch_errors_are_422(ops) -> None:
    with pytest.raises(ApiError) as e:
        patching.json_patch({"a": 1}, ops)
    assert e.value.code == 422


def test_apply_prunes_only_what_the_manager_dropped() -> None:
    live = {"metadata": {"name": "x", "labels": {"mine": "1", "theirs": "1"}},
            "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}, {"name": "t"}], "keep": 1}}
    before = {"metadata": {"name": "x", "labels": {"mine": "1"}},
              "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}}
    theirs = {"metadata": {"labels": {"theirs": "1"}}, "spec": {"containers": [{"name": "t"}], "keep": 1}}
    after = {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "a", "image": "2"}]}}
    owners = fieldmanager.Owners()
    me = ("m", "Apply", "")
    owners.sets = {me: fieldmanager.config_set(before, R), ("o", "Update", ""): fieldmanager.config_set(theirs, R)}
    owned = fieldmanager.config_set(after, R)
    out = fieldmanager.prune(patching.apply_merge(live, after, R), owners.to_prune(me, owned))
    assert out == {"metadata": {"name": "x", "labels": {"theirs": "1"}},
                   "spec": {"containers": [{"name": "a", "image": "2"}, {"name": "t"}], "keep": 1}}


def test_apply_conflicts_name_field_and_manager() -> None:
    owners = fieldmanager.Owners()
    owners.sets = {("kubectl", "Update", ""): {("f:data", "f:k")}, ("alice", "Apply", ""): {("f:data", "f:j")}}
    touched = {("f:data", "f:k"), ("f:data", "f:j")}
    with pytest.raises(ApiError) as e:
        owners.apply(("bob", "Apply", ""), touched, touched, set(), False, "v1")
    assert e.value.code == 409 and e.value.message == (
        'Apply failed with 2 conflicts: conflicts with "alice":\n- .data.j\nconflicts with "kubectl" using v1:\n- .data.k')
    owners.apply(("bob", "Apply", ""), touched, touched, set(), True, "v1")  # force takes both
    assert owners.sets == {("bob", "Apply", ""): touched}


LABELS = {"app": "web", "tier": "front", "v": "2"}
SELECTORS = [
    ("", True), ("app=web", True), ("app = web", True), ("app==db", False), ("app!=db", True),
    ("app in (web, db)", True), ("app notin (web)", False), ("tier,app", True), ("!tier", False),
    ("!missing", True), ("v in (1,2),app=web", True), ("app in (db),v", False),
]


@pytest.mark.parametrize(("selector", "matches"), SELECTORS, ids=[s or "<empty>" for s, _ in SELECTORS])
def test_label_selector(selector: str, matches: bool) -> None:
    assert parse_label_selector(selector)({"metadata": {"labels": LABELS}}) is matches


@pytest.mark.parametrize("bad", ["app in web", "!app=web", "a b c"])
def test_label_selector_errors(bad: str) -> None:
    with pytest.raises(ApiError):
        parse_label_selector(bad)


def test_field_selector_and_selector_string() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n"}, "status": {"phase": "Running"}}
    assert parse_field_selector("spec.nodeName=n,status.phase!=Failed", "pods")(pod)
    assert not parse_field_selector("metadata.name==q", "pods")(pod)
    with pytest.raises(ApiError):
        parse_field_selector("spec.nodeName=n", "configmaps")
    sel = {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [{"key": "c", "operator": "In",
                                                                      "values": ["y", "x"]}]}
    assert selector_string(sel) == "a=1,b=2,c in (x,y)"


OBJ = {"spec": {"n": 3, "items": [{"x": 1}]},
       "status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]}}
PATHS = [(".spec.n", 3), (".spec.items[0].x", 1), (".status.conditions[?(@.type==\"Ready\")].status", "True"),
         (".spec.missing", None), (".spec.items[5].x", None), ("{.spec.n}", 3)]


@pytest.mark.parametrize(("path", "want"), PATHS)
def test_jsonpath(path: str, want: object) -> None:
    assert jsonpath(OBJ, path) == want


@pytest.mark.parametrize(("seconds", "want"), [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"),
                                               (3 * 3600, "3h"), (50 * 3600, "2d2h"), (10 * 86400, "10d")])
def test_human_age(seconds: int, want: str) -> None:
    now = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
    stamp = (now - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert human_age(stamp, now) == want
