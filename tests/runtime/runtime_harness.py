"""Helpers for tests that run the real launcher and trainer as separate process gangs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Gang:
    """One launcher process (the "pod") and its workers, in their own process group."""

    proc: subprocess.Popen
    log_prefix: Path

    def wait(self, timeout: float = 120) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
            raise

    def last_step(self, rank: int = 0) -> int:
        path = Path(f"{self.log_prefix}.rank{rank}")
        if not path.exists():
            return 0
        steps = [json.loads(line).get("step", 0) for line in path.read_text().splitlines() if line.strip().startswith("{")]
        return max(steps, default=0)

    def wait_for_step(self, step: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.last_step() < step:
            if self.proc.poll() is not None:
                raise AssertionError(f"gang exited with {self.proc.returncode} before step {step}")
            if time.monotonic() > deadline:
                raise AssertionError(f"step {step} not reached in {timeout}s")
            time.sleep(0.02)

    def kill_pod(self) -> None:
        """SIGKILL the launcher and all its workers at once, like a lost node."""
        os.killpg(self.proc.pid, signal.SIGKILL)

    def terminate_pod(self) -> None:
        """SIGTERM to the launcher only, as the kubelet sends it to the container's PID 1."""
        self.proc.send_signal(signal.SIGTERM)


def start_gang(tmp: Path, *, attempt: int, train_args: list[str], env: dict[str, str] | None = None,
               nproc: int = 2, log_name: str = "log", entry: tuple[str, ...] = ("-m", "llmops_runtime.train")) -> Gang:
    log_prefix = tmp / log_name
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_") and k not in ("RANK", "WORLD_SIZE")
    }
    full_env.update(
        {
            "LLMOPS_NPROC_PER_NODE": str(nproc),
            "LLMOPS_NNODES": "1",
            "LLMOPS_NODE_RANK": "0",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(free_port()),
            "LLMOPS_RUN_ID": "run-1",
            "LLMOPS_ATTEMPT": str(attempt),
            "LLMOPS_CHECKPOINT_URI": str(tmp / "ckpt"),
            "LLMOPS_PROGRESS_FILE": str(tmp / "progress.jsonl"),
            "PYTHONWARNINGS": "ignore",
            "PYTHONPATH": str(REPO / "operator"),
        }
    )
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "llmops_runtime.launch", "--grace", "60", *entry,
           "--log-file", str(log_prefix), *train_args]
    with open(tmp / f"{log_name}.a{attempt}.out", "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(cmd, env=full_env, cwd=tmp, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    return Gang(proc, log_prefix)


@dataclass
class Timeline:
    """The effective history of one rank: for each step the entry of the latest attempt."""

    steps: dict[int, dict] = field(default_factory=dict)
    final: str | None = None

    def losses(self) -> list[str]:
        return [self.steps[s]["loss"] for s in sorted(self.steps)]

    def ids(self) -> list[list[int]]:
        return [self.steps[s]["ids"] for s in sorted(self.steps)]


def read_timeline(log_prefix: Path, rank: int) -> Timeline:
    timeline = Timeline()
    for line in Path(f"{log_prefix}.rank{rank}").read_text().splitlines():
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by SIGKILL
        if "final" in entry:
            timeline.final = entry["final"]
        else:
            # A resumed attempt redoes the steps after the last commit; its entries replace them.
            timeline.steps[entry["step"]] = entry
    return timeline
