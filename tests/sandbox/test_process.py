"""Process groups and the orphan reaper, with real processes: a container's whole tree dies
with its leader, the reaper kills every registered group when its agent dies even by SIGKILL,
and resident memory of a group is measured from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from llmops.sandbox.node.process import Proc, Reaper, alive, group_rss


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def wait_pids(path: Path, count: int) -> list[int]:
    assert wait_for(lambda: path.exists() and len(path.read_text().split()) >= count)
    return [int(p) for p in path.read_text().split()]


def test_leader_exit_kills_the_rest_of_the_group(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the leader starts `sleep` in the background, records its pid, and exits 3 without waiting
    script = f"sleep 60 & echo $! >> {pids}; exit 3"
    proc = Proc(["sh", "-c", script], {"PATH": os.environ["PATH"]}, tmp_path, tmp_path / "log", None)
    (child,) = wait_pids(pids, 1)
    assert wait_for(lambda: proc.poll() is not None)
    assert proc.exit is not None and proc.exit.exit_code == 3 and proc.exit.signal is None
    assert wait_for(lambda: not alive(child)), "the group outlived its leader"


def test_signal_exit_is_128_plus_signal(tmp_path: Path) -> None:
    proc = Proc(["sleep", "60"], {"PATH": os.environ["PATH"]}, tmp_path, tmp_path / "log", None)
    proc.signal(signal.SIGTERM)
    assert wait_for(lambda: proc.poll() is not None)
    assert (proc.exit.exit_code, proc.exit.signal) == (143, signal.SIGTERM)


AGENT = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from llmops.sandbox.node.process import Proc, Reaper
    out = Path(sys.argv[1])
    reaper = Reaper()
    procs = [Proc(["sh", "-c", "sleep 300 & echo $! >> " + str(out) + "; echo $$ >> " + str(out) + "; wait"],
                  {"PATH": os.environ["PATH"]}, out.parent, out.parent / f"log{i}", reaper) for i in range(2)]
    print(reaper.pid, flush=True)
    time.sleep(300)
    """
)


def test_reaper_kills_groups_when_agent_is_sigkilled(tmp_path: Path) -> None:
    out = tmp_path / "pids"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        reaper_pid = int(agent.stdout.readline())
        pids = wait_pids(out, 4)
        assert all(alive(p) for p in pids)
        agent.kill()  # no chance to clean up: only the reaper can
        agent.wait()
        assert wait_for(lambda: not any(alive(p) for p in pids)), "orphans survived the agent"
        assert wait_for(lambda: not alive(reaper_pid)), "the reaper itself lingered"
    finally:
        agent.kill()
        agent.stdout.close()


def test_reaper_close_kills_registered_and_exits(tmp_path: Path) -> None:
    reaper = Reaper()
    proc = Proc(["sleep", "60"], {"PATH": os.environ["PATH"]}, tmp_path, tmp_path / "log", reaper)
    reaper.close()
    assert wait_for(lambda: proc.popen.poll() is not None)
    assert not alive(reaper.pid)


def test_group_rss_counts_the_group(tmp_path: Path) -> None:
    code = "b = bytearray(64 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; print('ok', flush=True); time.sleep(30)"
    proc = Proc([sys.executable, "-c", code], dict(os.environ), tmp_path, tmp_path / "log", None)
    try:
        assert wait_for(lambda: (tmp_path / "log").read_text().startswith("ok"))
        assert group_rss([proc.pgid])[proc.pgid] > 60 * 2**20
    finally:
        proc.kill_now()
