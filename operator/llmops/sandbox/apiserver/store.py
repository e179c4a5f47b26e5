"""The in-memory object store and its event bus.

Every write takes the next value of one global counter as its resourceVersion (like etcd's
revision, so versions are comparable across kinds) and appends an event to a ring buffer.
Watches replay the buffer from the version they resume at and then follow live events; a
version older than the buffer's retained window is answered 410 Gone, which is what makes
clients re-list. All access happens on the server's event loop thread, so no locking.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
from typing import Any

from .errors import too_old_resource_version

Key = tuple[str, str, str, str]  # group, plural, namespace ("" when cluster-scoped), name


@dataclasses.dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    group: str
    plural: str
    namespace: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


class Watcher:
    """One open watch stream: a queue of events plus a way to cut it."""

    def __init__(self, group: str, plural: str) -> None:
        self.group, self.plural = group, plural
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.cut = asyncio.Event()


class Store:
    def __init__(self, window: int = 1000) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.rv = 0
        self.log: collections.deque[Event] = collections.deque(maxlen=window)
        self.compacted_rv = 0  # events at or below this version are no longer retained
        self.watchers: set[Watcher] = set()

    @staticmethod
    def key(group: str, plural: str, namespace: str | None, name: str) -> Key:
        return (group, plural, namespace or "", name)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.objects.get(key)

    def items(self, group: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [o for (g, p, ns, _), o in sorted(self.objects.items())
                if (g, p) == (group, plural) and (namespace is None or ns == namespace)]

    def _emit(self, ev: Event) -> None:
        if len(self.log) == self.log.maxlen:
            self.compacted_rv = self.log[0].rv
        self.log.append(ev)
        for w in list(self.watchers):
            if (w.group, w.plural) == (ev.group, ev.plural):
                w.queue.put_nowait(ev)

    def put(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        """Store `obj` under a fresh resourceVersion and announce it; returns the stored copy."""
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        old = self.objects.get(key)
        self.objects[key] = obj
        self._emit(Event(self.rv, "MODIFIED" if old else "ADDED", key[0], key[1], key[2], obj, old))
        return copy.deepcopy(obj)

    def remove(self, key: Key) -> dict[str, Any] | None:
        old = self.objects.pop(key, None)
        if old is None:
            return None
        self.rv += 1
        obj = copy.deepcopy(old)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(Event(self.rv, "DELETED", key[0], key[1], key[2], obj, old))
        return copy.deepcopy(obj)

    def compact(self) -> None:
        """Forget every retained event: resuming from any version before now is 410 Gone."""
        self.log.clear()
        self.compacted_rv = self.rv

    def events_after(self, group: str, plural: str, rv: int) -> list[Event]:
        if rv < self.compacted_rv:
            raise too_old_resource_version(rv, self.compacted_rv + 1)
        return [e for e in self.log if e.rv > rv and (e.group, e.plural) == (group, plural)]
