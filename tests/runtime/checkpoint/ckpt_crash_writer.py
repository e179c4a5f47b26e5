"""Helper process for the fault tests (not a test module): saves one checkpoint and
SIGKILLs itself at an injected point of the commit protocol.

    python ckpt_crash_writer.py URI ATTEMPT STEP SEED OPS PATTERN [RANK WORLD BARRIER_S]

OPS is a comma-separated set of store fault-hook operations (write, chunk, commit) and
PATTERN an fnmatch pattern over store keys; the first hook call matching both kills the
process with SIGKILL (no cleanup, no atexit, exactly like a lost node). Exit code 3 means
the kill point was never reached (a test bug, reported as such).
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from typing import Any

import numpy as np
import torch
from llmops_runtime.checkpoint import CheckpointManager, open_store


def make_state(seed: int, n: int = 300_000) -> dict[str, Any]:
    """A deterministic state big enough for several store chunks (multipart on S3)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"w": torch.randn(n, generator=g), "b": torch.randn(7, generator=g)},
        "optimizer": {"state": {0: {"exp_avg": torch.randn(n, generator=g)}}, "param_groups": [{"lr": 0.5, "params": [0]}]},
        "rng": {"numpy": np.random.RandomState(seed).get_state()},
        "seed": seed,
    }


def main(argv: list[str]) -> int:
    uri, attempt, step, seed, ops, pattern = argv[:6]
    rank, world, barrier = (int(argv[6]), int(argv[7]), float(argv[8])) if len(argv) > 6 else (0, 1, 600.0)
    store = open_store(uri, chunk_bytes=5 << 20) if uri.startswith("s3://") else open_store(uri)
    kill_ops = set(ops.split(","))

    def hook(op: str, key: str) -> None:
        if op in kill_ops and fnmatch.fnmatch(key, pattern):
            os.kill(os.getpid(), signal.SIGKILL)

    store.fault_hook = hook
    mgr = CheckpointManager(store, "run-1", int(attempt), rank, world, keep_last=3, barrier_timeout=barrier)
    mgr.save(int(step), make_state(int(seed)), blocking=True)
    print("kill point not reached; last_error:", mgr.last_error, flush=True)
    return 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
