"""Gang backends: who makes the worker pods start all together or not at all.

Every backend answers the same three questions, so the TrainingJob builder and status
computer never branch on the backend themselves:

* ``objects(gang)``: the extra objects to apply (a PodGroup, or nothing);
* ``pod_patch(gang)``: what each worker pod carries to join the gang (labels, annotations,
  ``schedulerName``, ``spec.schedulingGroup``, scheduling gates);
* ``placement(gang_object, pods)``: how far placement got (waiting for quota, waiting for the
  scheduler, placed), read from the gang object's status and the pods' PodScheduled condition.

The backends differ in one important way that the operator papers over: native, Volcano and
coscheduling PodGroups make the scheduler itself hold pods until ``minCount`` fit; Kueue only
admits quota (and releases the pods' scheduling gate), so placement can still be partial.
Whatever the backend, the operator enforces all-or-nothing with its own timeout in the
status/plan layer (all pods deleted, Queued with a reason, exponential backoff).

``choose`` resolves ``auto`` from the resources the cluster serves (discovery at startup):
native Kubernetes PodGroups first (nothing to install), then Volcano, coscheduling, Kueue,
and finally none.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmops.api.quantity import format_quantity, parse_quantity
from llmops.api.scheduling import GangBackend

# --- vocabulary: API groups and keys the backends write (who reads them: the named scheduler) --
NATIVE_API = "scheduling.k8s.io/v1alpha2"  # Kubernetes >= 1.36 PodGroup (GenericWorkload gate)
VOLCANO_API = "scheduling.volcano.sh/v1beta1"
COSCHEDULING_API = "scheduling.x-k8s.io/v1alpha1"  # scheduler-plugins
KUEUE_APIS = ("kueue.x-k8s.io/v1beta2", "kueue.x-k8s.io/v1beta1")  # Workload API versions that mean "Kueue is installed"

VOLCANO_SCHEDULER = "volcano"  # schedulerName Volcano's scheduler serves
VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"  # Volcano reads: the pod's PodGroup
VOLCANO_QUEUE_ANNOTATION = "scheduling.volcano.sh/queue-name"  # Volcano reads on pods (the PodGroup carries spec.queue too)
COSCHEDULING_LABEL = "scheduling.x-k8s.io/pod-group"  # coscheduling plugin reads: the pod's PodGroup
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"  # Kueue reads: LocalQueue of the pod group
KUEUE_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"  # Kueue reads: pods with the same value form one Workload
KUEUE_TOTAL_ANNOTATION = "kueue.x-k8s.io/pod-group-total-count"  # Kueue reads: pods in the group
KUEUE_GATE = "kueue.x-k8s.io/admission"  # Kueue removes this scheduling gate once the Workload is admitted
KUEUE_MANAGED_LABEL = "kueue.x-k8s.io/managed"  # Kueue's webhook writes "true" on pods it manages


class Placement(str, enum.Enum):
    """How far the gang got toward being placed on nodes."""

    WAITING_FOR_QUOTA = "WaitingForQuota"  # a queue (Kueue/Volcano) has not admitted it yet
    PENDING = "Pending"  # admitted (or no queue) but not every pod is bound to a node
    PLACED = "Placed"  # every worker pod is bound to a node


@dataclass(frozen=True)
class Gang:
    """What a backend needs to know about one attempt's gang (plain values, no CR)."""

    name: str  # gang object / pod-group name for this attempt
    namespace: str
    size: int  # worker pods in the gang
    min_count: int  # pods that must fit together (== size unless elastic)
    per_pod_requests: Mapping[str, str] = field(default_factory=dict)  # resource -> quantity, per worker pod
    queue_name: str | None = None
    priority_class_name: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)  # owner labels for the gang object
    owner_references: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class PodPatch:
    """What a worker pod carries to join the gang; the builder merges it in."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    scheduler_name: str | None = None
    scheduling_group: str | None = None  # spec.schedulingGroup.podGroupName (native)
    scheduling_gates: tuple[str, ...] = ()


class Backend(Protocol):
    """One gang backend."""

    name: GangBackend

    def objects(self, gang: Gang) -> list[dict[str, Any]]: ...

    def pod_patch(self, gang: Gang) -> PodPatch: ...

    def placement(self, gang_object: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Placement: ...


def _all_bound(pods: Sequence[Mapping[str, Any]], size: int | None = None) -> bool:
    """Every pod is bound to a node (spec.nodeName set or PodScheduled=True)."""
    if not pods or (size is not None and len(pods) < size):
        return False
    for pod in pods:
        if (pod.get("spec") or {}).get("nodeName"):
            continue
        conds = (pod.get("status") or {}).get("conditions") or []
        if not any(c.get("type") == "PodScheduled" and c.get("status") == "True" for c in conds):
            return False
    return True


def _meta(gang: Gang) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": gang.name, "namespace": gang.namespace, "labels": dict(sorted(gang.labels.items()))}
    if gang.owner_references:
        meta["ownerReferences"] = [dict(r) for r in gang.owner_references]
    return meta


def _total(per_pod: Mapping[str, str], count: int) -> dict[str, str]:
    """minResources of the whole gang: each per-pod quantity times the pod count."""
    return {k: format_quantity(parse_quantity(v) * count) for k, v in sorted(per_pod.items())}


class NoneBackend:
    """No gang object: pods start as they fit (the operator's own timeout still applies)."""

    name = GangBackend.NONE

    def objects(self, gang: Gang) -> list[dict[str, Any]]:
        return []

    def pod_patch(self, gang: Gang) -> PodPatch:
        return PodPatch()

    def placement(self, gang_object: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Placement:
        return Placement.PLACED if _all_bound(pods) else Placement.PENDING


class NativeBackend:
    """Kubernetes' own PodGroup (scheduling.k8s.io/v1alpha2, GenericWorkload + GangScheduling).

    The scheduler holds pods in PreEnqueue until the PodGroup exists and ``minCount`` pods
    reference it, then places them in one group cycle."""

    name = GangBackend.NATIVE

    def objects(self, gang: Gang) -> list[dict[str, Any]]:
        return [
            {
                "apiVersion": NATIVE_API,
                "kind": "PodGroup",
                "metadata": _meta(gang),
                "spec": {"schedulingPolicy": {"gang": {"minCount": gang.min_count}}},
            }
        ]

    def pod_patch(self, gang: Gang) -> PodPatch:
        return PodPatch(scheduling_group=gang.name)

    def placement(self, gang_object: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Placement:
        return Placement.PLACED if _all_bound(pods) else Placement.PENDING


class VolcanoBackend:
    """Volcano PodGroup (minMember + minResources), pods scheduled by the volcano scheduler.

    PodGroup phases: Pending (the queue has not admitted the group), Inqueue (admitted,
    being placed), Running (minMember running), Unknown (partly placed)."""

    name = GangBackend.VOLCANO

    def objects(self, gang: Gang) -> list[dict[str, Any]]:
        spec: dict[str, Any] = {"minMember": gang.min_count, "minResources": _total(gang.per_pod_requests, gang.min_count)}
        if gang.queue_name:
            spec["queue"] = gang.queue_name
        if gang.priority_class_name:
            spec["priorityClassName"] = gang.priority_class_name
        return [{"apiVersion": VOLCANO_API, "kind": "PodGroup", "metadata": _meta(gang), "spec": spec}]

    def pod_patch(self, gang: Gang) -> PodPatch:
        ann = {VOLCANO_GROUP_ANNOTATION: gang.name}
        if gang.queue_name:
            ann[VOLCANO_QUEUE_ANNOTATION] = gang.queue_name
        return PodPatch(annotations=ann, scheduler_name=VOLCANO_SCHEDULER)

    def placement(self, gang_object: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Placement:
        phase = ((gang_object or {}).get("status") or {}).get("phase")
        if phase == "Pending":
            return Placement.WAITING_FOR_QUOTA
        return Placement.PLACED if _all_bound(pods) else Placement.PENDING


class CoschedulingBackend:
    """scheduler-plugins coscheduling PodGroup; pods join by label. No schedulerName is set:
    clusters that run the plugin as a second scheduler name it differently, so the supported
    setup is the plugin enabled in the default scheduler's profile."""

    name = GangBackend.COSCHEDULING

    def objects(self, gang: Gang) -> list[dict[str, Any]]:
        spec: dict[str, Any] = {"minMember": gang.min_count, "minResources": _total(gang.per_pod_requests, gang.min_count)}
        return [{"apiVersion": COSCHEDULING_API, "kind": "PodGroup", "metadata": _meta(gang), "spec": spec}]

    def pod_patch(self, gang: Gang) -> PodPatch:
        return PodPatch(labels={COSCHEDULING_LABEL: gang.name})

    def placement(self, gang_object: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Placement:
        return Placement.PLACED if _all_bound(pods) else Placement.PENDING


class KueueBackend:
    """Kueue plain-pod groups: pods with the same group label form one Workload; Kueue admits
    quota for all of them and then removes the admission gate. No object of ours: the
    Workload is Kueue's. Kueue admits quota, not placement, hence the operator's timeout."""

    name = GangBackend.KUEUE

    def objects(self, gang: Gang) -> list[dict[str, Any]]:
        return []

    def pod_patch(self, gang: Gang) -> PodPatch:
        labels = {KUEUE_GROUP_LABEL: gang.name, KUEUE_MANAGED_LABEL: "true"}
        if gang.queue_name:
            labels[KUEUE_QUEUE_LABEL] = gang.queue_name
        return PodPatch(
            labels=labels,
            annotations={KUEUE_TOTAL_ANNOTATION: str(gang.size)},
            scheduling_gates=(KUEUE_GATE,),
        )

    def placement(self, gang_object: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Placement:
        for pod in pods:
            gates = (pod.get("spec") or {}).get("schedulingGates") or []
            if any(g.get("name") == KUEUE_GATE for g in gates):
                return Placement.WAITING_FOR_QUOTA
        return Placement.PLACED if _all_bound(pods) else Placement.PENDING


BACKENDS: dict[GangBackend, Backend] = {
    b.name: b for b in (NativeBackend(), VolcanoBackend(), CoschedulingBackend(), KueueBackend(), NoneBackend())
}

#: For ``auto``: the first backend whose marker resource the cluster serves wins.
AUTO_ORDER: tuple[tuple[GangBackend, tuple[str, ...]], ...] = (
    (GangBackend.NATIVE, (f"{NATIVE_API}/podgroups",)),
    (GangBackend.VOLCANO, (f"{VOLCANO_API}/podgroups",)),
    (GangBackend.COSCHEDULING, (f"{COSCHEDULING_API}/podgroups",)),
    (GangBackend.KUEUE, tuple(f"{v}/workloads" for v in KUEUE_APIS)),
)


def choose(requested: GangBackend | str, served_resources: Iterable[str]) -> GangBackend:
    """Resolve the spec's backend. ``auto`` picks from ``served_resources`` ("group/version/
    plural" strings from discovery); an explicit backend is returned as asked (``unavailable``
    says when the cluster does not serve it: the job waits with that reason, never runs ungated)."""
    requested = GangBackend(requested)
    if requested != GangBackend.AUTO:
        return requested
    served = set(served_resources)
    for backend, markers in AUTO_ORDER:
        if served.intersection(markers):
            return backend
    return GangBackend.NONE


#: Group/versions of the gang objects the backends apply (their absence means the backend is not installed).
GANG_APIS = frozenset({NATIVE_API, VOLCANO_API, COSCHEDULING_API})
_INSTALL = {
    GangBackend.NATIVE: "Kubernetes >= 1.36 with the GenericWorkload and GangScheduling feature gates",
    GangBackend.VOLCANO: "Volcano",
    GangBackend.COSCHEDULING: "the scheduler-plugins coscheduling plugin",
    GangBackend.KUEUE: "Kueue",
}


def unavailable(requested: GangBackend | str, served_resources: Iterable[str]) -> str | None:
    """Why an explicitly requested backend cannot work on this cluster (its marker resource is
    not served), or None when it can (``auto`` and ``none`` always can). Said before any pod
    exists: Volcano's PodGroup would fail to apply, and Kueue's gated pods would wait forever."""
    requested = GangBackend(requested)
    markers = dict(AUTO_ORDER).get(requested)
    if not markers or set(served_resources).intersection(markers):
        return None
    apis = " or ".join(m.rsplit("/", 1)[0] + " " + m.rsplit("/", 1)[1] for m in markers)
    return (f"scheduling.gang.backend {requested.value} needs {apis}, which this cluster does not serve "
            f"(install {_INSTALL[requested]}, or set scheduling.gang.backend: auto)")


def backend_for(name: GangBackend | str) -> Backend:
    """The backend implementation (``auto`` must be resolved by ``choose`` first)."""
    name = GangBackend(name)
    if name == GangBackend.AUTO:
        raise ValueError("resolve 'auto' with scheduling.choose() before building")
    return BACKENDS[name]
