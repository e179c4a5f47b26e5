"""Fault injection: make the next N matching requests fail, cut or stall watch streams.

Two servers carry the same rules out: the emulator (``ApiServer.faults``) and the fault
proxy in front of a real kube-apiserver (``FaultProxy.faults``, llmops.sandbox.faultproxy).
Both classify a request with ``requestinfo.parse`` and ask ``check`` before doing anything
with it, so one scenario injects the same faults on either cluster. Tests call these from
their own thread while the server runs in its loop thread, so the state sits behind a lock.
A request that is failed here is answered before it reaches the store (or the real server):
a failed write never mutates anything (unlike a "reaction" that answers after the fact,
which would leave the client and the cluster disagreeing).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable

from .errors import ApiError


@dataclasses.dataclass
class _Rule:
    verb: str | None
    resource: str | None
    code: int
    count: int
    retry_after: int | None
    namespace: str | None
    name: str | None
    message: str
    after: int = 0  # matching requests still let through before the faults start


def created_name(verb: str | None, name: str | None, body: bytes) -> str | None:
    """The name a request acts on: a create (POST) names its object in the body, not the path,
    so a rule naming a pod matches its creation as it matches its apply."""
    if verb != "create" or name is not None or not body:
        return name
    try:
        meta = json.loads(body).get("metadata") or {}
    except (ValueError, AttributeError):
        return None
    found = meta.get("name") if isinstance(meta, dict) else None
    return found if isinstance(found, str) else None


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self._stall_until: dict[str | None, float] = {}
        self._cut_hook: Callable[[str | None], None] = lambda resource: None
        self._expire_hook: Callable[[], None] = lambda: None
        self.injected = 0  # how many requests were failed so far

    def attach(self, cut: Callable[[str | None], None], expire: Callable[[], None]) -> None:
        """Wire the server that carries out `cut_watches` and `expire_history`."""
        self._cut_hook, self._expire_hook = cut, expire

    def fail(self, verb: str | None = "patch", resource: str | None = "pods", code: int = 503,
             count: int = 1, retry_after: int | None = None, namespace: str | None = None,
             name: str | None = None, message: str | None = None, after: int = 0) -> None:
        """Fail the next `count` requests matching verb/resource(/namespace/name) with `code`,
        after letting `after` matching ones through (e.g. the third pod create onwards).

        `verb` is a Kubernetes verb (get, list, watch, create, update, patch, delete,
        deletecollection) or None for any; `resource` a plural ("pods"), a subresource
        ("pods/status") or None for any. A 429 always carries Retry-After (1s unless given).
        """
        if code == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._rules.append(_Rule(verb, resource, code, count, retry_after, namespace, name,
                                     message or f"injected fault ({code})", after))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._stall_until.clear()

    def check(self, verb: str, plural: str, sub: str, namespace: str | None, name: str | None) -> None:
        """Raise the injected error if a rule matches this request (consuming one count)."""
        with self._lock:
            for rule in self._rules:
                if rule.count <= 0:
                    continue
                if rule.verb not in (None, verb):
                    continue
                if rule.resource not in (None, plural, f"{plural}/{sub}" if sub else plural):
                    continue
                if sub and rule.resource == plural:
                    continue  # "pods" does not match "pods/status"; name the subresource
                if rule.namespace not in (None, namespace) or rule.name not in (None, name):
                    continue
                if rule.after > 0:
                    rule.after -= 1
                    return
                rule.count -= 1
                self.injected += 1
                raise ApiError(rule.code, rule.message, retry_after=rule.retry_after)

    # -- watches --------------------------------------------------------------------------------

    def cut_watches(self, resource: str | None = None) -> None:
        """Close the open watch streams (of one plural, or all) now."""
        self._cut_hook(resource)

    def expire_history(self) -> None:
        """Compact the watch history now: a watch resuming from any earlier resourceVersion
        gets 410 Gone and must relist (what etcd compaction does to a slow client)."""
        self._expire_hook()

    def stall_watches(self, resource: str | None = None, seconds: float = 5.0) -> None:
        """Keep watch streams open but deliver nothing for `seconds` (events are held back)."""
        with self._lock:
            self._stall_until[resource] = time.monotonic() + seconds

    def stalled(self, plural: str) -> float:
        """Seconds the watches of this plural must still stay silent."""
        now = time.monotonic()
        with self._lock:
            until = max(self._stall_until.get(None, 0.0), self._stall_until.get(plural, 0.0))
        return max(0.0, until - now)
