"""The whole sandbox: `Sandbox` starts API server, S3, node agents and the binder; the binder
places pods by capacity and gangs all-or-nothing on a live server (Unschedulable numbers in
the PodScheduled condition); `kubectl logs` reads agent logs; stopping leaves no process
behind; `llmops sandbox` starts, serves kubectl, and exits cleanly on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from llmops.sandbox.node.process import alive
from llmops.sandbox.run import Sandbox
from podkit import eventually

pytestmark = pytest.mark.timeout(180)
GPU = "nvidia.com/gpu"


def descendants(root: int) -> set[int]:
    """Every live process whose ancestry or session leads to `root`'s children (from /proc)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, frontier = set(), {root}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out |= kids
        frontier = kids
    return {p for p in out if alive(p)}


def gpu_pod(name: str, gpus: int, group: str | None = None) -> dict:
    spec = {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "x", "command": [sys.executable, "-c", "import time; time.sleep(60)"],
                        "resources": {"limits": {GPU: str(gpus)}}}],
    }  # fmt: skip
    if group:
        spec["schedulingGroup"] = {"podGroupName": group}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def scheduled(kube, ns: str, name: str) -> dict:
    pod = kube.get(f"/api/v1/namespaces/{ns}/pods/{name}")
    return next((c for c in pod.get("status", {}).get("conditions") or [] if c["type"] == "PodScheduled"), {})


def test_sandbox_binds_gangs_all_or_nothing_and_leaves_nothing_behind(tmp_path: Path) -> None:
    before = descendants(os.getpid())
    with Sandbox(nodes=2, gpus_per_node=8, workdir=tmp_path / "sb", heartbeat_seconds=0.5) as sb:
        kube = sb.api
        assert sb.start_seconds is not None
        print(f"sandbox start: {sb.start_seconds:.3f}s")
        assert {n["metadata"]["name"] for n in kube.get("/api/v1/nodes")["items"]} == {"node-0", "node-1"}
        ns = "gang"
        kube.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
        # a pod larger than any node: Unschedulable with the numbers
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods", gpu_pod("huge", 16))
        cond = eventually(lambda: scheduled(kube, ns, "huge").get("reason") == "Unschedulable" and scheduled(kube, ns, "huge"))
        assert cond["message"] == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu (requested 16, max allocatable 8)."
        # a gang of 3 x 8 GPUs on 2 x 8 GPUs: none bound
        groups = f"/apis/scheduling.k8s.io/v1alpha2/namespaces/{ns}/podgroups"
        kube.request("POST", groups, {"apiVersion": "scheduling.k8s.io/v1alpha2", "kind": "PodGroup", "metadata": {"name": "g3"},
                                      "spec": {"schedulingPolicy": {"gang": {"minCount": 3}}}})  # fmt: skip
        for i in range(3):
            kube.request("POST", f"/api/v1/namespaces/{ns}/pods", gpu_pod(f"g3-{i}", 8, "g3"))
        eventually(lambda: all("only 2/3 pods fit" in scheduled(kube, ns, f"g3-{i}").get("message", "") for i in range(3)))
        assert all(not kube.get(f"/api/v1/namespaces/{ns}/pods/g3-{i}")["spec"].get("nodeName") for i in range(3))
        # shrink the gang's need: delete one member and lower minCount -> both bind, one per node, and run
        kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/g3-2")
        kube.patch_merge(f"{groups}/g3", {"spec": {"schedulingPolicy": {"gang": {"minCount": 2}}}})
        pods = eventually(lambda: all(
            kube.get(f"/api/v1/namespaces/{ns}/pods/g3-{i}").get("status", {}).get("phase") == "Running" for i in range(2)
        ) and [kube.get(f"/api/v1/namespaces/{ns}/pods/g3-{i}") for i in range(2)], timeout=30)  # fmt: skip
        assert {p["spec"]["nodeName"] for p in pods} == {"node-0", "node-1"}
        pids = [pid for p in pods for pid in sb.node(p["spec"]["nodeName"]).pids(ns, p["metadata"]["name"]).values()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
        # logs through the API server, as kubectl logs reads them
        kube.request("POST", f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hello"},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "x", "command": ["echo", "hello sandbox"]}]},
        })  # fmt: skip
        eventually(lambda: kube.get(f"/api/v1/namespaces/{ns}/pods/hello").get("status", {}).get("phase") == "Succeeded")
        resp = kube.api_client.call_api(f"/api/v1/namespaces/{ns}/pods/hello/log", "GET", auth_settings=["BearerToken"],
                                        _preload_content=False, _return_http_data_only=True)  # fmt: skip
        assert resp.data.decode().strip() == "hello sandbox"
    # everything started by the sandbox is gone: pods' process groups, reapers, S3 threads' children
    assert not any(alive(p) for p in pids)
    leftovers = descendants(os.getpid()) - before
    assert not leftovers, f"processes left behind: {leftovers}"


def test_cli_sandbox_serves_kubectl_and_stops_on_sigterm(tmp_path: Path) -> None:
    workdir = tmp_path / "sb"
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmops.cli", "sandbox", "--nodes", "1", "--workdir", str(workdir), "--no-operator"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "export KUBECONFIG=" in line:
                break
        assert any("llmops sandbox up in" in line for line in lines), lines
        kubeconfig = workdir / "kubeconfig"
        assert kubeconfig.exists()
        if shutil.which("kubectl"):
            out = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "get", "nodes"], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0 and "node-0" in out.stdout, out.stderr
        sandbox_procs = descendants(proc.pid) | {proc.pid}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        eventually(lambda: not any(alive(p) for p in sandbox_procs), timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.stdout.close()
