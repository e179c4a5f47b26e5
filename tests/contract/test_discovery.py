"""Discovery: /version, /api, /apis, group and group-version documents for the built-in kinds
the project and Kopf use, and a CRD becoming (and ceasing to be) a served resource."""

from __future__ import annotations

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


def test_crd_deletion_unserves_and_removes_objects(api_server, kube, widget_crd, fresh_namespace,
                                                   eventually) -> None:
    # Emulator only: deleting the shared test CRD on a real cluster would disturb other runs.
    kube.create(f"{WIDGETS}/namespaces/{fresh_namespace}/widgets",
                {"apiVersion": "contract.llmops.dev/v1", "kind": "Widget",
                 "metadata": {"name": "w"}, "spec": {"size": 1}})
    kube.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/" + WIDGET_CRD["metadata"]["name"])

    def unserved() -> bool:
        try:
            kube.get(WIDGETS)
        except Failed as e:
            return e.status == 404
        return False

    eventually(unserved)
    assert api_server.objects("widgets", "contract.llmops.dev") == []
