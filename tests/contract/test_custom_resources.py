"""Custom resources: schema validation (types, bounds, enum, required, CEL) answered 422
Invalid with field causes worded like kube-apiserver, pruning of unknown fields, defaults,
strict field validation, and server-side tables with the CRD's printer columns."""

from __future__ import annotations

import pytest
from contract_helpers import WIDGETS, Failed, ns_path, widget

pytest.importorskip("llmops.kubeschema")

INVALID = [
    ("size 0", {"size": 0}, "spec.size", "FieldValueInvalid",
     "Invalid value: 0: spec.size in body should be greater than or equal to 1"),
    ("size high", {"size": 11}, "spec.size", "FieldValueInvalid",
     "Invalid value: 11: spec.size in body should be less than or equal to 10"),
    ("enum", {"size": 1, "color": "green"}, "spec.color", "FieldValueNotSupported",
     'Unsupported value: "green": supported values: "red", "blue"'),
    ("required", {"color": "red"}, "spec.size", "FieldValueRequired", "Required value"),
    ("type", {"size": "big"}, "spec.size", "FieldValueTypeInvalid",
     'Invalid value: "string": spec.size in body must be of type integer: "string"'),
    ("cel", {"size": 1, "replicas": 3}, "spec", "FieldValueInvalid", None),
]

BLOCKING = ("FieldValueNotSupported", "FieldValueRequired", "FieldValueTypeInvalid")


@pytest.mark.parametrize(("case", "spec", "field", "reason", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_objects_are_422(kube, widget_crd, fresh_namespace, case, spec, field, reason, message) -> None:
    body = {"apiVersion": "contract.llmops.dev/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": spec}
    with pytest.raises(Failed) as e:
        kube.create(ns_path(fresh_namespace, "widgets", group_version=WIDGETS), body)
    assert (e.value.status, e.value.reason) == (422, "Invalid")
    causes = e.value.body["details"]["causes"]
    # A blocking schema error (not a mere bound) skips the CRD's CEL rules, and says so at <nil>.
    skipped = [("<nil>", "FieldValueInvalid")] if reason in BLOCKING else []
    assert [(c["field"], c["reason"]) for c in causes] == [(field, reason), *skipped]
    assert e.value.body["message"].startswith('Widget.contract.llmops.dev "bad" is invalid: ')
    if message:
        assert causes[0]["message"] == message
    else:
        assert "replicas must not exceed size" in causes[0]["message"]


def test_updates_are_validated_too(kube, widget_crd, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    kube.create(path, widget("w", size=2))
    with pytest.raises(Failed) as e:
        kube.patch(f"{path}/w", {"spec": {"size": 99}})
    assert e.value.status == 422
    assert kube.get(f"{path}/w")["spec"]["size"] == 2


def test_unknown_fields_pruned_defaults_applied(kube, widget_crd, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    out = kube.create(path, widget("p", size=2, bogus="x"))
    assert "bogus" not in out["spec"] and out["spec"]["mode"] == "fast"
    with pytest.raises(Failed) as e:
        kube.create(path, widget("s", size=2, bogus="x"), query={"fieldValidation": "Strict"})
    assert e.value.status == 400 and 'unknown field "spec.bogus"' in e.value.body["message"]


def test_table_uses_printer_columns(kube, widget_crd, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    kube.create(path, widget("t", size=4))
    kube.patch(f"{path}/t/status", {"status": {"conditions": [{"type": "Other", "status": "False"},
                                                              {"type": "Ready", "status": "True"}]}})
    table = kube.get(path, accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Ready", "Age"]
    cells = table["rows"][0]["cells"]
    assert cells[:3] == ["t", 4, "True"]
    assert table["rows"][0]["object"]["metadata"]["name"] == "t"
