"""Facts about pods and nodes, parsed from the objects the API server returns (pure): what the
failure classifier and the training planner read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.api import labels as L


@dataclass(frozen=True)
class ContainerFacts:
    """One container's current (or last) state."""

    name: str
    state: str | None = None  # "waiting", "running", "terminated"
    reason: str | None = None  # waiting/terminated reason (OOMKilled, Error, ErrImagePull, ...)
    message: str | None = None
    exit_code: int | None = None
    signal: int | None = None

    @classmethod
    def from_status(cls, cs: Mapping[str, Any]) -> ContainerFacts:
        st = cs.get("state") or {}
        for kind in ("terminated", "waiting", "running"):
            if kind in st and st[kind] is not None:
                s = st[kind] or {}
                return cls(cs.get("name", ""), kind, s.get("reason"), s.get("message"), s.get("exitCode"), s.get("signal"))
        return cls(cs.get("name", ""))


@dataclass(frozen=True)
class PodConditionFacts:
    type: str
    status: str
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class PodFacts:
    """What the operator knows about one worker pod."""

    name: str
    rank: int
    attempt: int
    phase: str = "Pending"  # Pending, Running, Succeeded, Failed, Unknown
    reason: str | None = None  # status.reason (Evicted, ...)
    message: str | None = None
    containers: tuple[ContainerFacts, ...] = ()
    conditions: tuple[PodConditionFacts, ...] = ()
    node_name: str | None = None
    created: str | None = None  # metadata.creationTimestamp
    deletion_timestamp: str | None = None  # set = terminating; the time the grace period ends
    uid: str | None = None

    @classmethod
    def from_pod(cls, pod: Mapping[str, Any]) -> PodFacts:
        """Facts from a pod object as the API server returns it."""
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        lab = meta.get("labels") or {}
        return cls(
            name=meta.get("name", ""),
            rank=int(lab.get(L.NODE_RANK, "0")),
            attempt=int(lab.get(L.ATTEMPT, "0")),
            phase=status.get("phase") or "Pending",
            reason=status.get("reason"),
            message=status.get("message"),
            containers=tuple(ContainerFacts.from_status(c) for c in status.get("containerStatuses") or []),
            conditions=tuple(
                PodConditionFacts(c.get("type", ""), c.get("status", ""), c.get("reason"), c.get("message"))
                for c in status.get("conditions") or []
            ),
            node_name=spec.get("nodeName"),
            created=meta.get("creationTimestamp"),
            deletion_timestamp=meta.get("deletionTimestamp"),
            uid=meta.get("uid"),
        )

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def condition(self, type_: str) -> PodConditionFacts | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def terminated(self) -> ContainerFacts | None:
        """The first container that terminated non-zero, else the first terminated one."""
        done = [c for c in self.containers if c.state == "terminated"]
        bad = [c for c in done if c.exit_code not in (0, None)]
        return next(iter(bad or done), None)


@dataclass(frozen=True)
class NodeFacts:
    """A node's readiness as the Ready condition says."""

    ready: bool
    since: str | None = None  # lastTransitionTime of Ready


def node_facts(nodes: Sequence[Mapping[str, Any]]) -> tuple[dict[str, NodeFacts], dict[str, dict[str, str]]]:
    """(node name -> readiness, node name -> status.allocatable) from Node objects."""
    facts, allocatable = {}, {}
    for n in nodes:
        name = (n.get("metadata") or {}).get("name", "")
        st = n.get("status") or {}
        ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
        facts[name] = NodeFacts(ready is not None and ready.get("status") == "True", (ready or {}).get("lastTransitionTime"))
        allocatable[name] = {k: str(v) for k, v in (st.get("allocatable") or {}).items()}
    return facts, allocatable
