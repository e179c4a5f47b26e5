"""Pod admission the operator's refusal reporting relies on, on both servers: a ResourceQuota
on the pod count refuses the pod that would exceed it (403, the quota plugin's wording), and a
pod whose nodeSelector value is not a label value is invalid (422 naming spec.nodeSelector)."""

from __future__ import annotations

import pytest
from contract_helpers import Failed, ns_path, pod


def test_pod_count_quota_refuses_the_pod_past_the_limit(kube, fresh_namespace: str, eventually) -> None:  # noqa: ANN001
    quota = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}}}
    kube.create(ns_path(fresh_namespace, "resourcequotas"), quota)
    # The quota controller publishes the limits before admission charges against them.
    eventually(lambda: kube.get(ns_path(fresh_namespace, "resourcequotas", "one-pod")).get("status", {}).get("hard"), timeout=30)
    kube.create(ns_path(fresh_namespace, "pods"), pod("first", ("worker",)))
    with pytest.raises(Failed) as err:
        kube.create(ns_path(fresh_namespace, "pods"), pod("second", ("worker",)))
    assert err.value.status == 403 and err.value.reason == "Forbidden"
    assert err.value.body["message"] == ('pods "second" is forbidden: exceeded quota: one-pod, '
                                         "requested: pods=1, used: pods=1, limited: pods=1")


def test_node_selector_values_are_label_values(kube, fresh_namespace: str) -> None:  # noqa: ANN001
    body = pod("sel", ("worker",))
    body["spec"]["nodeSelector"] = {"pool": "a b"}
    with pytest.raises(Failed) as err:
        kube.create(ns_path(fresh_namespace, "pods"), body)
    assert err.value.status == 422 and err.value.reason == "Invalid"
    causes = err.value.body["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.nodeSelector"], causes
    assert causes[0]["message"].startswith('Invalid value: "a b": a valid label must be')


def test_annotations_together_are_bounded(kube, fresh_namespace: str) -> None:  # noqa: ANN001
    """Each annotation may be short while all of them are too long: 64 x 4 KiB (what the CRDs'
    template.annotations admit) is past the 256 KiB a pod's metadata takes."""
    body = pod("big", ("worker",))
    body["metadata"]["annotations"] = {f"k{i}": "v" * 4096 for i in range(64)}
    with pytest.raises(Failed) as err:
        kube.create(ns_path(fresh_namespace, "pods"), body)
    assert err.value.status == 422 and err.value.reason == "Invalid"
    assert err.value.body["details"]["causes"] == [
        {"reason": "FieldValueTooLong", "message": "Too long: may not be more than 262144 bytes", "field": "metadata.annotations"}]
    body["metadata"]["annotations"] = {f"k{i}": "v" * 4096 for i in range(63)}
    kube.create(ns_path(fresh_namespace, "pods"), body)
