"""The sandbox's local-directory provisioner (real control plane only): which claims it
answers, and the PersistentVolume it answers with (pre-bound, at the agents' directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmops.sandbox.provisioner import PROVISIONED_BY, PROVISIONER, STORAGE_CLASS, storage_class, volume_for, wants_volume


def claim(name: str = "cache", *, cls: str | None = STORAGE_CLASS, phase: str = "Pending", volume: str | None = None,
          deleting: bool = False, **spec: object) -> dict:
    meta: dict = {"name": name, "namespace": "ns", "uid": "u-1"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    body: dict = {"metadata": meta, "spec": {**({"storageClassName": cls} if cls else {}), **spec}, "status": {"phase": phase}}
    if volume:
        body["spec"]["volumeName"] = volume
    return body


@pytest.mark.parametrize(("body", "wanted"), [
    (claim(), True),
    (claim(cls=None), False),  # no class: not ours (admission gives ours to claims created after it)
    (claim(cls="other"), False),
    (claim(phase="Bound", volume="pvc-u-1"), False),
    (claim(volume="pvc-u-1"), False),  # answered, the PV controller not done yet
    (claim(deleting=True), False),
])
def test_which_claims_are_answered(body: dict, wanted: bool) -> None:
    assert wants_volume(body) is wanted


def test_the_volume_is_pre_bound_at_the_agents_directory(tmp_path: Path) -> None:
    pv = volume_for(claim(accessModes=["ReadWriteMany"], resources={"requests": {"storage": "5Gi"}}), tmp_path)
    assert pv["metadata"] == {"name": "pvc-u-1", "annotations": {PROVISIONED_BY: PROVISIONER}}
    spec = pv["spec"]
    assert spec["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns", "name": "cache", "uid": "u-1"}
    assert spec["hostPath"]["path"] == str(tmp_path / "ns" / "cache")  # where the node agents mount the claim
    assert (spec["capacity"], spec["accessModes"], spec["storageClassName"]) == ({"storage": "5Gi"}, ["ReadWriteMany"], STORAGE_CLASS)
    assert volume_for(claim(), tmp_path)["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_the_storage_class_is_the_default_one() -> None:
    sc = storage_class()
    assert sc["provisioner"] == PROVISIONER and sc["metadata"]["name"] == STORAGE_CLASS
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
