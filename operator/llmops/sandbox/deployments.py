"""A tiny Deployment controller for the sandbox only (the emulated API server runs none).

Each pass (polling, like the binder) makes every Deployment's pods match its spec:

* pods are created straight from ``spec.template`` (no ReplicaSet in between: a sandbox
  simplification), named ``<deployment>-<hash>-<suffix>``, labelled
  ``pod-template-hash=<hash of the template>`` and owned by the Deployment (controller
  ownerReference, so the API server's garbage collector removes them with it);
* RollingUpdate, basic: pods of the current template are added while the live count stays
  within ``replicas + maxSurge``; pods of an older template (not-ready first) are deleted while
  the ready count stays at least ``replicas - maxUnavailable``; extra current pods (not-ready,
  newest first) are deleted on scale-down; failed pods are replaced;
* ``status``: replicas, readyReplicas, updatedReplicas, availableReplicas (= ready; no
  minReadySeconds) and observedGeneration, written only when they change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import secrets
from typing import Any

from llmops.sandbox.node.client import ApiException, is_status
from llmops.sandbox.polling import PollingController

log = logging.getLogger(__name__)
HASH_LABEL = "pod-template-hash"


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        f = int(value[:-1]) * total / 100
        return math.ceil(f) if round_up else math.floor(f)
    return int(value)


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in (pod.get("status") or {}).get("conditions") or [])


def _live(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def plan_pods(dep: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """(pods of the current template to create, pods to delete) for one pass. Pure."""
    spec = dep.get("spec") or {}
    want = int(spec.get("replicas", 1))
    h = template_hash(spec.get("template") or {})
    strategy = spec.get("strategy") or {}
    ru = (strategy.get("rollingUpdate") or {}) if strategy.get("type", "RollingUpdate") == "RollingUpdate" else {}
    surge = _int_or_percent(ru.get("maxSurge", "25%"), want, True)
    unavailable = _int_or_percent(ru.get("maxUnavailable", "25%"), want, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    delete = [p for p in pods if not p["metadata"].get("deletionTimestamp") and (p.get("status") or {}).get("phase") == "Failed"]
    live = [p for p in pods if _live(p)]
    new = [p for p in live if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == h]
    old = [p for p in live if p not in new]
    # scale down the current template: not-ready first, then newest
    order = sorted(new, key=lambda p: (_ready(p), p["metadata"].get("creationTimestamp", "")), reverse=False)
    while len(new) > want:
        victim = order.pop(0)
        new.remove(victim)
        delete.append(victim)
    total = len(new) + len(old)
    create = 0
    while len(new) + create < want and total < want + surge:
        create += 1
        total += 1
    available = sum(1 for p in new + old if _ready(p))
    for p in sorted(old, key=lambda p: (_ready(p), p["metadata"]["name"])):
        if not _ready(p):
            delete.append(p)
            continue
        if available - 1 >= want - unavailable:
            delete.append(p)
            available -= 1
    return create, delete


class DeploymentController(PollingController):
    """Polls Deployments and their pods every ``interval`` seconds."""

    thread_name = "sandbox-deployments"

    def step(self) -> None:
        deps = self.kube.get("/apis/apps/v1/deployments").get("items") or []
        if not deps:
            return
        pods = self.kube.get("/api/v1/pods").get("items") or []
        for dep in deps:
            if dep["metadata"].get("deletionTimestamp"):
                continue
            uid = dep["metadata"]["uid"]
            mine = [p for p in pods if any(r.get("uid") == uid and r.get("controller") for r in p["metadata"].get("ownerReferences") or [])]
            self._sync(dep, mine)

    def _sync(self, dep: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        meta = dep["metadata"]
        ns, name = meta["namespace"], meta["name"]
        create, delete = plan_pods(dep, pods)
        for p in delete:
            try:
                self.kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{p['metadata']['name']}")
            except ApiException as exc:
                if not is_status(exc, 404):
                    raise
        template = (dep.get("spec") or {}).get("template") or {}
        h = template_hash(template)
        for _ in range(create):
            tmeta = template.get("metadata") or {}
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{name}-{h}-{secrets.token_hex(3)[:5]}",
                    "namespace": ns,
                    "labels": {**(tmeta.get("labels") or {}), HASH_LABEL: h},
                    "annotations": dict(tmeta.get("annotations") or {}),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": meta["uid"],
                                         "controller": True, "blockOwnerDeletion": True}],
                },
                "spec": json.loads(json.dumps(template.get("spec") or {})),
            }
            self.kube.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
        live = [p for p in pods if _live(p) and p not in delete]
        status = {
            "observedGeneration": meta.get("generation", 1),
            "replicas": len(live) + create,
            "readyReplicas": sum(1 for p in live if _ready(p)),
            "availableReplicas": sum(1 for p in live if _ready(p)),
            "updatedReplicas": sum(1 for p in live if (p["metadata"].get("labels") or {}).get(HASH_LABEL) == h) + create,
        }
        current = dep.get("status") or {}
        if any(current.get(k, 0) != v for k, v in status.items()):
            self.kube.patch_merge(f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/status", {"status": status})
