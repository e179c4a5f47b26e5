"""Smoke test of bench/model_fetch.py: two tiny files, two repetitions against its own moto
process; it runs to the end, prints both ratios, and leaves nothing behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_prints_both_ratios(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "model_fetch.py"), "--files", "2", "--file-mb", "1", "--reps", "2", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for label in ("fetch throughput / raw copy", "cache-hit start / miss start", "pinned-hit start / miss start"):
        m = re.search(re.escape(label) + r"\s+([0-9.]+)\s", proc.stdout)
        assert m and float(m.group(1)) > 0, f"missing {label!r} in:\n{proc.stdout}"
    assert list(tmp_path.iterdir()) == []
