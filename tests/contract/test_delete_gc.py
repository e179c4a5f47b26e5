"""Deletion: finalizers and deletionTimestamp, ownerReference garbage collection (background,
foreground with the foregroundDeletion finalizer, orphan), graceful deletion of bound pods,
namespace termination."""

from __future__ import annotations

import pytest
from contract_helpers import Failed, configmap, ns_path, pod


def _gone(kube, path: str) -> bool:
    try:
        kube.get(path)
    except Failed as e:
        return e.status == 404
    return False


def _owned(name: str, owner: dict) -> dict:
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
           "uid": owner["metadata"]["uid"], "blockOwnerDeletion": True}
    return configmap(name, ownerReferences=[ref])


def test_finalizers_hold_deletion(kube, fresh_namespace: str, eventually) -> None:
    path = ns_path(fresh_namespace, "configmaps", "f")
    kube.create(ns_path(fresh_namespace, "configmaps"), configmap("f", finalizers=["contract.llmops.dev/hold"]))
    kube.delete(path)
    held = kube.get(path)
    assert held["metadata"]["deletionTimestamp"]
    with pytest.raises(Failed) as e:  # no new finalizers once deleting
        kube.patch(path, {"metadata": {"finalizers": ["contract.llmops.dev/hold", "x.dev/new"]}})
    assert e.value.status == 422
    kube.patch(path, {"metadata": {"finalizers": None}})
    eventually(lambda: _gone(kube, path))


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
def test_owner_reference_gc(kube, fresh_namespace: str, eventually, policy: str) -> None:
    base = ns_path(fresh_namespace, "configmaps")
    owner = kube.create(base, configmap("owner"))
    kube.create(base, _owned("child", owner))
    kube.create(base, dict(_owned("held-child", owner),
                           metadata={**_owned("held-child", owner)["metadata"], "finalizers": ["x.dev/hold"]}))
    kube.delete(f"{base}/owner", {"propagationPolicy": policy})
    if policy == "Foreground":
        # the owner waits, marked foregroundDeletion, until its dependents are gone
        eventually(lambda: _gone(kube, f"{base}/child"))
        held_owner = kube.get(f"{base}/owner")
        assert "foregroundDeletion" in held_owner["metadata"]["finalizers"]
        assert kube.get(f"{base}/held-child")["metadata"]["deletionTimestamp"]
        kube.patch(f"{base}/held-child", {"metadata": {"finalizers": None}})
        eventually(lambda: _gone(kube, f"{base}/owner"))
    elif policy == "Background":
        eventually(lambda: _gone(kube, f"{base}/owner") and _gone(kube, f"{base}/child"))
        eventually(lambda: kube.get(f"{base}/held-child")["metadata"].get("deletionTimestamp"))
        kube.patch(f"{base}/held-child", {"metadata": {"finalizers": None}})
    else:
        eventually(lambda: _gone(kube, f"{base}/owner"))
        child = eventually(lambda: kube.get(f"{base}/child"))
        eventually(lambda: not kube.get(f"{base}/child")["metadata"].get("ownerReferences"))
        assert not child["metadata"].get("deletionTimestamp")
        kube.patch(f"{base}/held-child", {"metadata": {"finalizers": None}})


def test_dependent_with_another_owner_survives(kube, fresh_namespace: str, eventually) -> None:
    base = ns_path(fresh_namespace, "configmaps")
    a, b = kube.create(base, configmap("a")), kube.create(base, configmap("b"))
    refs = [_owned("x", o)["metadata"]["ownerReferences"][0] for o in (a, b)]
    kube.create(base, configmap("both", ownerReferences=refs))
    kube.delete(f"{base}/a")
    eventually(lambda: [r["name"] for r in kube.get(f"{base}/both")["metadata"]["ownerReferences"]] == ["b"])


def test_bound_pod_deletion_is_graceful(kube, fresh_namespace: str) -> None:
    """A pod bound to a node is only marked by a delete (its kubelet finishes), unless the grace
    period is 0. The node is named after the namespace: the real cluster is shared."""
    node = f"node-{fresh_namespace}"
    kube.create("/api/v1/nodes", {"metadata": {"name": node}})
    try:
        _graceful_delete(kube, fresh_namespace, node)
    finally:
        kube.delete(f"/api/v1/nodes/{node}")


def _graceful_delete(kube, fresh_namespace: str, node: str) -> None:
    base = ns_path(fresh_namespace, "pods")
    kube.create(base, pod("p"))
    kube.create(f"{base}/p/binding", {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
                                      "target": {"kind": "Node", "name": node}})
    kube.patch(f"{base}/p/status", {"status": {"phase": "Running"}})
    kube.delete(f"{base}/p", {"gracePeriodSeconds": 20})
    marked = kube.get(f"{base}/p")  # the kubelet finishes a graceful deletion
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 20
    kube.delete(f"{base}/p", {"gracePeriodSeconds": 0})
    assert _gone(kube, f"{base}/p")


def test_terminating_pod_on_missing_node_is_collected(kube, fresh_namespace, eventually) -> None:
    """A bound pod is deleted gracefully (no kubelet will confirm it here); the pod GC collects
    it because its node does not exist. The real controller first quarantines a missing node
    for 40 s (so about 41 s here); the emulator collects at once."""
    base = ns_path(fresh_namespace, "pods")
    kube.create(base, pod("o"))
    kube.create(f"{base}/o/binding", {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "o"},
                                      "target": {"kind": "Node", "name": "no-such-node"}})
    marked = kube.delete(f"{base}/o")
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 30
    eventually(lambda: _gone(kube, f"{base}/o"), timeout=120)


def test_unbound_pod_deletes_at_once(kube, fresh_namespace: str) -> None:
    base = ns_path(fresh_namespace, "pods")
    kube.create(base, pod("q"))
    kube.delete(f"{base}/q")
    assert _gone(kube, f"{base}/q")


def test_namespace_deletion_removes_content(kube, eventually) -> None:
    name = "t-gc-ns-contract"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    kube.create(ns_path(name, "configmaps"), configmap("c"))
    kube.delete(f"/api/v1/namespaces/{name}")
    eventually(lambda: _gone(kube, f"/api/v1/namespaces/{name}"), timeout=120)
    with pytest.raises(Failed):
        kube.get(ns_path(name, "configmaps", "c"))
