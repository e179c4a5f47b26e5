"""Garbage collection and namespace termination, run after writes (debounced).

The real garbage collector is a controller that watches everything; here one sweep over
the store after each batch of writes does the same job with the same observable result:

- an object whose owners (by ownerReference uid) are all gone is deleted in the
  background; owners that are gone are dropped from a dependent that still has others;
- an owner deleted with propagationPolicy=Foreground carries the `foregroundDeletion`
  finalizer: its dependents are deleted first, and the finalizer is removed (so the owner
  disappears) only when none is left;
- `orphan` strips the owner's references from its dependents, then removes the finalizer;
- a Terminating namespace has its content deleted and goes away once it is empty;
- a terminating pod bound to a node that does not exist is removed (the pod GC controller's
  orphan rule, without its 40 s quarantine): no kubelet will ever finish its deletion.

Every step goes through `Cluster`, so watches see the same events a real cluster sends.
"""

from __future__ import annotations

import copy
from typing import Any

from .core import Cluster
from .errors import ApiError


def _owner_uids(obj: dict[str, Any]) -> list[str]:
    return [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]


def sweep(cluster: Cluster) -> bool:
    """One pass; returns True when something changed (the caller sweeps again)."""
    store, registry = cluster.store, cluster.registry
    live = {o["metadata"]["uid"]: (k, o) for k, o in store.objects.items()}
    dependents: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
    for key, obj in store.objects.items():
        for uid in _owner_uids(obj):
            dependents.setdefault(uid, []).append((key, obj))

    def resource_of(key: Any) -> Any:
        return registry.any_version(key[0], key[1])

    def delete(key: Any, options: dict[str, Any] | None = None) -> bool:
        res = resource_of(key)
        obj = store.get(key)
        if res is None or obj is None or obj["metadata"].get("deletionTimestamp"):
            return False
        try:
            cluster.delete(res, key[2] or None, key[3], options or {"propagationPolicy": "Background"})
        except ApiError:
            return False
        return True

    def update(key: Any, new: dict[str, Any]) -> bool:
        res = resource_of(key)
        if res is None:
            return False
        cluster._commit(res, store.get(key), new, False)
        return True

    for uid, (key, obj) in list(live.items()):
        meta = obj["metadata"]
        fins = meta.get("finalizers") or []
        if meta.get("deletionTimestamp") and "foregroundDeletion" in fins:
            deps = dependents.get(uid, [])
            if deps:
                changed = False
                for dkey, _ in deps:
                    changed |= delete(dkey, {"propagationPolicy": "Foreground"})
                if changed:
                    return True
                continue
            new = copy.deepcopy(obj)
            new["metadata"]["finalizers"] = [f for f in fins if f != "foregroundDeletion"]
            return update(key, new)
        if meta.get("deletionTimestamp") and "orphan" in fins:
            for dkey, dep in dependents.get(uid, []):
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [
                    r for r in new["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
                if not new["metadata"]["ownerReferences"]:
                    del new["metadata"]["ownerReferences"]
                update(dkey, new)
            new = copy.deepcopy(store.get(key))
            new["metadata"]["finalizers"] = [f for f in fins if f != "orphan"]
            return update(key, new)

    for key, obj in list(store.objects.items()):
        owners = _owner_uids(obj)
        if not owners:
            continue
        missing = [u for u in owners if u not in live]
        if missing and len(missing) == len(owners):
            if delete(key):
                return True
        elif missing:
            new = copy.deepcopy(obj)
            new["metadata"]["ownerReferences"] = [
                r for r in new["metadata"]["ownerReferences"] if r.get("uid") not in missing]
            return update(key, new)

    nodes = {k[3] for k in store.objects if k[:2] == ("", "nodes")}
    for key, obj in list(store.objects.items()):
        meta = obj["metadata"]
        node = (obj.get("spec") or {}).get("nodeName")
        if (key[:2] == ("", "pods") and node and node not in nodes and meta.get("deletionTimestamp")
                and not meta.get("finalizers")):
            res = resource_of(key)
            cluster.delete(res, key[2], key[3], {"gracePeriodSeconds": 0})
            return True

    for key, ns in list(store.objects.items()):
        if key[:2] != ("", "namespaces") or not ns["metadata"].get("deletionTimestamp"):
            continue
        content = [k for k in store.objects if k[2] == key[3] and registry.any_version(k[0], k[1])
                   and registry.any_version(k[0], k[1]).namespaced]
        changed = False
        for k in content:
            changed |= delete(k)
        if not content:
            store.remove(key)
            return True
        if changed:
            return True
    return False
