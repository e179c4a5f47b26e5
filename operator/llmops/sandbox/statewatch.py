"""Test support: every ``status.state`` the objects of one kind pass through, from a watch.

A watch, not polling: the API server sends every write, so a state held for a single
reconcile (the flicker issue 19 was about) is seen. ``backward(sequence)`` says which steps
of a job's sequence go backward: out of a terminal state, or from Running back to Queued
without a Restarting (or a Suspended) between them.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

from kubernetes import client, watch

from llmops.api import conditions as C

TERMINAL = (C.SUCCEEDED, C.FAILED)


def backward(states: list[str]) -> list[str]:
    """The backward steps of one job's state sequence (consecutive repeats collapsed)."""
    problems = []
    for before, after in itertools.pairwise(states):
        if before in TERMINAL and after != before:
            problems.append(f"{before} -> {after}: a finished job came back")
        elif before == C.RUNNING and after == C.QUEUED:
            problems.append(f"{before} -> {after}: a running job went back to the queue")
    return problems


class StateWatch:
    """Records, per object (name and uid), the sequence of distinct ``status.state`` values,
    and every condition (type, status, reason) seen.

    Reconnects on a closed stream from the last resourceVersion and relists on 410 Gone, so
    nothing between two streams is lost; DELETED events end nothing (a recreated object has
    another uid)."""

    def __init__(self, api_client: Any, group: str, version: str, plural: str, namespace: str) -> None:
        self.api = client.CustomObjectsApi(api_client)
        self.where = (group, version, namespace, plural)
        self.states: dict[tuple[str, str], list[str]] = {}
        #: every (condition type, status, reason) any object carried
        self.conditions: set[tuple[str, str, str]] = set()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True, name="state-watch")

    def __enter__(self) -> StateWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def of(self, name: str) -> list[str]:
        """The sequence of the object called `name` (all its incarnations, in order)."""
        with self.lock:
            return [s for (n, _), seq in self.states.items() if n == name for s in seq]

    def backward(self) -> dict[str, list[str]]:
        """Every object whose sequence went backward, with the steps."""
        with self.lock:
            found = {f"{name} ({uid[:8]})": backward(seq) for (name, uid), seq in self.states.items()}
        return {k: v for k, v in found.items() if v}

    def _record(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.conditions.update((c.get("type", ""), c.get("status", ""), c.get("reason", ""))
                                   for c in (obj.get("status") or {}).get("conditions") or [])
        state = (obj.get("status") or {}).get("state")
        if not state:
            return
        key = (obj["metadata"]["name"], obj["metadata"].get("uid", ""))
        with self.lock:
            seq = self.states.setdefault(key, [])
            if not seq or seq[-1] != state:
                seq.append(state)

    def _run(self) -> None:
        rv: str | None = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    listed = self.api.list_namespaced_custom_object(*self.where)
                    for obj in listed.get("items", []):
                        self._record(obj)
                    rv = listed["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(self.api.list_namespaced_custom_object, *self.where,
                                                  resource_version=rv, timeout_seconds=2):
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        rv = None  # 410 Gone as an event: relist
                        break
                    rv = obj["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(obj)
                    if self.stop.is_set():
                        return
            except client.ApiException as e:
                if e.status == 410:
                    rv = None
                else:
                    self.stop.wait(0.2)
            except Exception:  # noqa: BLE001 - a cut stream or a restarting server: try again
                self.stop.wait(0.2)
