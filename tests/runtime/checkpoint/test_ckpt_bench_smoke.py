"""Smoke test of bench/checkpoint.py: a tiny state, two repetitions, local and S3 (moto,
started by the bench as its own process), and the side-by-side runs against
torch.distributed.checkpoint (local at 1 and 2 ranks, S3 at 1): it runs to the end and
prints every ratio (for staging inside save() and in the background, with the loop
slowdown), each target with a PASS/MISS verdict, and the load average."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_bench_prints_all_ratios(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "checkpoint.py"), "--size-mb", "2", "--reps", "2", "--dir", str(tmp_path),
         "--dcp-ranks", "1,2"],
        capture_output=True, text=True, timeout=480,
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
    for setting in ("dcp local 1r", "dcp local 2r", "dcp s3 1r"):
        metrics = ["stall", "durable", "restore"] + (["restore-cold"] if "local" in setting else [])
        for metric, target in ((m, "<= 0.5" if m == "stall" else "<= 1.0") for m in metrics):
            for ours in ("ours", "ours-bg"):  # staging inside save(), and in the background
                label = f"{setting} {metric} {ours}/best DCP ("
                m = re.search(re.escape(label) + r"[a-z-]+\)\s+([0-9.]+)\s+" + re.escape(target) + r"\s+(PASS|MISS)$",
                              out, re.M)
                assert m, f"missing {label!r} in:\n{out}"
                assert float(m.group(1)) > 0
                # the verdict is the target applied to the printed value
                assert (m.group(2) == "PASS") == (float(m.group(1)) <= float(target.split()[1])), m.group(0)
            for variant in ("dcp", "dcp-async"):
                m = re.search(re.escape(f"{setting} {metric} ours-bg/{variant}") + r"\s+([0-9.]+)\s", out)
                assert m and float(m.group(1)) > 0, f"missing the ratio to {variant} in:\n{out}"
            if "local" in setting:  # the same-run before/after of O_DIRECT
                m = re.search(re.escape(f"{setting} {metric} ours-buffered/best DCP") + r"\s+([0-9.]+)\s", out)
                assert m and float(m.group(1)) > 0, f"missing the page-cache variant's ratio in:\n{out}"
        m = re.search(re.escape(f"{setting} loop ours-bg/best DCP (") + r"[a-z-]+\)\s+([0-9.]+)\s", out)
        assert m and float(m.group(1)) > 0, f"missing the loop slowdown ratio in:\n{out}"
    assert re.search(r"load average [0-9.]+ [0-9.]+ [0-9.]+", out)
    assert list(tmp_path.iterdir()) == []  # the bench cleans up after itself
