"""The real control plane wrapper (``llmops.sandbox.controlplane``): a process that dies
without stopping its cluster (a test run killed by a timeout) leaves no daemons behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from llmops.sandbox.controlplane import find_kube_dir
from llmops.sandbox.testing import NO_CONTROL_PLANE, eventually

pytestmark = pytest.mark.skipif(find_kube_dir() is None, reason=NO_CONTROL_PLANE)

OWNER = """
import sys, time
from llmops.sandbox.controlplane import ControlPlane
cp = ControlPlane(state_dir=sys.argv[1]).start()
print("started", flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_killed_owner_leaves_no_control_plane_running(tmp_path: Path) -> None:
    state = tmp_path / "kube"
    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "started"
        pids = [int((state / "run" / f"{name}.pid").read_text()) for name in ("etcd", "kube-apiserver", "kube-scheduler")]
        assert all(alive(pid) for pid in pids)
        owner.send_signal(signal.SIGKILL)
        owner.wait(30)
        eventually(lambda: not any(alive(pid) for pid in pids), timeout=60)
    finally:
        owner.kill()
        subprocess.run(["bash", str(find_kube_dir() / "stop.sh"), str(state)], capture_output=True, timeout=60)  # type: ignore[operator]
