"""Kubernetes Events for transitions: one Event per transition, never one per retry.

The Event name is derived from (object uid, reason, message, a transition key), so a
reconcile that is retried after a failed status write re-creates the same name and gets
409 AlreadyExists instead of a duplicate Event in `kubectl describe`.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from llmops.kube.client import ApiError, Kube

REPORTING_CONTROLLER = "llmops.dev/operator"


def event_name(obj_name: str, uid: str, reason: str, key: str) -> str:
    digest = hashlib.sha256(f"{uid}/{reason}/{key}".encode()).hexdigest()[:12]
    return f"{obj_name[:200]}.{digest}"


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
