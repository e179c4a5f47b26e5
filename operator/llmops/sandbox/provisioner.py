"""A local-directory volume provisioner for the sandbox on a real control plane.

A real control plane without a storage driver leaves every PersistentVolumeClaim Pending,
and the real scheduler (its VolumeBinding plugin) then keeps every pod that mounts one
unschedulable. Real clusters ship a provisioner for that (a CSI driver, or kind's
local-path-provisioner); this is the sandbox's: a default StorageClass whose provisioner is
this loop, which answers each Pending claim of that class with a PersistentVolume pre-bound
to it (``claimRef``). The controller manager's PV controller does the binding, as it would
for any external provisioner. The volume is a ``hostPath`` at the directory the process node
agents already use for that claim (``<pvc root>/<namespace>/<claim>``), so the data lives
where the pods read it. Released volumes of this class are deleted (reclaim policy Delete);
the directory is kept, as the agents keep it.

The emulated API server runs no PV controller and its binder ignores claims, so the sandbox
starts this only on a real control plane.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops.sandbox.node.client import ApiException, Kube, is_status
from llmops.sandbox.polling import PollingController

#: The default StorageClass the sandbox installs on a real control plane.
STORAGE_CLASS = "sandbox-local"
#: Its provisioner name (what the PV controller waits for, and what we answer to).
PROVISIONER = "llmops.dev/sandbox-local"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"  # the PV controller reads: whose volume this is
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"  # admission reads: default for claims without a class


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": STORAGE_CLASS, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate",
    }  # fmt: skip


def volume_for(claim: dict[str, Any], pvc_root: Path) -> dict[str, Any]:
    """The PersistentVolume that answers `claim` (pure)."""
    meta, spec = claim["metadata"], claim.get("spec") or {}
    size = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": f"pvc-{meta['uid']}", "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": STORAGE_CLASS,
            "volumeMode": spec.get("volumeMode", "Filesystem"),
            "hostPath": {"path": str(pvc_root / meta["namespace"] / meta["name"]), "type": "DirectoryOrCreate"},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                         "name": meta["name"], "uid": meta["uid"]},
        },
    }  # fmt: skip


def wants_volume(claim: dict[str, Any]) -> bool:
    spec, meta = claim.get("spec") or {}, claim["metadata"]
    return (spec.get("storageClassName") == STORAGE_CLASS and not spec.get("volumeName")
            and not meta.get("deletionTimestamp") and (claim.get("status") or {}).get("phase", "Pending") == "Pending")


class Provisioner(PollingController):
    """Polls claims and volumes every ``interval`` seconds; see the module essay."""

    thread_name = "sandbox-provisioner"

    def __init__(self, kube: Kube, pvc_root: Path, interval: float = 0.3) -> None:
        super().__init__(kube, interval)
        self.pvc_root = Path(pvc_root).resolve()

    def install(self) -> Provisioner:
        try:
            self.kube.request("POST", "/apis/storage.k8s.io/v1/storageclasses", storage_class())
        except ApiException as exc:
            if not is_status(exc, 409):
                raise
        return self

    def step(self) -> None:
        claims = self.kube.get("/api/v1/persistentvolumeclaims").get("items") or []
        for claim in filter(wants_volume, claims):
            (self.pvc_root / claim["metadata"]["namespace"] / claim["metadata"]["name"]).mkdir(parents=True, exist_ok=True)
            try:
                self.kube.request("POST", "/api/v1/persistentvolumes", volume_for(claim, self.pvc_root))
            except ApiException as exc:
                if not is_status(exc, 409):  # already answered; the PV controller binds it
                    raise
        for pv in self.kube.get("/api/v1/persistentvolumes").get("items") or []:
            mine = (pv["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER
            if mine and (pv.get("status") or {}).get("phase") == "Released":
                try:
                    self.kube.request("DELETE", f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                except ApiException as exc:
                    if not is_status(exc, 404):
                        raise
