"""The binder's pure placement: resources vs allocatable, nodeSelector, taints, readiness,
all-or-nothing gangs and the scheduler-style Unschedulable messages (numbers included)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from llmops.sandbox.binder import (
    GroupInfo,
    NodeInfo,
    PodInfo,
    group_min_count,
    node_infos,
    place,
    pod_group_ref,
)

GPU = "nvidia.com/gpu"


def node(name: str, gpus: int = 8, cpu: int = 16, **kw) -> NodeInfo:
    alloc = {"cpu": Decimal(cpu), GPU: Decimal(gpus), "memory": Decimal(64 * 2**30)}
    return NodeInfo(name=name, free=dict(alloc), allocatable=alloc, **kw)


def pod(name: str, gpus: int = 0, cpu: int = 1, group: str | None = None, **kw) -> PodInfo:
    req = {"cpu": Decimal(cpu)} | ({GPU: Decimal(gpus)} if gpus else {})
    return PodInfo(key=f"ns/{name}", requests=req, group=f"ns/native/{group}" if group else None, **kw)


CASES = [
    # (id, pods, nodes, groups, expected bindings, expected message fragments per pod)
    ("fits-first-node", [pod("a", 4)], [node("n1"), node("n2")], {}, {"ns/a": "n1"}, {}),
    ("spills-to-second", [pod("a", 6), pod("b", 6)], [node("n1"), node("n2")], {}, {"ns/a": "n1", "ns/b": "n2"}, {}),
    (
        "too-big",
        [pod("a", 16)],
        [node("n1"), node("n2")],
        {},
        {},
        {"ns/a": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu (requested 16, max allocatable 8)."},
    ),
    (
        "gang-fits",
        [pod("w0", 8, group="g"), pod("w1", 8, group="g")],
        [node("n1"), node("n2")],
        {"ns/native/g": GroupInfo(2, 0)},
        {"ns/w0": "n1", "ns/w1": "n2"},
        {},
    ),
    (
        "gang-all-or-nothing",
        [pod("w0", 8, group="g"), pod("w1", 8, group="g"), pod("w2", 8, group="g")],
        [node("n1"), node("n2")],
        {"ns/native/g": GroupInfo(3, 0)},
        {},
        {
            k: "only 2/3 pods fit at once, none bound;"
               " 0/2 nodes are available: 2 Insufficient nvidia.com/gpu (requested 8, max allocatable 8)"
            for k in ("ns/w0", "ns/w1", "ns/w2")
        },
    ),
    (
        "gang-waits-for-members",
        [pod("w0", 1, group="g")],
        [node("n1")],
        {"ns/native/g": GroupInfo(2, 0)},
        {},
        {"ns/w0": "1/2 pods present"},
    ),
    (
        "gang-counts-bound-members",
        [pod("w1", 1, group="g")],
        [node("n1")],
        {"ns/native/g": GroupInfo(2, 1)},
        {"ns/w1": "n1"},
        {},
    ),
    ("gang-without-podgroup", [pod("w0", 1, group="g")], [node("n1")], {}, {}, {"ns/w0": 'pod group "g" not found'}),
    (
        "selector-and-not-ready",
        [pod("a", 1, node_selector={"pool": "gpu"})],
        [node("n1", labels={"pool": "cpu"}), node("n2", labels={"pool": "gpu"}, ready=False)],
        {},
        {},
        {"ns/a": "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) were not ready."},
    ),
    (
        "taints-and-tolerations",
        [pod("a"), pod("b", tolerations=({"key": "gpu", "operator": "Exists"},))],
        [node("n1", taints=({"key": "gpu", "value": "yes", "effect": "NoSchedule"},))],
        {},
        {"ns/b": "n1"},
        {"ns/a": "1 node(s) had untolerated taint {gpu: yes}"},
    ),
    (
        "earlier-pods-consume-capacity",
        [pod("a", 8), pod("b", 1)],
        [node("n1")],
        {},
        {"ns/a": "n1"},
        {"ns/b": "(requested 1, max allocatable 8)"},
    ),
]


@pytest.mark.parametrize(("pods", "nodes", "groups", "bindings", "messages"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_place(pods, nodes, groups, bindings, messages) -> None:
    result = place(pods, nodes, groups)
    assert result.bindings == bindings
    assert set(result.unschedulable) == set(messages)
    for key, fragment in messages.items():
        assert fragment in result.unschedulable[key], result.unschedulable[key]


def test_gang_failure_does_not_consume_capacity_for_others() -> None:
    pods = [pod("w0", 8, group="g"), pod("w1", 8, group="g"), pod("solo", 8)]
    result = place(pods, [node("n1")], {"ns/native/g": GroupInfo(2, 0)})
    assert result.bindings == {"ns/solo": "n1"}


@pytest.mark.parametrize(
    ("obj", "ref"),
    [
        ({"metadata": {}, "spec": {"schedulingGroup": {"podGroupName": "g"}}}, ("native", "g")),
        ({"metadata": {"annotations": {"scheduling.k8s.io/group-name": "v"}}, "spec": {}}, ("volcano", "v")),
        ({"metadata": {"labels": {"scheduling.x-k8s.io/pod-group": "c"}}, "spec": {}}, ("coscheduling", "c")),
        ({"metadata": {}, "spec": {}}, None),
    ],
)
def test_pod_group_ref(obj: dict, ref: tuple | None) -> None:
    assert pod_group_ref(obj) == ref


def test_group_min_count_per_backend() -> None:
    assert group_min_count("native", {"spec": {"schedulingPolicy": {"gang": {"minCount": 4}}}}) == 4
    assert group_min_count("volcano", {"spec": {"minMember": 3}}) == 3


def test_node_infos_subtract_bound_non_terminal_pods() -> None:
    ready = [{"type": "Ready", "status": "True"}]
    nodes = [{"metadata": {"name": "n1"}, "status": {"allocatable": {GPU: "8", "cpu": "4"}, "conditions": ready}}]
    running = {"spec": {"nodeName": "n1", "containers": [{"resources": {"limits": {GPU: "3"}}}]}, "status": {"phase": "Running"}}
    done = {"spec": {"nodeName": "n1", "containers": [{"resources": {"limits": {GPU: "5"}}}]}, "status": {"phase": "Succeeded"}}
    (info,) = node_infos(nodes, [running, done])
    assert info.ready and info.free[GPU] == 5 and info.free["cpu"] == 4
