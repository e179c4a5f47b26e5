"""Helpers for node-agent tests: a polling helper and a small pod builder/inspector."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from llmops.sandbox.node.agent import NodeAgent
from llmops.sandbox.node.client import ApiException, Kube

T = TypeVar("T")
NODE = "node-a"



def eventually(fn: Callable[[], T], timeout: float = 20.0, interval: float = 0.05) -> T:
    """Poll until `fn` returns a truthy value (returned) or raises nothing truthy in time."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (AssertionError, ApiException, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s; last: {last!r}")


def make_pod(name: str, code: str | None = None, *, command: list[str] | None = None, node: str | None = NODE, restart: str = "Never",
             **container: Any) -> dict[str, Any]:
    """A pod whose single container runs `code` with this interpreter (or `command`)."""
    c = {"name": "main", "image": "sandbox", "command": command or [sys.executable, "-c", code or "pass"], **container}
    spec: dict[str, Any] = {"restartPolicy": restart, "terminationGracePeriodSeconds": 2, "containers": [c]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def create(kube: Kube, ns: str, obj: dict[str, Any], plural: str = "pods", api: str = "/api/v1") -> dict[str, Any]:
    return kube.request("POST", f"{api}/namespaces/{ns}/{plural}", obj)


def get_pod(kube: Kube, ns: str, name: str) -> dict[str, Any]:
    return kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def phase_is(kube: Kube, ns: str, name: str, *phases: str) -> dict[str, Any] | None:
    pod = get_pod(kube, ns, name)
    return pod if (pod.get("status") or {}).get("phase") in phases else None


def main_status(pod: dict[str, Any]) -> dict[str, Any]:
    return pod["status"]["containerStatuses"][0]


def condition(pod: dict[str, Any], kind: str) -> str | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c["type"] == kind:
            return c["status"]
    return None


def pod_root(agent: NodeAgent, pod: dict[str, Any]) -> Path:
    meta = pod["metadata"]
    return agent.pods_dir / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}" / "root"
