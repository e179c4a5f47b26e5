"""Metadata stamping and the verbs: create/get/list with selectors, PUT with resourceVersion
preconditions, the three PATCH flavours, status and scale subresources, deletecollection."""

from __future__ import annotations

import pytest
from contract_helpers import WIDGETS, Failed, configmap, ns_path, pod, widget


def test_create_stamps_metadata(kube, fresh_namespace: str) -> None:
    a = kube.create(ns_path(fresh_namespace, "configmaps"), configmap("a"))
    b = kube.create(ns_path(fresh_namespace, "secrets"), {"apiVersion": "v1", "kind": "Secret",
                                                         "metadata": {"name": "b"}})
    meta = a["metadata"]
    assert meta["namespace"] == fresh_namespace  # filled from the URL
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z")
    # one global, monotonic resourceVersion across kinds
    assert int(b["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert kube.get(ns_path(fresh_namespace, "configmaps", "a"))["metadata"]["uid"] == meta["uid"]


def test_generate_name(kube, fresh_namespace: str) -> None:
    names = {kube.create(ns_path(fresh_namespace, "configmaps"),
                         {"metadata": {"generateName": "gen-"}, "data": {}})["metadata"]["name"]
             for _ in range(3)}
    assert len(names) == 3 and all(n.startswith("gen-") and len(n) == 9 for n in names)


def test_create_conflicts_and_missing_namespace(kube, fresh_namespace: str) -> None:
    kube.create(ns_path(fresh_namespace, "configmaps"), configmap("x"))
    with pytest.raises(Failed) as e:
        kube.create(ns_path(fresh_namespace, "configmaps"), configmap("x"))
    assert (e.value.status, e.value.reason) == (409, "AlreadyExists")
    with pytest.raises(Failed) as e:
        kube.create(ns_path("no-such-ns-zz", "configmaps"), configmap("x"))
    assert (e.value.status, e.value.reason) == (404, "NotFound")
    with pytest.raises(Failed) as e:
        kube.get(ns_path(fresh_namespace, "configmaps", "absent"))
    assert e.value.body["kind"] == "Status" and e.value.body["message"] == 'configmaps "absent" not found'


def test_invalid_name_is_422(kube, fresh_namespace: str) -> None:
    with pytest.raises(Failed) as e:
        kube.create(ns_path(fresh_namespace, "configmaps"), configmap("Bad_Name"))
    assert (e.value.status, e.value.reason) == (422, "Invalid")
    assert e.value.body["details"]["causes"][0]["field"] == "metadata.name"


def test_generation_moves_on_spec_only(kube, widget_crd, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    w = kube.create(path, widget("w", size=2))
    assert w["metadata"]["generation"] == 1
    w = kube.patch(f"{path}/w", {"metadata": {"labels": {"a": "b"}}})
    assert w["metadata"]["generation"] == 1
    w = kube.patch(f"{path}/w/status", {"status": {"replicas": 1}})
    assert w["metadata"]["generation"] == 1
    w = kube.patch(f"{path}/w", {"spec": {"size": 3}})
    assert w["metadata"]["generation"] == 2


def test_put_with_stale_resource_version_conflicts(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps", "c")
    first = kube.create(ns_path(fresh_namespace, "configmaps"), configmap("c", {"k": "1"}))
    second = dict(first, data={"k": "2"})
    updated = kube.put(path, second)
    assert updated["data"] == {"k": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    with pytest.raises(Failed) as e:
        kube.put(path, dict(first, data={"k": "3"}))  # carries the old resourceVersion
    assert (e.value.status, e.value.reason) == (409, "Conflict")
    assert kube.get(path)["data"] == {"k": "2"}


LABEL_CASES = [
    ("app=web", {"web-1", "web-2"}),
    ("app==web,tier=front", {"web-1"}),
    ("app!=web", {"db", "bare"}),
    ("app in (web,db)", {"web-1", "web-2", "db"}),
    ("app notin (web)", {"db", "bare"}),
    ("tier", {"web-1", "db"}),
    ("!tier", {"web-2", "bare"}),
    ("app in (db), tier", {"db"}),
]


@pytest.mark.parametrize(("selector", "expected"), LABEL_CASES, ids=[c[0] for c in LABEL_CASES])
def test_label_selectors(kube, fresh_namespace: str, selector: str, expected: set[str]) -> None:
    for name, labels in [("web-1", {"app": "web", "tier": "front"}), ("web-2", {"app": "web"}),
                         ("db", {"app": "db", "tier": "back"}), ("bare", {})]:
        kube.create(ns_path(fresh_namespace, "configmaps"), configmap(name, labels=labels))
    items = kube.get(ns_path(fresh_namespace, "configmaps"), query={"labelSelector": selector})["items"]
    assert {i["metadata"]["name"] for i in items} - {"kube-root-ca.crt"} == expected


def test_field_selectors(kube, fresh_namespace: str) -> None:
    for name in ("p1", "p2"):
        kube.create(ns_path(fresh_namespace, "pods"), pod(name))
    kube.create(ns_path(fresh_namespace, "pods", "p1") + "/binding",
                {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"},
                 "target": {"apiVersion": "v1", "kind": "Node", "name": "node-a"}})

    def names(selector: str) -> set[str]:
        items = kube.get(ns_path(fresh_namespace, "pods"), query={"fieldSelector": selector})["items"]
        return {i["metadata"]["name"] for i in items}

    assert names("metadata.name=p2") == {"p2"}
    assert names("spec.nodeName=node-a") == {"p1"}
    assert names("spec.nodeName=") == {"p2"}
    assert names("status.phase=Pending,metadata.name!=p1") == {"p2"}
    assert names(f"metadata.namespace={fresh_namespace}") == {"p1", "p2"}
    with pytest.raises(Failed) as e:
        names("spec.containers=x")
    assert e.value.status == 400


def test_merge_patch(kube, fresh_namespace: str) -> None:
    kube.create(ns_path(fresh_namespace, "configmaps"), configmap("m", {"a": "1", "b": "2"}))
    out = kube.patch(ns_path(fresh_namespace, "configmaps", "m"), {"data": {"a": None, "c": "3"}})
    assert out["data"] == {"b": "2", "c": "3"}


def test_json_patch_failed_test_is_422_and_changes_nothing(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps", "j")
    before = kube.create(ns_path(fresh_namespace, "configmaps"), configmap("j", {"a": "1"}))
    out = kube.patch(path, [{"op": "test", "path": "/data/a", "value": "1"},
                            {"op": "replace", "path": "/data/a", "value": "2"}], kind="json")
    assert out["data"] == {"a": "2"}
    with pytest.raises(Failed) as e:
        kube.patch(path, [{"op": "test", "path": "/data/a", "value": "1"},
                          {"op": "add", "path": "/data/b", "value": "x"}], kind="json")
    assert e.value.status == 422
    assert kube.get(path)["data"] == {"a": "2"}
    assert before["metadata"]["uid"] == kube.get(path)["metadata"]["uid"]


def test_strategic_merge_patch_merges_keyed_lists(kube, fresh_namespace: str) -> None:
    body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "E1", "value": "1"}]},
                                        {"name": "b", "image": "y:1"}]}}}}
    path = ns_path(fresh_namespace, "deployments", group_version="/apis/apps/v1")
    kube.create(path, body)
    out = kube.patch(f"{path}/d", {"spec": {"template": {"spec": {"containers": [
        {"name": "a", "env": [{"name": "E2", "value": "2"}]},
        {"name": "b", "$patch": "delete"}]}}}}, kind="strategic")
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["a"]
    assert containers[0]["image"] == "x:1"
    # apimachinery's order: items the patch names first, server-only items interleaved back by
    # their server position (a new E2 lands before E1).
    assert [e["name"] for e in containers[0]["env"]] == ["E2", "E1"]


def test_strategic_merge_patch_rejected_for_custom_resources(kube, widget_crd, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    kube.create(path, widget("w"))
    with pytest.raises(Failed) as e:
        kube.patch(f"{path}/w", {"spec": {"size": 2}}, kind="strategic")
    assert e.value.status == 415


def test_status_subresource_splits_writes(kube, widget_crd, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    created = kube.create(path, dict(widget("s", size=2), status={"replicas": 9}))
    assert "replicas" not in created.get("status", {})  # status ignored on create
    out = kube.patch(f"{path}/s/status", {"spec": {"size": 5}, "status": {"replicas": 1}})
    assert out["spec"]["size"] == 2 and out["status"]["replicas"] == 1
    out = kube.patch(f"{path}/s", {"spec": {"size": 4}, "status": {"replicas": 7}})
    assert out["spec"]["size"] == 4 and out["status"]["replicas"] == 1
    full = kube.get(f"{path}/s")
    full["status"] = {"replicas": 3}
    full["spec"]["size"] = 6
    out = kube.put(f"{path}/s/status", full)
    assert out["status"]["replicas"] == 3 and out["spec"]["size"] == 4


def test_pod_status_and_binding(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "pods")
    created = kube.create(path, pod("p"))
    assert created["status"]["phase"] == "Pending"
    out = kube.patch(f"{path}/p/status", {"status": {"phase": "Running", "podIP": "127.0.0.5"}})
    assert out["status"]["phase"] == "Running"
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "n1"}}
    kube.create(f"{path}/p/binding", binding)
    assert kube.get(f"{path}/p")["spec"]["nodeName"] == "n1"
    with pytest.raises(Failed) as e:
        kube.create(f"{path}/p/binding", dict(binding, target={"kind": "Node", "name": "n2"}))
    assert e.value.status == 409
    with pytest.raises(Failed) as e:  # pod specs are immutable beyond a few fields
        kube.patch(f"{path}/p", {"spec": {"restartPolicy": "Never"}})
    assert e.value.status == 422


@pytest.mark.parametrize("target", ["deployment", "widget"])
def test_scale_subresource(kube, widget_crd, fresh_namespace: str, target: str, eventually) -> None:
    if target == "deployment":
        gv, plural = "/apis/apps/v1", "deployments"
        body = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "s"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "s"}}, "template": {
                    "metadata": {"labels": {"app": "s"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    else:
        gv, plural, body = WIDGETS, "widgets", widget("s", size=5, replicas=2)
    path = ns_path(fresh_namespace, plural, "s", group_version=gv)
    kube.create(ns_path(fresh_namespace, plural, group_version=gv), body)
    scale = kube.get(f"{path}/scale")
    assert (scale["kind"], scale["apiVersion"], scale["spec"]["replicas"]) == ("Scale", "autoscaling/v1", 2)
    if target == "deployment":
        assert scale["status"]["selector"] == "app=s"
    kube.patch(f"{path}/scale", {"spec": {"replicas": 3}})
    assert kube.get(path)["spec"]["replicas"] == 3

    def put_scale() -> dict:
        # read-modify-write: a controller's status write in between is a 409; read again
        scale = kube.get(f"{path}/scale")
        scale["spec"]["replicas"] = 4
        return kube.put(f"{path}/scale", scale)

    assert eventually(put_scale)["spec"]["replicas"] == 4
    assert kube.get(path)["spec"]["replicas"] == 4


def test_deletecollection(kube, fresh_namespace: str) -> None:
    for name, labels in [("a", {"x": "1"}), ("b", {"x": "1"}), ("c", {})]:
        kube.create(ns_path(fresh_namespace, "configmaps"), configmap(name, labels=labels))
    kube.delete(ns_path(fresh_namespace, "configmaps"), query={"labelSelector": "x=1"})
    left = {i["metadata"]["name"] for i in kube.get(ns_path(fresh_namespace, "configmaps"))["items"]}
    assert left - {"kube-root-ca.crt"} == {"c"}
