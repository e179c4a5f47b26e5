"""Events are keyed by the stored status a transition leaves: a reconcile retried after a
failed status write announces nothing twice, even when its message has moved on; a later
transition with the same reason (a flap) is announced again."""

from __future__ import annotations

import datetime as dt

from llmops.handlers.writeback import write_back
from llmops.kube.client import ApiError
from llmops.kube.events import transition_key
from llmops.plan.conditions import Event

NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


class RecordingKube:
    """Records Event names and status writes; a status write fails with 409 while `moved`."""

    def __init__(self) -> None:
        self.events: dict[str, dict] = {}
        self.writes: list[dict] = []
        self.moved = False

    def create(self, obj: dict) -> dict:
        name = obj["metadata"]["name"]
        if name in self.events:
            raise ApiError(409, "AlreadyExists", "exists")
        self.events[name] = obj
        return obj

    def replace_status(self, api_version, kind, namespace, name, status, resource_version=None):  # noqa: ANN001
        if self.moved:
            raise ApiError(409, "Conflict", "the object has been modified")
        self.writes.append(status)
        return status


def job(status: dict) -> dict:
    return {"apiVersion": "llmops.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": "j", "namespace": "default", "uid": "u1", "resourceVersion": "7"}, "status": status}


def pending(message: str) -> dict:
    return {"conditions": [{"type": "Queued", "status": "True", "reason": "GangPending", "message": message}]}


def test_a_retried_transition_is_announced_once_even_with_a_newer_message() -> None:
    kube = RecordingKube()
    stored = job({})
    kube.moved = True
    assert write_back(kube, stored, pending("waiting 3s"), [Event("Normal", "GangPending", "waiting 3s")], NOW) is False
    kube.moved = False
    assert write_back(kube, stored, pending("waiting 5s"), [Event("Normal", "GangPending", "waiting 5s")], NOW) is True
    assert [e["message"] for e in kube.events.values()] == ["waiting 3s"]
    assert kube.writes == [pending("waiting 5s")]


def test_the_same_reason_after_a_landed_write_is_a_new_transition() -> None:
    kube = RecordingKube()
    write_back(kube, job({}), pending("first"), [Event("Normal", "GangPending", "first")], NOW)
    running = {"conditions": [{"type": "Running", "status": "True", "reason": "AllPodsRunning"}]}
    write_back(kube, job(pending("first")), running, [Event("Normal", "AllPodsRunning", "running")], NOW)
    write_back(kube, job(running), pending("again"), [Event("Normal", "GangPending", "again")], NOW)
    assert [e["reason"] for e in kube.events.values()] == ["GangPending", "AllPodsRunning", "GangPending"]


def test_an_unchanged_status_is_not_written_and_two_events_of_one_reason_both_go_out() -> None:
    kube = RecordingKube()
    stored = job(pending("x"))
    write_back(kube, stored, pending("x"), [Event("Warning", "PodFailed", "w0"), Event("Warning", "PodFailed", "w1")], NOW)
    assert kube.writes == []
    assert sorted(e["message"] for e in kube.events.values()) == ["w0", "w1"]


def test_keys_depend_on_the_stored_status_reason_and_position_only() -> None:
    assert transition_key({"a": 1, "b": 2}, "R", 0) == transition_key({"b": 2, "a": 1}, "R", 0)
    assert len({transition_key({}, "R", 0), transition_key({}, "R", 1), transition_key({}, "S", 0),
                transition_key({"a": 1}, "R", 0)}) == 4
