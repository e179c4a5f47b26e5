"""Server-side apply with one field manager: create when absent, merge with what others
wrote, prune what the manager dropped since its last apply, YAML or JSON bodies, and keyed
lists (CRD list-map keys, built-in merge keys) merged rather than replaced."""

from __future__ import annotations

import pytest
from contract_helpers import WIDGETS, Failed, configmap, ns_path, widget

MANAGER = {"fieldManager": "contract-test", "force": "true"}


def test_apply_creates_then_prunes(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps", "ssa")
    created = kube.patch(path, configmap("ssa", {"a": "1", "b": "2"}), kind="apply", query=MANAGER)
    assert created["data"] == {"a": "1", "b": "2"} and created["metadata"]["uid"]
    # another writer adds a key the manager does not own
    kube.patch(path, {"data": {"other": "x"}})
    out = kube.patch(path, configmap("ssa", {"a": "1"}), kind="apply", query=MANAGER)
    assert out["data"] == {"a": "1", "other": "x"}  # b pruned, other kept


def test_apply_accepts_yaml(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps", "yaml-cm")
    text = (f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: yaml-cm\n  namespace: {fresh_namespace}\n"
            "data:\n  k: v\n  quoted: 'y'\n  day: 2026-01-01\n  time: 1:20\n")
    # A timestamp stays a string and 1:20 is no base-60 number (Go's YAML, not PyYAML's).
    assert kube.patch(path, text, kind="apply", query=MANAGER)["data"] == {
        "k": "v", "quoted": "y", "day": "2026-01-01", "time": "1:20"}


@pytest.mark.parametrize(("scalar", "decoded"), [("y", "true"), ("off", "false"), ("0x1F", "31"),
                                                 ("017", "15"), ("1_000", "1000")])
def test_apply_yaml_scalars_are_yaml_1_1(kube, fresh_namespace: str, scalar: str, decoded: str) -> None:
    """The server reads YAML 1.1 as go-yaml does: `y` is a boolean, `017` octal. An unquoted one
    in a string field fails the typed apply (500), naming the field and the decoded value."""
    path = ns_path(fresh_namespace, "configmaps", "typed")
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: typed\ndata:\n  k: {scalar}\n"
    with pytest.raises(Failed) as e:
        kube.patch(path, text, kind="apply", query=MANAGER)
    assert e.value.status == 500
    assert f".data.k: expected string, got &value.valueUnstructured{{Value:{decoded}}}" in e.value.body["message"]


def test_apply_requires_field_manager(kube, fresh_namespace: str) -> None:
    with pytest.raises(Failed) as e:
        kube.patch(ns_path(fresh_namespace, "configmaps", "z"), configmap("z"), kind="apply")
    assert (e.value.status, e.value.reason) == (422, "Invalid")
    assert [c["field"] for c in e.value.body["details"]["causes"]] == ["fieldManager"]


def test_apply_merges_list_map_and_prunes_items(kube, widget_crd, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "widgets", "w", group_version=WIDGETS)
    ports = [{"name": "http", "port": 80}, {"name": "grpc", "port": 90}]
    kube.patch(path, widget("w", size=2, ports=ports, tags=["a", "b"]), kind="apply", query=MANAGER)
    out = kube.patch(path, widget("w", size=2, ports=[{"name": "http", "port": 81}], tags=["c"]),
                     kind="apply", query=MANAGER)
    assert out["spec"]["ports"] == [{"name": "http", "port": 81}]
    assert out["spec"]["tags"] == ["c"]  # atomic list: replaced


def test_apply_status_subresource(kube, widget_crd, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "widgets", "st", group_version=WIDGETS)
    kube.patch(path, widget("st", size=2), kind="apply", query=MANAGER)
    body = {"apiVersion": "contract.llmops.dev/v1", "kind": "Widget", "metadata": {"name": "st"},
            "status": {"replicas": 2, "conditions": [{"type": "Ready", "status": "True"}]}}
    out = kube.patch(f"{path}/status", body, kind="apply", query=MANAGER)
    assert out["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert out["spec"]["size"] == 2


def test_unchanged_apply_and_patch_keep_resource_version(kube, fresh_namespace: str) -> None:
    """A write that changes nothing stores nothing: same resourceVersion, no watch event.
    Controllers that re-apply their children every reconcile depend on this."""
    path = ns_path(fresh_namespace, "configmaps", "same")
    first = kube.patch(path, configmap("same", {"a": "1"}), kind="apply", query=MANAGER)
    again = kube.patch(path, configmap("same", {"a": "1"}), kind="apply", query=MANAGER)
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    merged = kube.patch(path, {"data": {"a": "1"}})
    assert merged["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    changed = kube.patch(path, {"data": {"a": "2"}})
    assert changed["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
