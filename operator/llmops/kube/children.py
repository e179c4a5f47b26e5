"""Apply desired children and prune the rest: the operator's one write path for children.

Every child the operator owns carries the managed-by and owner labels and a controller
ownerReference to its parent's uid. Apply = server-side apply with one field manager (never
create-if-absent, so a child edited by hand converges back). Pods are the exception: a pod's
spec is immutable, so a pod is created once (no read first: a taken name answers 409) and
then left alone. Prune = delete owned children that are no longer desired, guarded by the
child's uid so a same-named successor is safe.

A child with our name but another controller (another uid, or none) is never adopted or
overwritten: it is reported back so status can say so (the user decides what to do). Where
reads come from a watch cache that holds every object of the kind (``kube.cache``), finding
that out costs no request.

An apply the API server refuses (admission 403: a missing ServiceAccount or PriorityClass,
quota, Pod Security, a policy; discovery: an API that is not served; 400/422: an object it
finds invalid) is reported back too, classified by ``llmops.failures.classify_refusal``,
instead of raising: the status says why, and the worker backs off. The first refusal ends
the apply pass: the children after it (the rest of the gang) would be refused alike, and a
partial gang only holds resources.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llmops.api import labels
from llmops.failures import Refusal, classify_refusal
from llmops.kube.client import ApiError, Kube, NotServedError
from llmops.scheduling import GANG_APIS


def controller_uid(obj: dict) -> str | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


def owner_selector(owner_kind: str, owner_name: str) -> str:
    return (
        f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE},"
        f"{labels.PART_OF}={owner_kind},{labels.OWNER_NAME}={owner_name}"
    )


ChildKey = tuple[str, str, str]  # (apiVersion, kind, name)


def _key(obj: dict) -> ChildKey:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


@dataclass(frozen=True)
class Foreign:
    """A child name another owner holds (never adopted or overwritten)."""


@dataclass
class SyncResult:
    applied: list[ChildKey] = field(default_factory=list)
    pruned: list[ChildKey] = field(default_factory=list)
    foreign: list[ChildKey] = field(default_factory=list)  # name taken by another owner
    refused: Refusal | None = None  # the API server refused a child (nothing after it was applied)
    refused_key: ChildKey | None = None  # ... this one


def refusal_of(exc: ApiError, obj: dict) -> Refusal | None:
    """The classified refusal an apply error is, or None (then it is the work queue's to retry)."""
    return classify_refusal(exc.status, exc.message, obj["kind"], obj["metadata"]["name"], api_version=obj["apiVersion"],
                            not_served=isinstance(exc, NotServedError), gang_apis=GANG_APIS)


def list_owned(kube: Kube, owner: dict, kinds: Iterable[tuple[str, str]]) -> dict[tuple[str, str, str], dict]:
    """Children of `owner` (by labels, then confirmed by controller uid), keyed by identity."""
    meta = owner["metadata"]
    selector = owner_selector(owner["kind"], meta["name"])
    found = {}
    for api_version, kind in kinds:
        for obj in kube.list(api_version, kind, meta["namespace"], selector):
            obj.setdefault("apiVersion", api_version)
            obj.setdefault("kind", kind)
            if controller_uid(obj) == meta["uid"]:
                found[_key(obj)] = obj
    return found


def _create(kube: Kube, obj: dict, owner_uid: str) -> bool:
    """Create ``obj``; on 409 True when the object holding the name is ours (it exists: a read
    that missed it), False when another owner holds the name."""
    try:
        kube.create(obj)
        return True
    except ApiError as exc:
        if exc.status != 409:
            raise
    meta = obj["metadata"]
    existing = kube.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
    return existing is None or controller_uid(existing) == owner_uid


def sync_children(
    kube: Kube,
    owner: dict,
    desired: list[dict],
    observed: dict[tuple[str, str, str], dict],
    prunable_kinds: Iterable[tuple[str, str]],
) -> SyncResult:
    """Apply `desired`, prune owned children of `prunable_kinds` that are not desired.

    Pods are create-once: a pod's spec is immutable, so re-applying an existing one is at best
    a wasted write and at worst (a mutable CR field reaching the pod env) a 422 on every
    reconcile. An existing desired pod is neither applied nor pruned; changes reach pods
    with the next attempt."""
    result = SyncResult()
    uid = owner["metadata"]["uid"]
    ns = owner["metadata"]["namespace"]
    for obj in desired:
        key = _key(obj)
        if key[1] == "Pod" and key in observed:
            continue
        try:
            if key[1] == "Pod":  # create-once: no read first; a name that is taken answers 409
                if not _create(kube, obj, uid):
                    result.foreign.append(key)
                    continue
            else:
                if key not in observed:
                    existing = kube.get(obj["apiVersion"], obj["kind"], ns, obj["metadata"]["name"])
                    if existing is not None and controller_uid(existing) != uid:
                        result.foreign.append(key)
                        continue
                kube.apply(obj)
        except ApiError as exc:
            result.refused = refusal_of(exc, obj)
            if result.refused is None:
                raise
            result.refused_key = key
            break
        result.applied.append(key)
    wanted = {_key(o) for o in desired}
    prunable = set(prunable_kinds)
    for key, obj in sorted(observed.items()):
        if key in wanted or (key[0], key[1]) not in prunable:
            continue
        if obj["metadata"].get("deletionTimestamp"):
            continue
        kube.delete(key[0], key[1], ns, key[2], uid=obj["metadata"].get("uid"))
        result.pruned.append(key)
    return result
