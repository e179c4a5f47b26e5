"""Discovery: /version, /api, /apis, group and group-version documents for the built-in kinds
the project and Kopf use, and a CRD becoming (and ceasing to be) a served resource."""

from __future__ import annotations

import copy

import pytest
from contract_helpers import WIDGET_CRD, WIDGETS, Failed

BUILTIN = [
    # (group-version path, plural, namespaced, subresources that must be listed)
    ("/api/v1", "namespaces", False, ["status"]),
    ("/api/v1", "pods", True, ["status", "log", "binding"]),
    ("/api/v1", "services", True, []),
    ("/api/v1", "configmaps", True, []),
    ("/api/v1", "secrets", True, []),
    ("/api/v1", "events", True, []),
    ("/api/v1", "nodes", False, ["status"]),
    ("/api/v1", "persistentvolumeclaims", True, []),
    ("/api/v1", "serviceaccounts", True, []),
    ("/apis/apps/v1", "deployments", True, ["status", "scale"]),
    ("/apis/coordination.k8s.io/v1", "leases", True, []),
    ("/apis/policy/v1", "poddisruptionbudgets", True, []),
    ("/apis/autoscaling/v2", "horizontalpodautoscalers", True, []),
    ("/apis/rbac.authorization.k8s.io/v1", "roles", True, []),
    ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True, []),
    ("/apis/events.k8s.io/v1", "events", True, []),
    ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False, ["status"]),
]


def test_version_and_core(kube) -> None:
    version = kube.get("/version")
    assert version["major"] == "1" and version["gitVersion"].startswith("v1.")
    assert "v1" in kube.get("/api")["versions"]
    groups = {g["name"]: g for g in kube.get("/apis")["groups"]}
    for name in ("apps", "coordination.k8s.io", "apiextensions.k8s.io", "rbac.authorization.k8s.io"):
        assert groups[name]["preferredVersion"]["groupVersion"].startswith(name + "/")
    assert kube.get("/apis/apps")["name"] == "apps"


@pytest.mark.parametrize(("gv", "plural", "namespaced", "subs"), BUILTIN,
                         ids=[f"{b[0]}/{b[1]}" for b in BUILTIN])
def test_builtin_resources(kube, gv: str, plural: str, namespaced: bool, subs: list[str]) -> None:
    doc = kube.get(gv)
    assert doc["kind"] == "APIResourceList" and doc["groupVersion"] == gv.removeprefix("/api/").removeprefix("/apis/")
    by_name = {r["name"]: r for r in doc["resources"]}
    assert by_name[plural]["namespaced"] is namespaced
    assert {"get", "list", "watch", "create", "patch", "delete"} <= set(by_name[plural]["verbs"])
    for sub in subs:
        assert f"{plural}/{sub}" in by_name


def test_unknown_paths_are_404_status(kube) -> None:
    with pytest.raises(Failed) as e:
        kube.get("/apis/nope.example.com/v1/things")
    assert e.value.status == 404


def test_crd_becomes_served(kube, widget_crd, fresh_namespace: str, eventually) -> None:
    crd = kube.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + WIDGET_CRD["metadata"]["name"])
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions["Established"] == "True"
    doc = kube.get(WIDGETS)
    entries = {r["name"]: r for r in doc["resources"]}
    assert entries["widgets"]["namespaced"] is True and entries["widgets"]["kind"] == "Widget"
    assert entries["widgets"]["shortNames"] == ["wdg"]
    assert entries["widgets"]["categories"] == ["contracttest"]
    assert {"widgets/status", "widgets/scale"} <= set(entries)
    groups = [g["name"] for g in kube.get("/apis")["groups"]]
    assert "contract.llmops.dev" in groups
    assert kube.get(f"{WIDGETS}/namespaces/{fresh_namespace}/widgets")["items"] == []


def test_crd_deletion_unserves_and_removes_objects(kube, fresh_namespace, eventually) -> None:
    """Deleting a CRD stops serving it and removes its objects: recreated, it starts empty.
    A CRD of its own (the widget schema under a group named after the test's namespace), so
    the shared test CRD stays installed for the other tests."""
    group = f"{fresh_namespace}.contract.llmops.dev"
    crd = copy.deepcopy(WIDGET_CRD)
    crd["metadata"]["name"], crd["spec"]["group"] = f"widgets.{group}", group
    crd["spec"]["names"].pop("shortNames", None)
    crd["spec"]["names"].pop("categories", None)
    crds, base = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", f"/apis/{group}/v1"
    objects = f"{base}/namespaces/{fresh_namespace}/widgets"

    def create() -> None:
        kube.create(crds, crd)
        eventually(lambda: kube.get(objects), timeout=30)

    def unserved() -> bool:
        try:
            kube.get(base)
        except Failed as e:
            return e.status == 404
        return False

    create()
    kube.create(objects, {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"},
                          "spec": {"size": 1}})
    kube.delete(f"{crds}/{crd['metadata']['name']}")
    eventually(unserved, timeout=60)
    eventually(lambda: _gone(kube, f"{crds}/{crd['metadata']['name']}"), timeout=60)
    create()
    try:
        assert kube.get(objects)["items"] == []
    finally:
        kube.delete(f"{crds}/{crd['metadata']['name']}")


def _gone(kube, path: str) -> bool:
    try:
        kube.get(path)
    except Failed as e:
        return e.status == 404
    return False
