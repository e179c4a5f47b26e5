"""Kubernetes Events for transitions: one Event per transition, never one per retry.

The Event name is derived from (object uid, reason, a transition key), so a reconcile that is
retried re-creates the same name and gets 409 AlreadyExists instead of a duplicate Event in
`kubectl describe`. A planned transition is keyed by the stored status it moves away from
(``transition_key``): the Events go out before the status write, and when that write fails
(409: the object moved) the retried reconcile plans from the same stored status, so its
Events have the same names even where a message has moved on (an age, a count). Once the
write lands, the next transition starts from a new status and gets new names.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from llmops.kube.client import ApiError, Kube

REPORTING_CONTROLLER = "llmops.dev/operator"


def event_name(obj_name: str, uid: str, reason: str, key: str) -> str:
    digest = hashlib.sha256(f"{uid}/{reason}/{key}".encode()).hexdigest()[:12]
    return f"{obj_name[:200]}.{digest}"


class Announced(Protocol):
    type: str
    reason: str
    message: str


def transition_key(stored_status: Mapping, reason: str, index: int) -> str:
    """The key of the ``index``-th Event with ``reason`` planned from ``stored_status``."""
    digest = hashlib.sha256(json.dumps(stored_status, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{digest}/{reason}/{index}"


def emit_transitions(kube: Kube, owner: dict, events: Iterable[Announced], now: dt.datetime) -> None:
    """Emit a plan's Events, each keyed by the owner's stored status (see the module doc)."""
    stored = owner.get("status") or {}
    seen: Counter[str] = Counter()
    for event in events:
        emit(kube, owner, event.type, event.reason, event.message, transition_key(stored, event.reason, seen[event.reason]), now)
        seen[event.reason] += 1


def emit(kube: Kube, owner: dict, type_: str, reason: str, message: str, key: str, now: dt.datetime) -> bool:
    """Create one Event on `owner`; False when an Event for this transition already exists."""
    meta = owner["metadata"]
    ts = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(meta["name"], meta["uid"], reason, key), "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "llmops-operator"},
        "reportingComponent": REPORTING_CONTROLLER,
        "reportingInstance": "llmops-operator",
        "firstTimestamp": ts,
        "lastTimestamp": ts,
        "count": 1,
    }
    try:
        kube.create(event)
        return True
    except ApiError as exc:
        if exc.status == 409:
            return False
        raise
