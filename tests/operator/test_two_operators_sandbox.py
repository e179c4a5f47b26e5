"""Two operators at once (reliability scenario 22: a rolling-update overlap or a second
install) on the sandbox: with mandatory Kopf peering exactly one acts, the other logs that it
stays paused (Kopf starts it paused until the peering
object says it is the highest live priority) and reconciles nothing, and exactly one set of children exists. When the active one
exits (SIGTERM, as in a rollout) it leaves the peering object and the other takes over.

Two real `llmops operator --peering llmops` processes; which one reconciles is read from each
process's own Prometheus /metrics (llmops_reconcile_total).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox, operator_available
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed")
NS = "default"
TJ = ("llmops.dev/v1alpha1", "TrainingJob")
SLEEP = ["python", "-c", "import time; time.sleep(600)"]
PEERING = Path(__file__).resolve().parents[2] / "manifests" / "operator" / "kopf-peering.yaml"


eventually = partial(sandbox_eventually, timeout=60.0, interval=0.2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Operator:
    def __init__(self, sb: Sandbox, priority: int, log: Path) -> None:
        self.port, self.log = free_port(), log
        argv = [sys.executable, "-m", "llmops.cli", "operator", "--kubeconfig", sb.kubeconfig, "--peering", "llmops",
                "--priority", str(priority), "--metrics-port", str(self.port), "--liveness", ""]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(argv, env={**os.environ, **sb.s3_env}, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def reconciles(self) -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2).read().decode()
        except OSError:
            return -1.0
        return sum(s.value for f in text_string_to_metric_families(text) if f.name == "llmops_reconcile"
                   for s in f.samples if s.name == "llmops_reconcile_total" and s.labels.get("kind") == "TrainingJob")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def job(name: str) -> dict:
    return {"apiVersion": TJ[0], "kind": TJ[1], "metadata": {"name": name, "namespace": NS},
            "spec": {"image": "llmops/trainer:dev", "command": SLEEP, "nodes": 2, "procsPerNode": 1,
                     "resources": {"gpus": 0, "cpu": "100m", "memory": "256Mi"}}}


def running(kube: Kube, name: str) -> bool:
    tj = kube.get(*TJ, NS, name)
    return any(c["type"] == "Running" and c["status"] == "True" for c in ((tj or {}).get("status") or {}).get("conditions", []))


@pytest.fixture(params=CLUSTERS)
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Sandbox, Kube]]:
    with Sandbox(nodes=2, workdir=tmp_path / "sbx", operator=False, control_plane=sandbox_control_plane(request.param)) as sb:
        kube = Kube(load_api_client(sb.kubeconfig))
        # As the install does: Kopf's peering CRDs; each operator applies the peering object
        # itself at startup (llmops.kube.peering.ensure_peering).
        apply = ["kubectl", "--kubeconfig", sb.kubeconfig, "apply", "-f", str(PEERING)]
        eventually(lambda: subprocess.run(apply, capture_output=True, timeout=60).returncode == 0, timeout=30)
        yield sb, kube


def peers(kube: Kube) -> dict:
    return (kube.get("kopf.dev/v1", "ClusterKopfPeering", None, "llmops") or {}).get("status") or {}


def test_exactly_one_operator_acts_and_the_other_takes_over(cluster: tuple[Sandbox, Kube], tmp_path: Path) -> None:
    sb, kube = cluster
    high = Operator(sb, 200, tmp_path / "high.log")
    low = None
    try:
        eventually(lambda: len(peers(kube)) == 1, timeout=30)
        low = Operator(sb, 100, tmp_path / "low.log")
        eventually(lambda: len(peers(kube)) == 2, timeout=30)

        kube.create(job("first"))
        eventually(lambda: running(kube, "first"), timeout=60)
        assert eventually(lambda: high.reconciles() > 0) and low.reconciles() == 0
        assert "Resuming operations" not in (tmp_path / "low.log").read_text()  # paused from the start
        pods = kube.list("v1", "Pod", NS, "llmops.dev/job-name=first")
        assert sorted(p["metadata"]["name"] for p in pods) == ["first-w0-a0", "first-w1-a0"]  # one set of children

        high.stop()  # a rollout: the old operator exits and leaves the peering object
        eventually(lambda: "Resuming operations after the pause" in (tmp_path / "low.log").read_text(), timeout=30)
        kube.create(job("second"))
        eventually(lambda: running(kube, "second"), timeout=60)
        assert low.reconciles() > 0
        assert len(kube.list("v1", "Pod", NS, "llmops.dev/job-name=first")) == 2  # the takeover touched nothing
    finally:
        high.stop()
        if low is not None:
            low.stop()
