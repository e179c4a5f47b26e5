"""Who owns a child: the controller ownerReference and the labels every child carries (the
prune selector of llmops.kube.children and the owner wake-up of the controller read them)."""

from __future__ import annotations

from typing import Any

from llmops.api import labels as L
from llmops.api.wire import GROUP_VERSION, ObjectMeta


def owner_reference(kind: str, meta: ObjectMeta) -> dict[str, Any]:
    return {
        "apiVersion": GROUP_VERSION,
        "blockOwnerDeletion": True,
        "controller": True,
        "kind": kind,
        "name": meta.name,
        "uid": meta.uid or "",
    }


def owner_labels(kind: str, name: str) -> dict[str, str]:
    return {L.MANAGED_BY: L.MANAGED_BY_VALUE, L.PART_OF: kind, L.OWNER_NAME: name}
