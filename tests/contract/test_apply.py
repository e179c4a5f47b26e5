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
    path = ns_path(fresh_namespace, "configmaps", "y")
    text = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\n  namespace: {fresh_namespace}\ndata:\n  k: v\n"
    assert kube.patch(path, text, kind="apply", query=MANAGER)["data"] == {"k": "v"}


def test_apply_requires_field_manager(kube, fresh_namespace: str) -> None:
    with pytest.raises(Failed) as e:
        kube.patch(ns_path(fresh_namespace, "configmaps", "z"), configmap("z"), kind="apply")
    assert e.value.status == 400


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
