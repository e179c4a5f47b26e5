"""Is this operator the one that acts? Kopf's peering rule, applied to our work queue too.

Kopf pauses its watch streams when a live peer with a higher (or the same) priority appears
in the peering object; our work queue also holds delayed requeues that do not come through
those streams, so workers ask this guard before each reconcile. The rule is Kopf's: a peer
is live while lastseen + lifetime is in the future; we act only when no other live peer has
a priority >= ours. Standalone mode (no peering) is always active.

The peering object itself is the operator's to make (`ensure_peering`, at startup, through
its one write path): shipping it in the install would put an object in the same
`kubectl apply -k` as its CRD, which a real API server refuses until the CRD is established.
"""

from __future__ import annotations

import datetime
import threading
import time

from llmops.api.conditions import parse_time
from llmops.kube.client import ApiError, Kube

PEERING_API = "kopf.dev/v1"


def peers_blocking(status: dict, identity: str, priority: int, now: datetime.datetime) -> list[str]:
    """Pure: identities of live peers that should make us pause."""
    blocking = []
    for peer_id, info in (status or {}).items():
        if peer_id == identity or not isinstance(info, dict):
            continue
        lastseen = info.get("lastseen")
        if lastseen is None:
            continue
        deadline = parse_time(lastseen) + datetime.timedelta(seconds=int(info.get("lifetime", 60)))
        if deadline.tzinfo is None:
            deadline = deadline.replace(tzinfo=datetime.UTC)
        if deadline > now and int(info.get("priority", 0)) >= priority:
            blocking.append(peer_id)
    return sorted(blocking)


class PeeringGuard:
    def __init__(self, kube: Kube | None, name: str | None, identity: str, priority: int,
                 namespace: str | None = None, ttl: float = 2.0) -> None:
        self.kube, self.name, self.identity, self.priority = kube, name, identity, priority
        self.namespace = namespace
        self.ttl = ttl
        self._cached: tuple[float, bool] | None = None
        self._lock = threading.Lock()

    def active(self) -> bool:
        if self.kube is None or self.name is None:
            return True
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl:
                return self._cached[1]
            kind = "KopfPeering" if self.namespace else "ClusterKopfPeering"
            body = self.kube.get("kopf.dev/v1", kind, self.namespace, self.name) or {}
            now = datetime.datetime.now(datetime.UTC)
            ok = not peers_blocking(body.get("status") or {}, self.identity, self.priority, now)
            self._cached = (time.monotonic(), ok)
            return ok


def ensure_peering(kube: Kube, name: str, namespace: str | None = None, *, timeout: float = 120.0,
                   clock=time.monotonic, sleep=time.sleep) -> dict:
    """Server-side apply the (empty) peering object Kopf registers in; the status is Kopf's.

    The peering CRDs ship with the install and may still be becoming established when the
    operator starts, so "not served" is retried (discovery asked afresh each time) until
    `timeout`; other errors are raised at once."""
    fresh = Kube(kube.api, field_manager=kube.field_manager, discovery_ttl=0.0)
    kind = "KopfPeering" if namespace else "ClusterKopfPeering"
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    deadline, delay = clock() + timeout, 0.5
    while True:
        try:
            return fresh.apply({"apiVersion": PEERING_API, "kind": kind, "metadata": meta})
        except ApiError as exc:
            if exc.status != 404 or clock() >= deadline:
                raise
        sleep(delay)
        delay = min(delay * 2, 5.0)
