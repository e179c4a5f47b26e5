"""Gang backends: `auto` resolution from discovery, each backend's gang object and pod patch,
placement read from gang-object status and pods, and the per-node "fits" check with numbers."""

from __future__ import annotations

import pytest
from llmops.api.scheduling import GangBackend
from llmops.scheduling import Gang, Placement, backend_for, choose, misfits, unschedulable_message

NATIVE = "scheduling.k8s.io/v1alpha2/podgroups"
VOLCANO = "scheduling.volcano.sh/v1beta1/podgroups"
COSCHED = "scheduling.x-k8s.io/v1alpha1/podgroups"
KUEUE = "kueue.x-k8s.io/v1beta1/workloads"


@pytest.mark.parametrize(
    ("requested", "served", "expected"),
    [
        ("auto", {NATIVE, VOLCANO, COSCHED, KUEUE}, GangBackend.NATIVE),
        ("auto", {VOLCANO, COSCHED, KUEUE}, GangBackend.VOLCANO),
        ("auto", {COSCHED, KUEUE}, GangBackend.COSCHEDULING),
        ("auto", {KUEUE}, GangBackend.KUEUE),
        ("auto", {"kueue.x-k8s.io/v1beta2/workloads"}, GangBackend.KUEUE),
        ("auto", {"apps/v1/deployments"}, GangBackend.NONE),
        ("auto", set(), GangBackend.NONE),
        ("volcano", set(), GangBackend.VOLCANO),  # explicit wins, even when not served
        ("none", {NATIVE}, GangBackend.NONE),
    ],
)
def test_choose(requested, served, expected):
    assert choose(requested, served) == expected


GANG = Gang(
    name="t-a0", namespace="ml", size=4, min_count=4,
    per_pod_requests={"cpu": "8", "memory": "64Gi", "nvidia.com/gpu": "8"},
    queue_name="q", priority_class_name="high", labels={"a": "b"},
    owner_references=({"uid": "u", "controller": True},),
)


def test_native_podgroup():
    (pg,) = backend_for("native").objects(GANG)
    assert pg["apiVersion"] == "scheduling.k8s.io/v1alpha2" and pg["kind"] == "PodGroup"
    assert pg["spec"] == {"schedulingPolicy": {"gang": {"minCount": 4}}}
    assert pg["metadata"]["ownerReferences"] == [{"uid": "u", "controller": True}]
    assert backend_for("native").pod_patch(GANG).scheduling_group == "t-a0"


def test_volcano_podgroup_min_resources_are_the_gang_total():
    (pg,) = backend_for("volcano").objects(GANG)
    assert pg["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert pg["spec"] == {
        "minMember": 4, "queue": "q", "priorityClassName": "high",
        "minResources": {"cpu": "32", "memory": "256Gi", "nvidia.com/gpu": "32"},
    }
    patch = backend_for("volcano").pod_patch(GANG)
    assert patch.scheduler_name == "volcano" and patch.annotations["scheduling.k8s.io/group-name"] == "t-a0"


def test_coscheduling_podgroup_and_label():
    (pg,) = backend_for("coscheduling").objects(GANG)
    assert pg["apiVersion"] == "scheduling.x-k8s.io/v1alpha1" and pg["spec"]["minMember"] == 4
    assert backend_for("coscheduling").pod_patch(GANG).labels == {"scheduling.x-k8s.io/pod-group": "t-a0"}


@pytest.mark.parametrize("name", ["kueue", "none"])
def test_backends_without_objects(name):
    assert backend_for(name).objects(GANG) == []


def test_kueue_pod_patch():
    p = backend_for("kueue").pod_patch(GANG)
    assert p.labels["kueue.x-k8s.io/queue-name"] == "q" and p.labels["kueue.x-k8s.io/pod-group-name"] == "t-a0"
    assert p.annotations == {"kueue.x-k8s.io/pod-group-total-count": "4"}
    assert p.scheduling_gates == ("kueue.x-k8s.io/admission",)


def bound(node="n1"):
    return {"spec": {"nodeName": node}, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}


def unbound():
    return {"spec": {}, "status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}


def gated_pod():
    return {"spec": {"schedulingGates": [{"name": "kueue.x-k8s.io/admission"}]}, "status": {}}


@pytest.mark.parametrize(
    ("backend", "gang_object", "pods", "expected"),
    [
        ("none", None, [bound(), bound()], Placement.PLACED),
        ("none", None, [bound(), unbound()], Placement.PENDING),
        ("none", None, [], Placement.PENDING),
        ("native", None, [bound(), unbound()], Placement.PENDING),
        ("volcano", {"status": {"phase": "Pending"}}, [unbound()], Placement.WAITING_FOR_QUOTA),
        ("volcano", {"status": {"phase": "Inqueue"}}, [unbound(), bound()], Placement.PENDING),
        ("volcano", {"status": {"phase": "Running"}}, [bound(), bound()], Placement.PLACED),
        ("kueue", None, [gated_pod(), gated_pod()], Placement.WAITING_FOR_QUOTA),
        ("kueue", None, [bound(), unbound()], Placement.PENDING),
        ("coscheduling", None, [bound()], Placement.PLACED),
    ],
)
def test_placement(backend, gang_object, pods, expected):
    assert backend_for(backend).placement(gang_object, pods) == expected




NODES = {
    "a": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": "8"},
    "b": {"cpu": "32000m", "memory": "256Gi", "nvidia.com/gpu": "4"},
}


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        ({"nvidia.com/gpu": "8", "cpu": "64"}, ""),
        ({"nvidia.com/gpu": "16"}, "each worker needs nvidia.com/gpu=16 but the largest node has 8"),
        ({"memory": "1Ti"}, "each worker needs memory=1Ti but the largest node has 512Gi"),
        ({"rdma/ib": "1"}, "each worker needs rdma/ib=1 but no node offers rdma/ib"),
        ({"cpu": "65", "nvidia.com/gpu": "9"},
         "each worker needs cpu=65 but the largest node has 64; each worker needs nvidia.com/gpu=9 but the largest node has 8"),
    ],
)
def test_misfits_report_numbers(request_, expected):
    assert unschedulable_message(misfits(request_, NODES)) == expected


def test_misfits_without_node_facts_says_nothing():
    assert misfits({"nvidia.com/gpu": "1000"}, {}) == []
