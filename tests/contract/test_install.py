"""The install a user runs: `kubectl apply -k manifests/`, client-side and `--server-side`, on a
fresh cluster (the emulated API server, and a real v1.36 control plane started for the test:
the session's shared one already holds the CRDs, which would hide an ordering problem). The
CRDs become Established, every sample in manifests/samples/ passes a server-side dry run,
and the operator's startup step that makes its Kopf peering object succeeds."""

from __future__ import annotations

import json
import pathlib
import subprocess
from collections.abc import Iterator

import pytest
from llmops.kube.client import Kube, load_api_client
from llmops.kube.peering import ensure_peering

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*.yaml"))
CRDS = {"trainingjobs.llmops.dev", "finetunejobs.llmops.dev", "inferenceservices.llmops.dev",
        "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
OPERATOR = "system:serviceaccount:llmops-system:llmops-operator"


@pytest.fixture(params=["emulated", "real"])
def fresh_cluster(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[tuple[str, pathlib.Path]]:
    if request.param == "emulated":
        srv = request.getfixturevalue("api_server")
        yield "emulated", srv.write_kubeconfig(tmp_path / "kubeconfig")
        return
    from llmops.sandbox.controlplane import ControlPlane, find_kube_dir

    if find_kube_dir() is None:
        pytest.skip("real control plane absent: no ../shared/kube/start.sh (set LLMOPS_KUBE_DIR)")
    with ControlPlane(state_dir=tmp_path / "kube") as cp:
        yield "real", pathlib.Path(cp.kubeconfig)


def _kubectl(kubeconfig: pathlib.Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), *args], capture_output=True,
                          text=True, timeout=120)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.parametrize("mode", ["client-side", "server-side"])
def test_install_and_samples(fresh_cluster: tuple[str, pathlib.Path], mode: str) -> None:
    side, kubeconfig = fresh_cluster
    _kubectl(kubeconfig, "apply", *(["--server-side"] if mode == "server-side" else []), "-k", str(ROOT / "manifests"))
    _kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
             *[f"crd/{name}" for name in sorted(CRDS)])
    crds = json.loads(_kubectl(kubeconfig, "get", "crd", "-o", "json").stdout)["items"]
    assert {c["metadata"]["name"] for c in crds} >= CRDS
    for sample in SAMPLES:
        out = _kubectl(kubeconfig, "apply", "--server-side", "--dry-run=server", "-f", str(sample), check=False)
        assert out.returncode == 0 and "serverside-applied (server dry run)" in out.stdout, (sample.name, out.stderr)
    # what `llmops operator --peering llmops` does first: its peering object, through its apply
    peering = ensure_peering(Kube(load_api_client(str(kubeconfig))), "llmops", timeout=30)
    assert (peering["kind"], peering["metadata"]["name"]) == ("ClusterKopfPeering", "llmops")
    if side == "real":  # the emulator has no authorizer; the real one checks the install's RBAC
        for verb in ("create", "patch", "watch"):
            can = _kubectl(kubeconfig, "auth", "can-i", verb, "clusterkopfpeerings.kopf.dev", "--as", OPERATOR, check=False)
            assert can.stdout.strip() == "yes", (verb, can.stdout, can.stderr)
