"""The reconcile driver (llmops.handlers.driver) with a toy kind, against the emulated and the
real API server: the plan runs once per reconcile; what an apply pass meets that no read shows
(a child name another owner holds, a child the server refuses, an object just created) is
remembered and given to the next plan, and the reconcile that learned it writes nothing and
asks to run again at once; a reconcile that learned nothing writes the status once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from llmops import API_VERSION
from llmops.controller import Context
from llmops.handlers.driver import ApplyMemory, Driver
from llmops.kube.children import owner_selector
from llmops.kube.client import Kube, load_api_client
from llmops.kube.workqueue import Backoff
from llmops.metrics import Metrics
from llmops.plan.conditions import Event
from llmops.sandbox.node.client import Kube as SandboxClient
from llmops.sandbox.run import CRD_DIR, install_crds

SAMPLE = Path(__file__).resolve().parents[2] / "manifests" / "samples" / "trainingjob-minimal.yaml"


@dataclass
class _Status:
    note: str

    def wire(self) -> dict[str, Any]:
        return {"stateReason": self.note}


@dataclass(frozen=True)
class _Plan:
    status: _Status
    desired: list[dict[str, Any]]
    creates: tuple[dict[str, Any], ...] = ()
    events: tuple[Event, ...] = ()
    requeue_after: float | None = 30.0


@dataclass
class ToyKind:
    """Wants one ConfigMap child (``child``), optionally creates one object; the status says
    what the plan saw in the apply memory."""

    child: str = "toy-child"
    create: dict[str, Any] | None = None
    plans: list[ApplyMemory] = field(default_factory=list)
    kind: str = "TrainingJob"
    tolerate_refused_updates: bool = False

    def parse(self, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def child_kinds(self, ctx: Context, body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
        return (("v1", "ConfigMap"),)

    def observe(self, ctx: Context, body: dict[str, Any], owned: dict, memory: ApplyMemory) -> ApplyMemory:
        return memory

    def plan(self, body: dict[str, Any], memory: ApplyMemory, now: dt.datetime) -> _Plan:
        self.plans.append(memory)
        refusal = memory.refusal()
        note = f"foreign={','.join(memory.foreign)} refused={refusal.reason if refusal else ''}"
        meta = body["metadata"]
        child = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}, "metadata": {
            "name": self.child, "namespace": meta["namespace"],
            "labels": dict(p.split("=") for p in owner_selector("TrainingJob", "toy").split(",")),
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "TrainingJob", "name": "toy", "uid": meta["uid"], "controller": True}]}}
        return _Plan(_Status(note), [child], (self.create,) if self.create else (), (Event("Normal", "Planned", note),))

    def record(self, *args: Any) -> None:
        pass

    def forget(self, *args: Any) -> None:
        pass


@pytest.fixture
def kube(kubeconfig: Path) -> Kube:
    installer = SandboxClient(str(kubeconfig))
    install_crds(installer, CRD_DIR)
    installer.close()
    return Kube(load_api_client(str(kubeconfig)))


def _owner(kube: Kube, ns: str) -> dict[str, Any]:
    sample = yaml.safe_load(SAMPLE.read_text())
    return kube.create({**sample, "metadata": {"name": "toy", "namespace": ns}})


def _status(kube: Kube, ns: str) -> str | None:
    return (kube.get(API_VERSION, "TrainingJob", ns, "toy").get("status") or {}).get("stateReason")


def test_a_foreign_child_is_learned_by_one_pass_and_reported_by_the_next(kube: Kube, fresh_namespace: str) -> None:
    ns = fresh_namespace
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "toy-child", "namespace": ns}, "data": {"mine": "yes"}})
    _owner(kube, ns)
    toy = ToyKind()
    reconcile, ctx = Driver(toy), Context(kube=kube, metrics=Metrics())
    assert reconcile(ctx, ns, "toy") == 0.0  # learned: the name is held by another owner
    assert _status(kube, ns) is None and len(toy.plans) == 1  # nothing written, one plan
    assert reconcile(ctx, ns, "toy") == 30.0
    assert _status(kube, ns) == "foreign=ConfigMap/toy-child refused="
    assert len(toy.plans) == 2
    assert kube.get("v1", "ConfigMap", ns, "toy-child")["data"] == {"mine": "yes"}  # never adopted or overwritten
    events = [e["reason"] for e in kube.list("v1", "Event", ns) if e["involvedObject"].get("name") == "toy"]
    assert events == ["Planned"]  # the stale plan announced nothing

    kube.delete("v1", "ConfigMap", ns, "toy-child")  # the user frees the name
    assert reconcile(ctx, ns, "toy") == 0.0  # learned: applied now
    assert reconcile(ctx, ns, "toy") == 30.0
    assert _status(kube, ns) == "foreign= refused="


def test_a_refused_child_is_retried_with_backoff_and_cleared_once_it_passes(kube: Kube, fresh_namespace: str) -> None:
    ns = fresh_namespace
    _owner(kube, ns)
    toy = ToyKind(child="Not_A_Valid_Name")  # the server refuses it (422): a permanent refusal
    reconcile, ctx = Driver(toy), Context(kube=kube, metrics=Metrics())
    assert reconcile(ctx, ns, "toy") == 0.0
    result = reconcile(ctx, ns, "toy")
    assert _status(kube, ns) == "foreign= refused=ChildRejected"
    assert result == 30.0  # permanent: the status says so; no backoff loop
    assert reconcile(ctx, ns, "toy") == 30.0 and len(toy.plans) == 3  # the same refusal again: nothing new

    toy.child = "toy-child"  # a fixed spec: the refused name is no longer wanted
    # A permanent refusal dropped is not news (a job the plan failed for it must stay failed):
    # this reconcile still writes what its plan saw, and the next one the status without it.
    assert reconcile(ctx, ns, "toy") == 30.0
    assert reconcile(ctx, ns, "toy") == 30.0
    assert _status(kube, ns) == "foreign= refused="


def test_a_retried_refusal_backs_off(kube: Kube, fresh_namespace: str) -> None:
    ns = fresh_namespace
    _owner(kube, ns)
    # A Pod whose ServiceAccount does not exist: refused (403) until the account exists.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "toy-pod", "namespace": ns},  # refused before ownership matters
           "spec": {"serviceAccountName": "missing", "containers": [{"name": "c", "image": "x"}]}}

    class PodKind(ToyKind):
        def child_kinds(self, ctx: Context, body: dict[str, Any]) -> tuple[tuple[str, str], ...]:
            return (("v1", "Pod"),)

        def plan(self, body: dict[str, Any], memory: ApplyMemory, now: dt.datetime) -> _Plan:
            p = super().plan(body, memory, now)
            return _Plan(p.status, [pod], events=p.events)

    reconcile, ctx = Driver(PodKind()), Context(kube=kube, metrics=Metrics())
    assert reconcile(ctx, ns, "toy") == 0.0
    result = reconcile(ctx, ns, "toy")
    assert isinstance(result, Backoff) and result.reason == "ServiceAccountMissing", result
    assert _status(kube, ns) == "foreign= refused=ServiceAccountMissing"


def test_an_object_created_once_and_announced_once(kube: Kube, fresh_namespace: str) -> None:
    ns = fresh_namespace
    _owner(kube, ns)
    made = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "toy-made", "namespace": ns}, "data": {"a": "b"}}
    toy = ToyKind(create=made)
    reconcile, ctx = Driver(toy), Context(kube=kube, metrics=Metrics())
    assert reconcile(ctx, ns, "toy") == 0.0  # created: the next plan sees it
    assert reconcile(ctx, ns, "toy") == 30.0  # exists (409): nothing new
    made_cm = kube.get("v1", "ConfigMap", ns, "toy-made")
    assert not made_cm["metadata"].get("ownerReferences")  # created, not a child
    events = [e["reason"] for e in kube.list("v1", "Event", ns) if e["involvedObject"].get("name") == "toy"]
    assert sorted(events) == ["ConfigMapCreated", "Planned"]
