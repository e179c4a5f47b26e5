"""GitOps helpers for the sandbox tests in tests/admin: apply the way Argo CD does, compute the
spec the API server stores, and watch a live object for drift while the operator works."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import yaml
from llmops.kube.client import Kube
from llmops.sandbox.run import Sandbox
from llmops.sandbox.testing import eventually as sandbox_eventually

ROOT = Path(__file__).resolve().parents[2]
INSTANCE = "app.kubernetes.io/instance"  # Argo CD's default tracking label
API = "llmops.dev/v1alpha1"
PLURALS = {"TrainingJob": "trainingjobs", "InferenceService": "inferenceservices", "FinetuneJob": "finetunejobs"}


eventually = partial(sandbox_eventually, timeout=120.0, interval=0.2)


def is_true(obj: dict | None, type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in ((obj or {}).get("status") or {}).get("conditions", []))


def kubectl(sb: Sandbox, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", "--kubeconfig", sb.kubeconfig, *args], input=stdin,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (args, out.stderr)
    return out.stdout


def argo_sync(sb: Sandbox, body: dict) -> None:
    """Argo CD's default sync is a client-side apply; with ServerSideApply=true it is a
    server-side apply under its own field manager. Do both, as a migrating app does."""
    text = yaml.safe_dump(body)
    kubectl(sb, "apply", "-f", "-", stdin=text)
    argo_resync(sb, body)


def argo_resync(sb: Sandbox, body: dict) -> None:
    kubectl(sb, "apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-",
            stdin=yaml.safe_dump(body))


def crd_defaulted(kind: str, spec: dict) -> dict:
    """The spec as the API server stores it: the manifest plus the CRD's scalar schema defaults
    (structural defaulting), which Argo CD's diff ignores because the manifest never set them."""
    crd = yaml.safe_load((ROOT / "crds" / f"llmops.dev_{PLURALS[kind]}.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def walk(value, s):  # noqa: ANN001, ANN202
        if isinstance(value, dict) and "properties" in s:
            out = dict(value)
            for key, sub in s["properties"].items():
                if key not in out and "default" in sub:
                    assert not isinstance(sub["default"], (dict, list)), key  # no object defaults in spec
                    out[key] = sub["default"]
                elif key in out:
                    out[key] = walk(out[key], sub)
            return out
        if isinstance(value, list) and isinstance(s.get("items"), dict):
            return [walk(v, s["items"]) for v in value]
        return value

    return walk(spec, schema)


class DriftWatch:
    """Polls one CR and its children; records spec drift, operator annotations on the CR,
    children carrying Argo CD's tracking label, and the Argo CD health of each poll."""

    def __init__(self, kube: Kube, applied: dict, health: Callable[[dict], dict],
                 children: list[tuple[str, str, str]]) -> None:
        self.kube, self.applied, self.health = kube, applied, health
        self.kind, self.ns, self.name = applied["kind"], applied["metadata"]["namespace"], applied["metadata"]["name"]
        self.children = children  # (apiVersion, kind, label selector)
        self.expected = crd_defaulted(self.kind, applied["spec"])
        self.healths: list[str] = []  # changes only
        self.problems: list[str] = []
        self.polls = 0
        self.children_seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def check(self) -> None:
        live = self.kube.get(API, self.kind, self.ns, self.name)
        if live is None:
            return
        self.polls += 1
        h = self.health(live)["status"]
        if not self.healths or self.healths[-1] != h:
            self.healths.append(h)
        if live["spec"] != self.expected:
            self.problems.append(f"spec drift: {live['spec']!r}")
        mine = set(self.applied["metadata"].get("annotations") or {})
        for key in (live["metadata"].get("annotations") or {}):
            if key not in mine and (key.startswith("kopf.") or "llmops" in key):
                self.problems.append(f"operator annotation on the CR: {key}")
        for api_version, kind, selector in self.children:
            for child in self.kube.list(api_version, kind, self.ns, selector):
                self.children_seen.add(f"{kind}/{child['metadata']['name']}")
                if INSTANCE in (child["metadata"].get("labels") or {}):
                    self.problems.append(f"{kind}/{child['metadata']['name']} carries {INSTANCE}")

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - record, keep polling
                self.problems.append(f"poll error: {e!r}")
            time.sleep(0.2)

    def settle(self, polls: int = 3) -> None:
        """Wait until a few more polls have run (after the last action)."""
        at = self.polls
        eventually(lambda: self.polls >= at + polls)

    def __enter__(self) -> DriftWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
