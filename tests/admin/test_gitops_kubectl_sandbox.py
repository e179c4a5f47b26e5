"""GitOps and kubectl experience on the sandbox (real operator subprocess, emulated API server,
process node agents running the tiny CPU TrainingJob).

One job is applied the way Argo CD does it (client-side `kubectl apply`, then `kubectl apply
--server-side`), carrying Argo CD's app-instance label. While the operator runs it through a worker
kill, a gang restart and completion, a watcher polls the live object and records any moment where
the spec differs from the applied manifest (plus the CRD's scalar schema defaults, which the API
server fills in at create time and Argo CD's diff ignores), an operator annotation appears, or a
child carries the app-instance label. The kubectl tests then read the same job: `kubectl get llmops`, the `tj`
printer columns against the status, and `kubectl describe` events, one line per transition.
"""

from __future__ import annotations

import copy
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox, operator_available

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "trainingjob-tiny-cpu.yaml"
NAME = "gitops"
INSTANCE = "app.kubernetes.io/instance"
API = "llmops.dev/v1alpha1"

pytestmark = pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed")


def eventually(fn, timeout: float = 120.0, interval: float = 0.2):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


def is_true(obj: dict | None, type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in ((obj or {}).get("status") or {}).get("conditions", []))


def kubectl(sb: Sandbox, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", "--kubeconfig", sb.kubeconfig, *args], input=stdin,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, (args, out.stderr)
    return out.stdout


def manifest() -> dict:
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = NAME
    body["metadata"]["namespace"] = "default"
    body["metadata"]["labels"] = {INSTANCE: "llmops-demo"}  # Argo CD's default tracking label
    body["spec"]["totalSteps"] = 40
    body["spec"]["checkpoint"]["uri"] = f"s3://llmops-sandbox/checkpoints/{NAME}"
    body["spec"].setdefault("template", {})["env"] = [{"name": "TRAIN_STEP_DELAY", "value": "0.1"}]
    return body


def crd_defaulted(spec: dict) -> dict:
    """The spec as the API server stores it: the manifest plus the CRD's scalar schema defaults
    (structural defaulting), which Argo CD's diff ignores because the manifest never set them."""
    crd = yaml.safe_load((ROOT / "crds" / "llmops.dev_trainingjobs.yaml").read_text())
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
    """Polls the CR and its children; records spec drift, operator annotations, leaked labels."""

    def __init__(self, kube: Kube, applied: dict, health) -> None:  # noqa: ANN001
        self.kube, self.applied, self.health = kube, applied, health
        self.healths: list[str] = []  # Argo CD health of each poll (changes only)
        self.expected = crd_defaulted(applied["spec"])
        self.problems: list[str] = []
        self.polls = 0
        self.children_seen: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def check(self) -> None:
        live = self.kube.get(API, "TrainingJob", "default", NAME)
        if live is None:
            return
        self.polls += 1
        h = self.health(live)["status"]
        if not self.healths or self.healths[-1] != h:
            self.healths.append(h)
        if live["spec"] != self.expected:
            self.problems.append(f"spec drift: {live['spec']!r}")
        for key in (live["metadata"].get("annotations") or {}):
            if key.startswith("kopf.") or "llmops" in key:
                self.problems.append(f"operator annotation on the CR: {key}")
        for kind in ("Pod", "Service", "ConfigMap"):
            for child in self.kube.list("v1", kind, "default", f"llmops.dev/job-name={NAME}"):
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

    def __enter__(self) -> "DriftWatch":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, argo_health):  # noqa: ANN001, ANN201
    """Apply like Argo CD, kill a worker once a checkpoint exists, wait for the end."""
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True) as sb:
        kube = Kube(load_api_client(sb.kubeconfig))
        applied = manifest()
        text = yaml.safe_dump(applied)
        get = lambda: kube.get(API, "TrainingJob", "default", NAME)  # noqa: E731
        with DriftWatch(kube, copy.deepcopy(applied), argo_health) as watch:
            kubectl(sb, "apply", "-f", "-", stdin=text)  # Argo CD's default (client-side) sync
            kubectl(sb, "apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-", stdin=text)
            eventually(lambda: (((get() or {}).get("status") or {}).get("checkpoint") or {}).get("step", 0) >= 5)
            sb.fault("default", f"{NAME}-w1-a0", "kill")
            final = eventually(lambda: (t := get()) and (is_true(t, "Succeeded") or is_true(t, "Failed")) and t, timeout=240)
            kubectl(sb, "apply", "--server-side", "--force-conflicts", "--field-manager=argocd-controller", "-f", "-", stdin=text)  # a re-sync after the run
            polls_at_end = watch.polls
            eventually(lambda: watch.polls >= polls_at_end + 3)
        yield {"sb": sb, "kube": kube, "applied": applied, "final": final, "watch": watch}


def test_live_spec_never_diverges_from_the_applied_manifest(run) -> None:  # noqa: ANN001
    watch, final = run["watch"], run["final"]
    assert is_true(final, "Succeeded"), final["status"]["conditions"]
    assert final["status"]["restarts"]["total"] >= 1, final["status"]["restarts"]  # the kill restarted the gang
    assert watch.polls > 20 and any(c.startswith("Pod/") for c in watch.children_seen)
    assert watch.problems == []
    expected = crd_defaulted(run["applied"]["spec"])
    assert final["spec"] == expected
    added = {k for k in expected if k not in run["applied"]["spec"]}
    assert added <= {"launcher"}, added  # the only top-level default a minimal manifest picks up
    assert final["metadata"]["labels"] == {INSTANCE: "llmops-demo"}
    assert final["metadata"]["generation"] == 1  # nothing ever wrote spec


def test_argo_health_follows_the_run(run, argo_health) -> None:  # noqa: ANN001
    """The Lua health check on the live object: Progressing while it runs (a restart included),
    Healthy at the end, never Degraded for a job that recovers."""
    healths = run["watch"].healths
    assert healths[0] == "Progressing" and healths[-1] == "Healthy", healths
    assert "Degraded" not in healths, healths
    assert argo_health(run["final"])["status"] == "Healthy"


def test_kubectl_get_llmops_lists_the_kinds(run) -> None:  # noqa: ANN001
    out = kubectl(run["sb"], "get", "llmops", "-A")
    assert f"trainingjob.llmops.dev/{NAME}" in out
    resources = kubectl(run["sb"], "api-resources", "--categories=llmops", "-o", "name").split()
    assert sorted(resources) == ["finetunejobs.llmops.dev", "inferenceservices.llmops.dev", "trainingjobs.llmops.dev"]


def test_kubectl_get_tj_columns_show_the_status(run) -> None:  # noqa: ANN001
    lines = kubectl(run["sb"], "get", "tj", NAME).splitlines()
    header, row = lines[0].split(), lines[1].split()
    assert header[:9] == ["NAME", "NODES", "GPUS/NODE", "STEP", "TOTAL", "CKPT", "RESTARTS", "RUNNING", "SUCCEEDED"]
    st = run["kube"].get(API, "TrainingJob", "default", NAME)["status"]
    facts = dict(zip(header, row))
    assert facts["NAME"] == NAME and facts["NODES"] == "2" and facts["GPUS/NODE"] == "0"
    assert facts["STEP"] == str(st["progress"]["step"]) == "40"
    assert facts["TOTAL"] == "40"
    assert facts["CKPT"] == str(st["checkpoint"]["step"])
    assert facts["RESTARTS"] == str(st["restarts"]["total"]) and st["restarts"]["total"] >= 1, st["restarts"]
    assert facts["RUNNING"] == "False" and facts["SUCCEEDED"] == "True"


def test_kubectl_describe_shows_one_line_per_transition(run) -> None:  # noqa: ANN001
    out = kubectl(run["sb"], "describe", "tj", NAME)
    print(out)  # shown with -rP
    assert "Events:" in out
    events_block = out.split("Events:", 1)[1].splitlines()
    rows = [l for l in events_block if l.strip() and not l.strip().startswith(("Type", "----"))]
    assert rows, out
    events = [e for e in run["kube"].list("v1", "Event", "default") if e["involvedObject"]["name"] == NAME]
    assert events and all("\n" not in e["message"] for e in events)
    for e in events:  # every Event is one row naming its reason and message
        assert any(e["reason"] in r and e["message"][:40] in r for r in rows), (e["reason"], e["message"], rows)
    reasons = {e["reason"] for e in events}
    assert len([e for e in events if "restart" in e["message"].lower()]) >= 1, reasons
