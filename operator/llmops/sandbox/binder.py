"""The sandbox binder: a tiny scheduler for clusters that have none (the emulated API server).

Placement is a pure function, ``place(pods, nodes, groups)``: each pending pod (no
``spec.nodeName``) goes to the first Ready node, by most free accelerators then name, whose
free allocatable covers the pod's requests (max of the init containers' and the sum of the
containers', as the scheduler computes it), whose labels match ``nodeSelector`` and whose
NoSchedule/NoExecute taints the pod tolerates. Pods are tried oldest first; each placement
reduces what later pods find free.

Gangs are all-or-nothing. A pod joins a gang through the native Workload API
(``spec.schedulingGroup.podGroupName`` naming a scheduling.k8s.io/v1alpha2 PodGroup with
``spec.schedulingPolicy.gang.minCount``), Volcano (annotation ``scheduling.k8s.io/group-name``,
PodGroup ``spec.minMember``) or scheduler-plugins coscheduling (label
``scheduling.x-k8s.io/pod-group``, PodGroup ``spec.minMember``). The members of a gang are
placed on a scratch copy of the cluster; the placement is kept only if the gang then has at
least minCount pods bound, counting members bound before. Otherwise none is bound and each
member is reported Unschedulable with the numbers that explain why, worded like the
scheduler: ``0/2 nodes are available: 2 Insufficient nvidia.com/gpu (requested 16, max
allocatable 8).``

The loop around it (``Binder``) polls pods, nodes and PodGroups, binds through the
pods/binding subresource (falling back to patching spec.nodeName where the server has no
binding), and writes the PodScheduled=False condition only when its message changes.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from llmops.api.quantity import format_quantity, parse_quantity
from llmops.sandbox.node.client import ApiException, Kube, is_status
from llmops.sandbox.node.spec import pod_requests
from llmops.sandbox.polling import PollingController

log = logging.getLogger(__name__)

Resources = dict[str, Decimal]

# How pods name their gang, per backend: (where, key) -> PodGroup API path template.
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"  # Volcano's controller writes; the binder reads
COSCHEDULING_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"  # users/operators write; the binder reads
GROUP_APIS = {
    "native": "/apis/scheduling.k8s.io/v1alpha2/namespaces/{ns}/podgroups/{name}",
    "volcano": "/apis/scheduling.volcano.sh/v1beta1/namespaces/{ns}/podgroups/{name}",
    "coscheduling": "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{ns}/podgroups/{name}",
}


@dataclass(frozen=True)
class NodeInfo:
    """A node as placement sees it; `free` is allocatable minus requests of pods bound to it."""

    name: str
    free: Mapping[str, Decimal]
    allocatable: Mapping[str, Decimal]
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Mapping[str, Any], ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True)
class PodInfo:
    key: str  # namespace/name
    requests: Mapping[str, Decimal]
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    group: str | None = None  # namespace/backend/name of its gang


@dataclass(frozen=True)
class GroupInfo:
    min_count: int | None  # None: the PodGroup object does not exist (yet)
    bound: int  # members already bound to a node


@dataclass
class Placement:
    bindings: dict[str, str] = field(default_factory=dict)  # pod key -> node name
    unschedulable: dict[str, str] = field(default_factory=dict)  # pod key -> message


def tolerates(tolerations: tuple[Mapping[str, Any], ...], taint: Mapping[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def misfit(pod: PodInfo, node: NodeInfo, free: Mapping[str, Decimal]) -> list[str]:
    """Why `pod` cannot go to `node` given `free` there: scheduler-style reasons, [] if it fits."""
    if not node.ready:
        return ["node(s) were not ready"]
    if node.unschedulable:
        return ["node(s) were unschedulable"]
    for taint in node.taints:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(pod.tolerations, taint):
            return [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value', '')}}}"]
    if any(node.labels.get(k) != v for k, v in pod.node_selector.items()):
        return ["node(s) didn't match Pod's node affinity/selector"]
    return [f"Insufficient {r}" for r, q in sorted(pod.requests.items()) if q > 0 and free.get(r, Decimal(0)) < q]


def explain(pod: PodInfo, nodes: list[NodeInfo], free: Mapping[str, Mapping[str, Decimal]]) -> str:
    """`0/N nodes are available: <count> <reason>, ...` plus the numbers behind Insufficient."""
    reasons: Counter[str] = Counter()
    for node in nodes:
        for reason in misfit(pod, node, free[node.name]):
            reasons[reason] += 1
    parts = []
    for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        text = f"{count} {reason}"
        if reason.startswith("Insufficient "):
            resource = reason.removeprefix("Insufficient ")
            most = max((n.allocatable.get(resource, Decimal(0)) for n in nodes), default=Decimal(0))
            text += f" (requested {format_quantity(pod.requests[resource])}, max allocatable {format_quantity(most)})"
        parts.append(text)
    if not nodes:
        return "0/0 nodes are available: no nodes registered."
    return f"0/{len(nodes)} nodes are available: {', '.join(parts)}."


def _order(nodes: list[NodeInfo]) -> list[NodeInfo]:
    return sorted(nodes, key=lambda n: n.name)


def _try(pods: list[PodInfo], nodes: list[NodeInfo], free: dict[str, dict[str, Decimal]]) -> tuple[dict[str, str], list[PodInfo]]:
    """Greedy first fit on `free` (mutated); returns bindings and the pods that did not fit."""
    bound: dict[str, str] = {}
    left: list[PodInfo] = []
    for pod in pods:
        for node in _order(nodes):
            if not misfit(pod, node, free[node.name]):
                for r, q in pod.requests.items():
                    free[node.name][r] = free[node.name].get(r, Decimal(0)) - q
                bound[pod.key] = node.name
                break
        else:
            left.append(pod)
    return bound, left


def place(pods: list[PodInfo], nodes: list[NodeInfo], groups: Mapping[str, GroupInfo]) -> Placement:
    """Decide bindings for pending `pods` (oldest first). Pure; see the module essay."""
    free = {n.name: dict(n.free) for n in nodes}
    result = Placement()
    gangs: dict[str, list[PodInfo]] = {}
    for pod in pods:
        if pod.group is None:
            bound, left = _try([pod], nodes, free)
            result.bindings.update(bound)
            for p in left:
                result.unschedulable[p.key] = explain(p, nodes, free)
        else:
            gangs.setdefault(pod.group, []).append(pod)
    for group_key, members in gangs.items():
        info = groups.get(group_key, GroupInfo(None, 0))
        name = group_key.rsplit("/", 1)[-1]
        if info.min_count is None:
            for p in members:
                result.unschedulable[p.key] = f'pod group "{name}" not found'
            continue
        need = info.min_count - info.bound
        if len(members) < need:
            for p in members:
                result.unschedulable[p.key] = (
                    f'pod group "{name}": {info.bound + len(members)}/{info.min_count} pods present, '
                    f"waiting for minCount before binding any"
                )
            continue
        scratch = {k: dict(v) for k, v in free.items()}
        bound, left = _try(members, nodes, scratch)
        if len(bound) >= need:
            free = scratch
            result.bindings.update(bound)
            for p in left:
                result.unschedulable[p.key] = explain(p, nodes, free)
        else:
            first = left[0]
            why = explain(first, nodes, scratch)
            for p in members:
                result.unschedulable[p.key] = (
                    f'pod group "{name}": only {info.bound + len(bound)}/{info.min_count} pods fit at once, '
                    f"none bound; {why}"
                )
    return result


# --- reading the cluster ------------------------------------------------------------------------
def pod_group_ref(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    """(backend, name) of the gang `pod` joins, or None."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    native = (spec.get("schedulingGroup") or {}).get("podGroupName")
    if native:
        return "native", native
    volcano = (meta.get("annotations") or {}).get(VOLCANO_GROUP_ANNOTATION)
    if volcano:
        return "volcano", volcano
    cosched = (meta.get("labels") or {}).get(COSCHEDULING_GROUP_LABEL)
    if cosched:
        return "coscheduling", cosched
    return None


def group_min_count(backend: str, group: Mapping[str, Any]) -> int:
    spec = group.get("spec") or {}
    if backend == "native":
        return int(((spec.get("schedulingPolicy") or {}).get("gang") or {}).get("minCount", 1))
    return int(spec.get("minMember", 1))


def pod_info(pod: Mapping[str, Any]) -> PodInfo:
    meta, spec = pod["metadata"], pod.get("spec") or {}
    ref = pod_group_ref(pod)
    return PodInfo(
        key=f"{meta.get('namespace', 'default')}/{meta['name']}",
        requests=pod_requests(dict(pod)),
        node_selector=dict(spec.get("nodeSelector") or {}),
        tolerations=tuple(spec.get("tolerations") or ()),
        group=f"{meta.get('namespace', 'default')}/{ref[0]}/{ref[1]}" if ref else None,
    )


def _terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def node_infos(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[NodeInfo]:
    used: dict[str, dict[str, Decimal]] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and not _terminal(pod):
            bucket = used.setdefault(node, {})
            for r, q in pod_requests(pod).items():
                bucket[r] = bucket.get(r, Decimal(0)) + q
            bucket["pods"] = bucket.get("pods", Decimal(0)) + 1
    out = []
    for node in nodes:
        status = node.get("status") or {}
        alloc = {r: parse_quantity(q) for r, q in (status.get("allocatable") or status.get("capacity") or {}).items()}
        u = used.get(node["metadata"]["name"], {})
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        out.append(NodeInfo(
            name=node["metadata"]["name"],
            free={r: alloc.get(r, Decimal(0)) - u.get(r, Decimal(0)) for r in set(alloc) | set(u)},
            allocatable=alloc,
            labels=dict(node["metadata"].get("labels") or {}),
            taints=tuple((node.get("spec") or {}).get("taints") or ()),
            ready=ready,
            unschedulable=bool((node.get("spec") or {}).get("unschedulable")),
        ))  # fmt: skip
    return out


class Binder(PollingController):
    """Polls the API server every `interval` seconds and binds what `place` decides."""

    thread_name = "sandbox-binder"

    def __init__(self, kube: Kube, interval: float = 0.3) -> None:
        super().__init__(kube, interval)
        self._reported: dict[str, str] = {}  # pod uid -> last Unschedulable message written
        self._binding_supported = True

    def step(self) -> Placement:
        """One pass: observe, place, bind, report."""
        pods = self.kube.get("/api/v1/pods").get("items") or []
        nodes = self.kube.get("/api/v1/nodes").get("items") or []
        pending = [
            p for p in pods
            if not (p.get("spec") or {}).get("nodeName") and not p["metadata"].get("deletionTimestamp") and not _terminal(p)
        ]  # fmt: skip
        if not pending:
            return Placement()
        pending.sort(key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"]))
        groups: dict[str, GroupInfo] = {}
        for pod in pending:
            info = pod_info(pod)
            if info.group is None or info.group in groups:
                continue
            ns, backend, name = info.group.split("/", 2)
            try:
                obj = self.kube.get(GROUP_APIS[backend].format(ns=ns, name=name))
                min_count: int | None = group_min_count(backend, obj)
            except ApiException as exc:
                if not is_status(exc, 404):
                    raise
                min_count = None
            bound = sum(
                1 for p in pods
                if (p.get("spec") or {}).get("nodeName") and not _terminal(p) and pod_info(p).group == info.group
            )  # fmt: skip
            groups[info.group] = GroupInfo(min_count, bound)
        by_key = {pod_info(p).key: p for p in pending}
        placement = place([pod_info(p) for p in pending], node_infos(nodes, pods), groups)
        for key, node in placement.bindings.items():
            self._bind(by_key[key], node)
        for key, message in placement.unschedulable.items():
            self._report(by_key[key], message)
        return placement

    def _bind(self, pod: dict[str, Any], node: str) -> None:
        meta = pod["metadata"]
        base = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if self._binding_supported:
            try:
                self.kube.request("POST", f"{base}/binding", {
                    "apiVersion": "v1", "kind": "Binding",
                    "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node},
                })  # fmt: skip
            except ApiException as exc:
                if not is_status(exc, 404, 405):
                    raise
                self._binding_supported = False
        if not self._binding_supported:
            self.kube.patch_merge(base, {"spec": {"nodeName": node}})
        self._reported.pop(meta.get("uid", ""), None)
        cond = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": _now()}
        with contextlib.suppress(ApiException):  # the node agent reports PodScheduled too
            self.kube.patch_merge(f"{base}/status", {"status": {"conditions": [cond]}})

    def _report(self, pod: dict[str, Any], message: str) -> None:
        meta = pod["metadata"]
        if self._reported.get(meta.get("uid", "")) == message:
            return
        cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                "lastProbeTime": None, "lastTransitionTime": _now()}  # fmt: skip
        self.kube.patch_merge(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            {"status": {"phase": "Pending", "conditions": [cond]}},
        )
        self._reported[meta.get("uid", "")] = message


def _now() -> str:
    from llmops.sandbox.node.pod import now_rfc3339

    return now_rfc3339()
