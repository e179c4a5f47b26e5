"""Checkpoint engine benchmark: stall, persist throughput and restore, as ratios to limits
measured side by side in the same run (medians of --reps repetitions, interleaved so that
machine noise hits every variant alike).

    python bench/checkpoint.py [--size-mb 256] [--reps 7] [--s3-size-mb N] [--no-s3] [--dir D]
                               [--dcp-ranks 1,4] [--no-dcp] [--fwd-ms 100]

State model: a training state of --size-mb MB (fp32 parameters + Adam's two moments, i.e.
parameters are a third of it, in 16 MiB tensors plus small bias-like tensors, integer-keyed
optimizer state, RNG states and scalars). A "training step" is an in-place update of
every tensor (what optimizer.step() does to memory), timed to show the step time used.

(a) stall   = time save() blocks the loop (the snapshot), vs. a synchronous torch.save of
              the same state to the same directory (+fsync)      -> target <= 0.2
              and vs. a bare in-memory clone of the state (floor) -> target <= 1.5
(d) loop slowdown = a training step's time while a background persist runs / idle step
              time (CPU/GIL contention), with the background pool as configured (capped
              below the core count, lower priority) and, in the same run, as it was before
              issue 20 (hashing on 2x the cores at the loop's priority); printed, no target
(b) persist = bytes / background persist time (shards + manifest + pointer), vs. a raw
              write of the same number of bytes to the same store (local: write+fsync;
              S3: boto3 multipart upload with the same transfer settings) -> target >= 0.7
(c) restore = load() (read + sha256 verify + parse), vs. a raw read of the same bytes
              (local: read(); S3: parallel ranged download)       -> target <= 1.5

(d) vs. torch.distributed.checkpoint (DCP) async_save, side by side (bench/checkpoint_dcp.py):
    the same state model and the same store, local directory at every --dcp-ranks world size
    (spawned processes, gloo, each rank saving its own shard of --size-mb / ranks) and S3
    at 1 rank. Each save is followed by the next step's forward/backward (--fwd-ms of
    read-only compute) and its in-place update; a variant that stages in the background
    (ours-bg, dcp-async) waits for its staging before the update, and that wait is stall.
    DCP variants: its default (FileSystemWriter as its own stager), DefaultStager with
    StagingOptions (shared memory; pinned memory only with CUDA) staging synchronously
    (dcp-stager) and in its own thread (dcp-async), and
    cache_staged_state_dict=True where the installed torch can run it (it needs an
    accelerator; otherwise the bench says it was skipped). Printed as ratios ours/DCP, for
    ours (staging inside save(), the default) and ours-bg (background staging, opt-in):
    stall (save call + staging wait)    vs. the best DCP variant -> target <= 0.5
    durable (save call -> committed)    vs. the best DCP variant -> target <= 1.0
    restore (this rank's shard loaded)  vs. the best DCP variant -> target <= 1.0
      "restore": right after the save, with whatever the save left in the page cache
      (DCP's buffered writes leave the whole checkpoint there; ours, written with
      O_DIRECT, nothing); "restore-cold" (local): after the files were dropped from the
      page cache, as after a restart on other nodes
    loop (step with a save / idle step) vs. the best DCP variant, no target
    and ours-bg per DCP variant, without a target; "ours-buffered" (local) is our engine
    writing through the page cache, as before O_DIRECT, for a same-run before/after.

S3 runs against a moto server started as a separate process on 127.0.0.1 (loopback: the
figures say how much the engine adds on top of the transfer path, not what S3 does).
Every target line ends in PASS or MISS.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from llmops_runtime.checkpoint import CheckpointManager, open_store

MiB = 1 << 20


def make_state(size_mb: float) -> dict[str, Any]:
    total = int(size_mb * MiB) // 4  # fp32 elements overall
    params = total // 3
    big = 4 * MiB  # elements per big tensor = 16 MiB
    sizes: list[int] = []
    left = params
    while left > 0:
        n = min(big, left)
        sizes.append(n)
        left -= n
    g = torch.Generator().manual_seed(0)
    model = {f"layers.{i}.weight": torch.randn(n, generator=g) for i, n in enumerate(sizes)}
    model.update({f"layers.{i}.bias": torch.randn(256, generator=g) for i in range(len(sizes))})
    opt_state = {
        i: {"step": torch.tensor(10.0), "exp_avg": torch.randn_like(t), "exp_avg_sq": torch.rand_like(t)}
        for i, t in enumerate(model.values())
    }
    return {
        "model": model,
        "optimizer": {"state": opt_state, "param_groups": [{"lr": 3e-4, "betas": (0.9, 0.95), "params": list(opt_state)}]},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "step": 0,
        "consumed_samples": 0,
    }


def tensors_of(state: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def walk(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)

    walk(state)
    return out


def train_step(state: dict[str, Any]) -> None:
    for t in tensors_of(state["model"]):
        t.mul_(0.999).add_(1e-4)
    state["step"] += 1


_FWD = torch.randn(256, 256, generator=torch.Generator().manual_seed(1))


def forward_backward(iters: int) -> None:
    """Read-only compute standing in for a step's forward/backward (matrix products that
    leave the state alone); ``fwd_iters_for`` sizes ``iters`` to a wall time."""
    x = _FWD
    for _ in range(iters):
        x = torch.tanh(x @ _FWD)


def fwd_iters_for(ms: float) -> int:
    """Iterations of :func:`forward_backward` taking about ``ms`` on this machine now."""
    forward_backward(5)
    t0 = time.perf_counter()
    forward_backward(50)
    per = (time.perf_counter() - t0) / 50
    return max(1, round(ms / 1e3 / per))


def fsync_write(path: str, data: Any) -> None:
    with open(path, "wb", buffering=0) as f:
        f.write(data)
        os.fsync(f.fileno())


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start")


def bench_store(name: str, uri: str, size_mb: float, reps: int, raw_write: Callable[[int], float],
                raw_read: Callable[[], float], local_dir: str | None) -> dict[str, float]:
    state = make_state(size_mb)
    store = open_store(uri)
    mgr = CheckpointManager(store, f"bench-{uuid.uuid4().hex[:6]}", 0, 0, 1, keep_last=2)
    # The background pool as it was before issue 20 (hashing on 2x the cores, at training
    # priority), on its own prefix, for the loop-slowdown comparison in the same run.
    with uncapped_pool():
        mgr_old = CheckpointManager(open_store(uri.rstrip("/") + "-uncapped"), f"bench-{uuid.uuid4().hex[:6]}", 0, 0, 1,
                                    keep_last=2)  # its persist thread is created at training priority
        assert mgr_old.save(0, state).result() is not None, mgr_old.last_error  # its warm-up
    rows: dict[str, list[float]] = {k: [] for k in (
        "step", "stall", "sync_save", "clone", "persist", "persist_busy", "raw_write", "load", "raw_read", "slow_step",
        "persist_busy_uncapped", "slow_step_uncapped")}
    # warm-up (first touch of pinned/pooled buffers, imports, connections)
    warm = mgr.save(0, state).result()
    assert warm is not None, mgr.last_error
    nbytes = sum(_manifest_files(mgr, warm).values())
    for rep in range(1, reps + 1):
        # Alternate which of persist/raw write goes first: the one that follows inherits
        # the other's dirty-page writeback, and that must not favour either side.
        if rep % 2:
            rows["raw_write"].append(raw_write(nbytes))
        step_s, _ = timed(lambda: train_step(state))
        rows["step"].append(step_s)
        clone_s, clones = timed(lambda: [t.clone() for t in tensors_of(state)])
        del clones
        rows["clone"].append(clone_s)
        if local_dir is not None:
            sync_path = os.path.join(local_dir, "sync.pt")
            sync_s, _ = timed(lambda: fsync_write(sync_path, _torch_save_bytes(state)))
            rows["sync_save"].append(sync_s)
            os.unlink(sync_path)
        # (a)+(b): the stall, then the background persist on an otherwise idle process
        t0 = time.perf_counter()
        handle = mgr.save(2 * rep, state)
        rows["stall"].append(handle.stall_seconds)
        info = handle.result()
        if info is None:
            raise RuntimeError(f"save failed: {mgr.last_error}")
        rows["persist"].append(time.perf_counter() - t0 - handle.stall_seconds)
        # the hidden cost: keep "training" while a persist runs (CPU/GIL contention)
        # (with the capped, lower-priority pool, then with the pool as it was before; the
        # order alternates with the repetition)
        for variant in ("", "_uncapped") if rep % 2 else ("_uncapped", ""):
            m = mgr if not variant else mgr_old
            train_step(state)
            with uncapped_pool() if variant else contextlib.nullcontext():
                h2 = m.save(2 * rep + 1, state)
                t1 = time.perf_counter()
                slow: list[float] = []
                while not h2.done():
                    s, _ = timed(lambda: train_step(state))
                    slow.append(s)
                rows["persist_busy" + variant].append(time.perf_counter() - t1)
                if slow:
                    rows["slow_step" + variant].append(statistics.median(slow))
                if h2.result() is None:
                    raise RuntimeError(f"save failed: {m.last_error}")
                m.wait()
        if not rep % 2:
            rows["raw_write"].append(raw_write(nbytes))
        load_s, _ = timed(lambda: mgr.load(info))
        rows["load"].append(load_s)
        rows["raw_read"].append(raw_read())
    mgr.close()
    mgr_old.close()
    med = {k: statistics.median(v) for k, v in rows.items() if v}
    med["bytes"] = float(nbytes)
    return med


@contextlib.contextmanager
def uncapped_pool() -> Iterator[None]:
    """The background hashing pool as it was before issue 20: 2x the cores (4..16 threads)
    at the training loop's priority; the default (capped, lower priority) afterwards."""
    from llmops_runtime.checkpoint.store import configure_io, usable_cpus

    configure_io(threads=min(16, max(4, 2 * usable_cpus())), nice=0)
    try:
        yield
    finally:
        configure_io()


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def _torch_save_bytes(state: Any) -> memoryview:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer()


def _manifest_files(mgr: CheckpointManager, info: Any) -> dict[str, int]:
    import json

    m = json.loads(mgr.store.read(info.manifest))
    return {k: int(v["size"]) for k, v in m["files"].items()}


def report(name: str, med: dict[str, float], local: bool) -> list[tuple[str, float, str, bool]]:
    mb = med["bytes"] / MiB
    print(f"\n[{name}] state {mb:.1f} MiB on disk; step time {med['step'] * 1e3:.1f} ms (median)")
    print(f"  stall per save      {med['stall'] * 1e3:9.1f} ms")
    print(f"  in-memory clone     {med['clone'] * 1e3:9.1f} ms   (floor)")
    if local:
        print(f"  sync torch.save     {med['sync_save'] * 1e3:9.1f} ms   (+fsync, same directory)")
    print(f"  background persist  {med['persist'] * 1e3:9.1f} ms   {mb / med['persist']:8.1f} MiB/s")
    print(f"  raw write           {med['raw_write'] * 1e3:9.1f} ms   {mb / med['raw_write']:8.1f} MiB/s")
    print(f"  restore (load)      {med['load'] * 1e3:9.1f} ms   {mb / med['load']:8.1f} MiB/s")
    print(f"  raw read            {med['raw_read'] * 1e3:9.1f} ms   {mb / med['raw_read']:8.1f} MiB/s")
    print(f"  persist while the loop keeps stepping {med['persist_busy'] * 1e3:.1f} ms")
    out: list[tuple[str, float, str, bool]] = []
    loop_rows: list[tuple[str, float, str, bool]] = []
    from llmops_runtime.checkpoint.store import io_pool, usable_cpus

    pool = io_pool()
    for variant, what in (("", f"background pool {pool.threads} thread(s), nice {pool.nice}"),
                          ("_uncapped", f"before issue 20: {min(16, max(4, 2 * usable_cpus()))} threads, nice 0")):
        if "slow_step" + variant in med:
            r = med["slow_step" + variant] / med["step"]
            print(f"  step time during that persist {med['slow_step' + variant] * 1e3:.1f} ms ({r:.2f}x idle; {what};"
                  f" persist {med['persist_busy' + variant] * 1e3:.0f} ms)")
            label = "(d) loop step during persist / idle step" + (" (pool before #20)" if variant else "")
            loop_rows.append((f"{name} {label}", r, "", True))
    if local:
        r = med["stall"] / med["sync_save"]
        out.append((f"{name} (a) stall / sync torch.save", r, "<= 0.2", r <= 0.2))
    r = med["stall"] / med["clone"]
    out.append((f"{name} (a) stall / in-memory clone", r, "<= 1.5", r <= 1.5))
    r = med["raw_write"] / med["persist"]
    out.append((f"{name} (b) persist throughput / raw write", r, ">= 0.7", r >= 0.7))
    r = med["load"] / med["raw_read"]
    out.append((f"{name} (c) restore / raw read", r, "<= 1.5", r <= 1.5))
    return out + loop_rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=256)
    ap.add_argument("--s3-size-mb", type=float, default=None, help="state size for S3 (default: --size-mb)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--dir", default=None, help="directory for the local store (default: a temp dir)")
    ap.add_argument("--dcp-ranks", default="1,4", help="world sizes of the local side-by-side runs vs. DCP")
    ap.add_argument("--no-dcp", action="store_true", help="skip the side-by-side runs vs. DCP")
    ap.add_argument("--fwd-ms", type=float, default=100, help="forward/backward stand-in per step in the DCP runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # the loop is single-threaded here; keep the comparison honest
    fwd_iters = fwd_iters_for(args.fwd_ms)
    print(f"checkpoint bench: {args.size_mb:g} MB state, {args.reps} reps (medians), "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average {_loadavg()}; "
          f"forward/backward {fwd_iters} iterations (~{args.fwd_ms:g} ms when calibrated)")
    ratios: list[tuple[str, float, str, bool]] = []
    base = tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir)
    try:
        local_dir = os.path.join(base, "store")
        raw_path = os.path.join(base, "raw.bin")
        blob: dict[str, bytes] = {}

        def local_raw_write(n: int) -> float:
            if len(blob.get("local", b"")) != n:
                blob["local"] = os.urandom(n)
            data = blob["local"]
            s, _ = timed(lambda: fsync_write(raw_path, data))
            return s

        def local_raw_read() -> float:
            def read() -> None:
                with open(raw_path, "rb", buffering=0) as f:
                    f.read()
            s, _ = timed(read)
            return s

        med = bench_store("local", local_dir, args.size_mb, args.reps, local_raw_write, local_raw_read, base)
        ratios += report("local", med, local=True)

        if not args.no_dcp:
            import checkpoint_dcp

            for line in checkpoint_dcp.unavailable_variants():
                print(f"\nDCP variant skipped: {line}")
            for world in [int(x) for x in args.dcp_ranks.split(",") if x]:
                dmed = checkpoint_dcp.run_setting("local", world, args.size_mb, args.reps, base, fwd_iters)
                ratios += checkpoint_dcp.report(f"dcp local {world}r", dmed)

        if not args.no_s3:
            import boto3
            from boto3.s3.transfer import TransferConfig

            proc, endpoint = start_moto()
            try:
                os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
                os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
                os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
                os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
                bucket = "bench-ckpt"
                store_for_cfg = open_store(f"s3://{bucket}/x")
                client = boto3.client("s3", endpoint_url=endpoint, config=store_for_cfg.client.meta.config)  # type: ignore[attr-defined]
                client.create_bucket(Bucket=bucket)
                tc: TransferConfig = store_for_cfg.transfer  # type: ignore[attr-defined]

                def s3_raw_write(n: int) -> float:
                    if len(blob.get("s3", b"")) != n:
                        blob["s3"] = os.urandom(n)
                    data = blob["s3"]
                    s, _ = timed(lambda: client.upload_fileobj(io.BytesIO(data), bucket, "raw/blob", Config=tc))
                    return s

                def s3_raw_read() -> float:
                    def read() -> None:
                        client.download_fileobj(bucket, "raw/blob", io.BytesIO(), Config=tc)
                    s, _ = timed(read)
                    return s

                size = args.s3_size_mb if args.s3_size_mb is not None else args.size_mb
                med = bench_store(f"s3-loopback {size:g}MB", f"s3://{bucket}/bench", size, args.reps,
                                  s3_raw_write, s3_raw_read, None)
                ratios += report("s3", med, local=False)
                if not args.no_dcp:
                    import checkpoint_dcp

                    env = {k: os.environ[k] for k in (
                        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")}
                    dmed = checkpoint_dcp.run_setting("s3", 1, size, args.reps, base, fwd_iters, bucket=bucket, env=env)
                    ratios += checkpoint_dcp.report("dcp s3 1r", dmed)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        shutil.rmtree(base, ignore_errors=True)

    print(f"\nload average at the end: {_loadavg()}")
    print(f"\n  {'ratio':56s} {'value':>7s}   {'target':7s}  result")
    for name, value, target, ok in ratios:
        verdict = ("PASS" if ok else "MISS") if target else "-"
        print(f"  {name:56s} {value:7.3f}   {target:7s}  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
