"""Smoke test of bench/checkpoint.py: a tiny state, two repetitions, local and S3 (moto,
started by the bench as its own process): it runs to the end and prints every ratio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_prints_all_ratios(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "checkpoint.py"), "--size-mb", "2", "--reps", "2", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for label in (
        "local (a) stall / sync torch.save",
        "local (a) stall / in-memory clone",
        "local (b) persist throughput / raw write",
        "local (c) restore / raw read",
        "s3 (a) stall / in-memory clone",
        "s3 (b) persist throughput / raw write",
        "s3 (c) restore / raw read",
    ):
        m = re.search(re.escape(label) + r"\s+([0-9.]+)\s", out)
        assert m, f"missing {label!r} in:\n{out}"
        assert float(m.group(1)) > 0
    assert list(tmp_path.iterdir()) == []  # the bench cleans up after itself
