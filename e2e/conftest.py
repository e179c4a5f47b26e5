"""e2e scenarios run against a cluster given by kubeconfig, once per cluster:

- ``emulated``: the embedded sandbox (emulated API server, process node agents, S3, the
  operator as a subprocess);
- ``real``: the same sandbox on a real control plane (``Sandbox(control_plane=True)``: a real
  kube-apiserver, scheduler and controller manager from ``../shared/kube``, the process node
  agents joined to it, S3 on loopback, the operator out of cluster); skipped, with the
  reason, only where no control plane is available;
- ``external``, only with LLMOPS_E2E_KUBECONFIG set: that cluster, with the operator run out
  of cluster by this fixture (`llmops operator --standalone`); the cluster needs the CRDs
  (`kubectl apply -k crds/`) and nodes that can run the trainer image (or `llmops node`
  agents joined to it), and LLMOPS_E2E_CHECKPOINT_URI pointing at a bucket/PVC the pods reach.

On the sandboxes the nodes run the vLLM stand-in for the server image (``serving="standin"``):
what serves is decided by the nodes, never by which API server is behind the kubeconfig.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane

EXTERNAL = ["external"] if os.environ.get("LLMOPS_E2E_KUBECONFIG") else []


@dataclass
class Cluster:
    kubeconfig: str
    namespace: str
    checkpoint_uri: str
    sandbox: object | None = None

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        out = subprocess.run(["kubectl", "--kubeconfig", self.kubeconfig, "-n", self.namespace, *args],
                             input=stdin, capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {out.stderr}")
        return out.stdout


@pytest.fixture(scope="session", params=[*CLUSTERS, *EXTERNAL])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if request.param == "external":
        real = os.environ["LLMOPS_E2E_KUBECONFIG"]
        ns = f"llmops-e2e-{os.getpid()}"
        c = Cluster(real, ns, os.environ.get("LLMOPS_E2E_CHECKPOINT_URI", "s3://llmops-e2e/checkpoints"))
        subprocess.run(["kubectl", "--kubeconfig", real, "create", "namespace", ns], check=True)
        log = open(tmp_path_factory.mktemp("op") / "operator.log", "wb")  # noqa: SIM115
        op = subprocess.Popen([sys.executable, "-m", "llmops.cli", "operator", "--kubeconfig", real,
                               "--standalone", "--namespace", ns, "--metrics-port", "0", "--liveness", ""],
                              stdout=log, stderr=subprocess.STDOUT)
        try:
            yield c
        finally:
            op.terminate()
            op.wait(30)
            subprocess.run(["kubectl", "--kubeconfig", real, "delete", "namespace", ns, "--wait=false"])
        return
    from llmops.sandbox.run import Sandbox

    with Sandbox(nodes=2, workdir=Path(tmp_path_factory.mktemp("e2e-sandbox")), operator=True, serving="standin",
                 control_plane=sandbox_control_plane(request.param)) as sb:
        yield Cluster(sb.kubeconfig, "default", "s3://llmops-sandbox/e2e", sandbox=sb)
