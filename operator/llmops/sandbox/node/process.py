"""Containers as local process groups, and the reaper that guarantees no orphan survives.

Each container runs as the leader of a new session (``start_new_session``), so the whole
tree it forks shares one process group and one ``killpg`` reaches all of it, the way a
cgroup kill reaches a real container. When the leader exits, the rest of its group is
killed too (a container ends with its main process).

No orphans, even if the agent dies by SIGKILL: each agent starts a tiny *reaper* process
in its own session and keeps the write end of a pipe to it. The agent tells it every
process group it starts and ends; when the pipe closes — clean stop, exception, or the
agent killed outright, since the kernel closes the fd either way — the reaper SIGKILLs
every group still listed and exits. The pipe is not inherited by containers
(``close_fds``), so only the agent's death can close it. PR_SET_PDEATHSIG was rejected: it
fires when the *thread* that forked exits and reaches only the direct child.

Memory limits: RLIMIT_AS would make allocations fail with an in-process error rather than
the kernel OOM kill a workload sees in a cluster, so the agent instead polls the resident
set of each limited group from /proc and SIGKILLs a group over its limit, reporting reason
OOMKilled and exit code 137, like the cgroup OOM killer.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

_REAPER = r"""# llmops sandbox reaper: kills registered process groups when its agent goes away
import os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
groups = set()
for line in sys.stdin:
    op, _, pgid = line.strip().partition(" ")
    if op == "+": groups.add(int(pgid))
    elif op == "-": groups.discard(int(pgid))
for pgid in groups:
    try: os.killpg(pgid, signal.SIGKILL)
    except OSError: pass
"""

PAGE = os.sysconf("SC_PAGE_SIZE")


class Reaper:
    """The per-agent orphan reaper (see the module essay)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _REAPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _send(self, line: str) -> None:
        with self._lock:
            if self._proc.stdin is None or self._proc.stdin.closed:
                return
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()

    def add(self, pgid: int) -> None:
        self._send(f"+ {pgid}")

    def remove(self, pgid: int) -> None:
        self._send(f"- {pgid}")

    def close(self, timeout: float = 10.0) -> None:
        """Close the pipe: the reaper kills what is still registered and exits."""
        with self._lock:
            if self._proc.stdin is not None and not self._proc.stdin.closed:
                self._proc.stdin.close()
        self._proc.wait(timeout)


@dataclass
class Exit:
    """How a container process ended, in kubelet terms."""

    exit_code: int
    signal: int | None


class Proc:
    """One running container: a process group led by `popen`."""

    def __init__(
        self,
        argv: list[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        reaper: Reaper | None,
    ) -> None:
        self.log_path = log_path
        self._reaper = reaper
        with open(log_path, "ab", buffering=0) as log:
            self.popen = subprocess.Popen(
                argv,
                env=dict(env),
                cwd=str(cwd),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self.pgid = self.popen.pid  # session leader: pgid == pid
        if reaper is not None:
            reaper.add(self.pgid)
        self.started_at = time.time()
        self.exit: Exit | None = None
        self.oom_killed = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def poll(self) -> Exit | None:
        """Exit of the leader, once; the rest of the group is killed with it."""
        if self.exit is not None:
            return self.exit
        code = self.popen.poll()
        if code is None:
            return None
        self.signal(signal.SIGKILL)  # leftovers of the container die with its main process
        if self._reaper is not None:
            self._reaper.remove(self.pgid)
        self.exit = Exit(128 - code, -code) if code < 0 else Exit(code, None)
        return self.exit

    def kill_now(self) -> Exit:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.popen.wait()
        exit = self.poll()
        assert exit is not None
        return exit


def group_rss(pgids: Iterable[int]) -> dict[int, int]:
    """Resident bytes of each process group in `pgids`, from one scan of /proc."""
    wanted = set(pgids)
    totals = dict.fromkeys(wanted, 0)
    if not wanted:
        return totals
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
            # fields after the ")" of comm: state ppid pgrp ... ; rss is field 24 (1-based)
            rest = stat[stat.rindex(b")") + 2 :].split()
            pgrp = int(rest[2])
            if pgrp in wanted:
                totals[pgrp] += int(rest[21]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return totals


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
