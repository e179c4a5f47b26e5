"""Fault injection against the commit protocol (local directory and S3 via moto):

* a writer process SIGKILLed mid-shard, between shards, after the shards but before the
  manifest, mid-manifest, and after the manifest but before the pointer: resume picks the
  previous committed checkpoint, its files are untouched, the next attempt commits the same
  step again, and the partial leftovers are collected once they leave retention;
* S3 500/503 (SlowDown) answers during multipart upload, injected in botocore's send path:
  bounded retries succeed; persistent errors mark the manager failing and it recovers;
* a full disk (ENOSPC) on a real 1 MiB tmpfs (when mounting is allowed) and via the store's
  fault hook: a storage error, no temp files left, the previous checkpoint intact.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import torch
from ckpt_crash_writer import make_state
from llmops_runtime.checkpoint import CheckpointManager, Store, open_store

HERE = Path(__file__).parent


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        torch.equal(a["model"]["w"], b["model"]["w"])
        and torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
        and a["rng"]["numpy"][1].tobytes() == b["rng"]["numpy"][1].tobytes()
        and a["seed"] == b["seed"]
    )


def open_(uri: str) -> Store:
    return open_store(uri, chunk_bytes=5 << 20) if uri.startswith("s3://") else open_store(uri)


def fingerprint(store: Store, prefix: str) -> dict[str, str]:
    return {k: hashlib.sha256(store.read(k)).hexdigest() for k in store.list(prefix)}


KILL_POINTS = [
    ("mid-shard", "chunk", "*.safetensors"),
    ("between-shards", "write", "*.a[0-9][0-9][0-9][0-9].json"),
    ("before-manifest", "write", "*/manifest.*"),
    ("mid-manifest", "chunk,commit", "*/manifest.*"),
    ("before-pointer", "write,commit", "latest.json"),
]


@pytest.mark.parametrize("name,ops,pattern", KILL_POINTS, ids=[k[0] for k in KILL_POINTS])
def test_writer_killed_at_each_point(store_uri: str, name: str, ops: str, pattern: str) -> None:
    store = open_(store_uri)
    first = CheckpointManager(store, "run-1", 0, 0, 1, keep_last=3)
    assert first.save(1, make_state(1)).result() is not None
    before = fingerprint(store, "step-00000001/")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    proc = subprocess.run(
        [sys.executable, str(HERE / "ckpt_crash_writer.py"), store_uri, "1", "2", "2", ops, pattern],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr

    # resume (attempt 2) picks the newest fully committed: step 1, bitwise, files untouched
    resumed = CheckpointManager(open_(store_uri), "run-1", 2, 0, 1, keep_last=3)
    found = resumed.load_latest()
    assert found is not None and found[0].step == 1 and same(found[1], make_state(1))
    assert fingerprint(store, "step-00000001/") == before
    if name == "before-pointer":  # the manifest exists but nobody points at it: not committed
        assert store.size("step-00000002/manifest.a0001.json") is not None

    # the new attempt saves the same step again without mixing in the dead attempt's files
    info = resumed.save(2, make_state(22)).result()
    assert info is not None, resumed.last_error
    assert (info.step, info.attempt) == (2, 2)
    assert same(resumed.load(resumed.latest()), make_state(22))  # type: ignore[arg-type]
    assert fingerprint(store, "step-00000001/") == before  # still kept (K=3), still intact
    for step in (3, 4, 5):
        assert resumed.save(step, make_state(step)).result() is not None
    resumed.wait()
    assert not any(k.startswith(("step-00000001/", "step-00000002/")) for k in store.list())
    assert [i.step for i in resumed.candidates()] == [5, 4, 3]


def test_rank_killed_between_shards_in_a_two_process_gang(store_uri: str) -> None:
    """Two writer processes: rank 1 dies between its two shard files, rank 0 finishes its
    shard and waits for rank 1's done marker until its barrier times out. Nothing is
    committed; every rank resumes from the previous checkpoint."""
    store = open_(store_uri)
    managers = [CheckpointManager(store, "run-1", 0, r, 2, barrier_timeout=60) for r in (0, 1)]
    handles = [managers[1].save(1, make_state(101)), managers[0].save(1, make_state(100))]
    assert all(h.result() is not None for h in handles)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    script = str(HERE / "ckpt_crash_writer.py")
    rank1 = subprocess.Popen(
        [sys.executable, script, store_uri, "1", "2", "201", "write", "*.a[0-9][0-9][0-9][0-9].json", "1", "2", "60"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    rank0 = subprocess.Popen(  # never reaches its kill pattern: it fails at the barrier instead
        [sys.executable, script, store_uri, "1", "2", "200", "write", "no-such-key", "0", "2", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    out1, _ = rank1.communicate(timeout=240)
    out0, _ = rank0.communicate(timeout=240)
    assert rank1.returncode == -signal.SIGKILL, out1
    assert rank0.returncode == 3 and "ranks [1] did not finish" in out0, out0
    assert store.size("step-00000002/rank-00000.a0001.done.json") is not None  # rank 0's shard is there
    assert store.size("step-00000002/manifest.a0001.json") is None

    resumed = [CheckpointManager(open_(store_uri), "run-1", 2, r, 2) for r in (0, 1)]
    for r, m in enumerate(resumed):
        found = m.load_latest()
        assert found is not None and found[0].step == 1 and same(found[1], make_state(100 + r))


# --------------------------------------------------------------------------- S3 errors


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def inject_s3_errors(store: Any, operations: set[str], failures: int | None) -> tuple[dict[str, int], Any]:
    """Answer the first ``failures`` (None = all) requests of ``operations`` with 503 SlowDown
    / 500 InternalError, alternating, before they reach the server. Returns counters and a
    function that removes the fault."""
    from botocore.awsrequest import AWSResponse

    counts = {"injected": 0, "passed": 0}

    def handler(request: Any, event_name: str, **_: Any) -> Any:
        op = event_name.rsplit(".", 1)[-1]
        if op not in operations:
            return None
        if failures is None or counts["injected"] < failures:
            counts["injected"] += 1
            status, code = (503, "SlowDown") if counts["injected"] % 2 else (500, "InternalError")
            body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
            return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))
        counts["passed"] += 1
        return None

    store.client.meta.events.register_first("before-send.s3", handler)
    return counts, lambda: store.client.meta.events.unregister("before-send.s3", handler)


def test_s3_transient_5xx_during_upload_are_retried(s3_env: str) -> None:
    store = open_store(f"s3://{s3_env}/p", chunk_bytes=5 << 20, max_attempts=5)
    counts, _ = inject_s3_errors(store, {"UploadPart", "CreateMultipartUpload", "PutObject"}, failures=4)
    m = CheckpointManager(store, "run-1", 0, 0, 1)
    info = m.save(1, make_state(1, n=3_000_000)).result()  # 24 MB -> multipart
    assert info is not None, m.last_error
    assert counts["injected"] == 4 and counts["passed"] > 0
    assert m.failing_since is None
    assert same(m.load(info), make_state(1, n=3_000_000))


def test_s3_persistent_5xx_marks_failing_then_recovers(s3_env: str) -> None:
    store = open_store(f"s3://{s3_env}/p", chunk_bytes=5 << 20, max_attempts=2)
    m = CheckpointManager(store, "run-1", 0, 0, 1, max_age_seconds=3600)
    assert m.save(1, make_state(1)).result() is not None
    handlers, heal = inject_s3_errors(store, {"UploadPart", "CreateMultipartUpload", "PutObject"}, failures=None)
    h = m.save(2, make_state(2))
    assert h.result() is None
    assert handlers["injected"] >= 2  # retried (bounded), then gave up
    assert m.failing_since is not None and m.last_error
    assert any(s in m.last_error for s in ("SlowDown", "InternalError", "503", "500")), m.last_error
    assert m.latest().step == 1  # type: ignore[union-attr]
    heal()  # storage healthy again
    assert m.save(3, make_state(3)).result() is not None
    assert m.failing_since is None and m.latest().step == 3  # type: ignore[union-attr]


# --------------------------------------------------------------------------- full disk


@pytest.fixture()
def tiny_tmpfs(tmp_path: Path) -> Any:
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()}); the hook variant covers ENOSPC")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _check_enospc_handling(root: Path, m: CheckpointManager) -> None:
    assert m.failing_since is not None
    assert m.last_error is not None and ("No space left" in m.last_error or str(errno.ENOSPC) in m.last_error)
    latest = m.latest(deep=True)
    assert latest is not None and latest.step == 1
    leftovers = [p for p in root.rglob(".*.tmp-*")]
    assert leftovers == []


def test_enospc_on_real_tmpfs(tiny_tmpfs: Path) -> None:
    m = CheckpointManager(open_store(str(tiny_tmpfs)), "run-1", 0, 0, 1, max_age_seconds=3600)
    assert m.save(1, {"w": torch.randn(50_000)}).result() is not None  # 200 kB fits
    assert m.save(2, {"w": torch.randn(500_000)}).result() is None  # 2 MB does not
    _check_enospc_handling(tiny_tmpfs, m)


def test_enospc_via_fault_hook(tmp_path: Path) -> None:
    m = CheckpointManager(open_store(str(tmp_path)), "run-1", 0, 0, 1, max_age_seconds=3600)
    assert m.save(1, {"w": torch.randn(1000)}).result() is not None

    def full(op: str, key: str) -> None:
        if op == "chunk":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    m.store.fault_hook = full
    assert m.save(2, {"w": torch.randn(1000)}).result() is None
    _check_enospc_handling(tmp_path, m)
    m.store.fault_hook = None
    assert m.save(3, {"w": torch.randn(1000)}).result() is not None and m.failing_since is None
