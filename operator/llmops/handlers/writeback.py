"""The tail every kind's reconcile ends with: the plan's Events, then one status write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from llmops import API_VERSION
from llmops.kube.client import ApiError, Kube
from llmops.kube.events import Announced, emit_transitions


def write_back(kube: Kube, body: dict, status: dict, events: Iterable[Announced], now: dt.datetime) -> bool:
    """Announce the planned transitions and store ``status`` (only if it changed), guarded by
    the resourceVersion the plan was made from. False when the object moved under us (409,
    or 422 on a spec that changed since): the caller re-reads at once, and the retried plan
    re-emits nothing (Events are keyed by the stored status, ``llmops.kube.events``)."""
    emit_transitions(kube, body, events, now)
    if status == (body.get("status") or {}):
        return True
    meta = body["metadata"]
    try:
        kube.replace_status(API_VERSION, body["kind"], meta["namespace"], meta["name"], status, meta["resourceVersion"])
    except ApiError as exc:
        if exc.status in (409, 422):
            return False
        raise
    return True
