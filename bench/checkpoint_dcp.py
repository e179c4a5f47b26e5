"""Our checkpoint engine and torch.distributed.checkpoint (DCP) ``async_save``, side by side.

Used by ``bench/checkpoint.py`` (see its docstring for what is printed). Each setting runs
``world`` processes (spawned, gloo process group); every rank holds a ``size_mb / world``
share of the state model of ``checkpoint.make_state`` (its own shard, under a rank-unique
key for DCP, which would otherwise treat plain tensors as replicated and write them once).
Per repetition every variant, in an order that rotates with the repetition, does:

    a training step (in-place update of every tensor) -> barrier
    save: stall = until the save call returns; durable = until its result is known
          (ours: committed, pointer moved; DCP: the future's result, .metadata renamed)
    untimed: checkpoints older than the last two deleted (ours: its retention, which runs
          on the persist thread after the commit, so ``wait()``; DCP: rank 0 removes them)
    barrier -> restore of this rank's shard -> barrier
    local only: the checkpoint's files dropped from the page cache (posix_fadvise DONTNEED,
          both variants) -> barrier -> restore again ("restore-cold", what a gang restarted
          on other nodes, or after the cache was reclaimed, pays) -> barrier

Times are the maximum over ranks of one repetition, then the median over repetitions (a
warm-up repetition is dropped). ``ours-buffered`` (local only) is our engine writing through
the page cache instead of with O_DIRECT (``LocalStore(direct=False)``, what it did before):
a same-run before/after, printed without a target. A warm "restore" reads pages the save
left in the page cache: DCP's writes leave them there, ours (O_DIRECT) do not, so it is
cold for ours either way. DCP restores in place into the live state (its normal use); ours
returns fresh tensors (sha256-verified). Both use the same directory or bucket.

S3: ours through ``S3Store``; DCP through its ``FileSystemWriter``/``FileSystemReader`` over a
small boto3 file system (:class:`Boto3FS`, whole-object multipart PUTs and parallel ranged
GETs with the same transfer settings as ours), since s3fs (fsspec's S3) is not installed.
"""

from __future__ import annotations

import gc
import io
import json
import math
import os
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

METRICS = ("stall", "durable", "restore", "restore-cold")


class Boto3FS:
    """The file-system interface DCP's ``FileSystemWriter``/``Reader`` call, over boto3
    (paths are object keys). Written objects are uploaded when the stream closes."""

    def __init__(self, client: Any, bucket: str, transfer: Any) -> None:
        self.client, self.bucket, self.transfer = client, bucket, transfer

    @contextmanager
    def create_stream(self, path: str | os.PathLike[str], mode: str) -> Generator[io.IOBase, None, None]:
        key = str(path)
        if "w" in mode:
            fs = self

            class Upload(io.BytesIO):
                def close(self) -> None:
                    if not self.closed:
                        data = self.getvalue()
                        fs.client.upload_fileobj(io.BytesIO(data), fs.bucket, key, Config=fs.transfer)
                    super().close()

            stream = Upload()
            try:
                yield stream
            finally:
                stream.close()
        else:
            buf = io.BytesIO()
            self.client.download_fileobj(self.bucket, key, buf, Config=self.transfer)
            buf.seek(0)
            yield buf

    def concat_path(self, path: str | os.PathLike[str], suffix: str) -> str:
        return f"{str(path).rstrip('/')}/{suffix}"

    def init_path(self, path: str | os.PathLike[str]) -> str:
        return str(path)

    def rename(self, path: str | os.PathLike[str], new_path: str | os.PathLike[str]) -> None:
        self.client.copy_object(Bucket=self.bucket, Key=str(new_path), CopySource={"Bucket": self.bucket, "Key": str(path)})
        self.client.delete_object(Bucket=self.bucket, Key=str(path))

    def mkdir(self, path: str | os.PathLike[str]) -> None:
        pass

    def exists(self, path: str | os.PathLike[str]) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=str(path))
            return True
        except Exception:
            return False

    def rm_file(self, path: str | os.PathLike[str]) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=str(path))

    def rm_prefix(self, prefix: str) -> None:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/"):
            for o in page.get("Contents", []):
                self.client.delete_object(Bucket=self.bucket, Key=o["Key"])


def dcp_variants() -> dict[str, str]:
    """DCP configurations that work with the installed torch: name -> description."""
    out = {"dcp": "FileSystemWriter as its own stager (a fresh CPU copy per save; async_save's default)"}
    try:
        from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions  # noqa: F401

        pin = "pinned" if torch.cuda.is_available() else "no pinned memory without CUDA"
        out["dcp-stager"] = f"DefaultStager(StagingOptions: shared memory, {pin}, synchronous staging)"
    except ImportError:
        pass
    # cache_staged_state_dict allocates its cache pinned, which needs an accelerator
    if torch.cuda.is_available():
        out["dcp-cached"] = "FileSystemWriter(cache_staged_state_dict=True) (pinned cache, reused)"
    return out


def unavailable_variants() -> list[str]:
    out = []
    if not torch.cuda.is_available():
        out.append("dcp-cached (FileSystemWriter(cache_staged_state_dict=True)) needs an accelerator for its pinned cache")
    return out


class _Ours:
    """Our engine; ``buffered``: its local store writing through the page cache (no
    O_DIRECT), for a same-run before/after."""

    def __init__(self, uri: str, rank: int, world: int, buffered: bool = False) -> None:
        from llmops_runtime.checkpoint import CheckpointManager, open_store

        store = open_store(uri)
        if buffered:
            store.direct = False  # type: ignore[attr-defined]
        self.root = uri
        self.mgr = CheckpointManager(store, "bench-dcp", 0, rank, world, keep_last=2)
        self.info: Any = None

    def save(self, step: int, state: dict[str, Any]) -> float:
        h = self.mgr.save(step, state)
        stall = time.perf_counter()
        self.info = h.result()
        if self.info is None:
            raise RuntimeError(f"save failed: {self.mgr.last_error}")
        return stall

    def load(self, state: dict[str, Any]) -> None:
        self.mgr.load(self.info)

    def files(self) -> str:
        return os.path.join(self.root, self.info.id)

    def settle(self, step: int) -> None:
        self.mgr.wait()  # retention (keep_last) runs after the commit: let it finish

    def close(self) -> None:
        self.mgr.close()


class _DCP:
    def __init__(self, name: str, kind: str, root: str, rank: int, s3: dict[str, Any] | None) -> None:
        self.name, self.kind, self.root, self.rank, self.s3 = name, kind, root, rank, s3
        self.stager: Any = None
        self.writer: Any = None
        self.path = ""
        if name == "dcp-stager":
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            self.stager = DefaultStager(StagingOptions(torch.cuda.is_available(), True, False, False))
        if name == "dcp-cached":
            self.writer = self._writer(cache=True)

    def _fs(self) -> Boto3FS | None:
        if self.s3 is None:
            return None
        return Boto3FS(self.s3["client"], self.s3["bucket"], self.s3["transfer"])

    def _writer(self, cache: bool = False) -> Any:
        from torch.distributed.checkpoint import FileSystemWriter

        kw: dict[str, Any] = {"cache_staged_state_dict": True} if cache else {}
        w = FileSystemWriter(self.root, sync_files=self.s3 is None, **kw)
        fs = self._fs()
        if fs is not None:
            w.fs = fs
            w.path = self.root
        return w

    def _step_path(self, step: int) -> str:
        return f"{self.root}/{self.name}/step-{step:08d}"

    def save(self, step: int, state: dict[str, Any]) -> float:
        import torch.distributed.checkpoint as dcp

        self.path = self._step_path(step)
        writer = self.writer if self.writer is not None else self._writer()
        fut = dcp.async_save(state, checkpoint_id=self.path, storage_writer=writer, async_stager=self.stager)
        stall = time.perf_counter()
        fut.result()
        return stall

    def load(self, state: dict[str, Any]) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import FileSystemReader

        reader = FileSystemReader(self.path)
        fs = self._fs()
        if fs is not None:
            reader.fs = fs
            reader.path = self.path
        dcp.load(state, checkpoint_id=self.path, storage_reader=reader)

    def files(self) -> str:
        return self.path

    def settle(self, step: int) -> None:
        if self.rank != 0 or step < 2:
            return
        old = self._step_path(step - 2)
        fs = self._fs()
        if fs is not None:
            fs.rm_prefix(old)
        else:
            shutil.rmtree(old, ignore_errors=True)

    def close(self) -> None:
        if self.stager is not None:
            self.stager.close()


def _evict(directory: str) -> None:
    """Drop a checkpoint's (clean, fsynced) files from the page cache."""
    for dirpath, _dirs, names in os.walk(directory):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _worker(rank: int, world: int, cfg: dict[str, Any]) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from checkpoint import make_state, train_step

    torch.set_num_threads(1)
    os.environ.update(cfg.get("env", {}))
    dist.init_process_group("gloo", init_method=f"file://{cfg['init_file']}", rank=rank, world_size=world)
    try:
        s3: dict[str, Any] | None = None
        if cfg["kind"] == "s3":
            import boto3
            from llmops_runtime.checkpoint import open_store

            probe = open_store(f"s3://{cfg['bucket']}/x")
            client = boto3.client("s3", config=probe.client.meta.config)  # type: ignore[attr-defined]
            s3 = {"client": client, "bucket": cfg["bucket"], "transfer": probe.transfer}  # type: ignore[attr-defined]
            ours_uri = f"s3://{cfg['bucket']}/ours"
            dcp_root = "dcp"
        else:
            ours_uri = os.path.join(cfg["root"], "ours")
            dcp_root = os.path.join(cfg["root"], "dcp")
        state = make_state(cfg["size_mb"] / world)
        dcp_state = {f"rank{rank}": state}  # rank-unique keys: each rank writes its own shard
        variants: dict[str, Any] = {"ours": _Ours(ours_uri, rank, world)}
        local = cfg["kind"] == "local"
        if local:
            variants["ours-buffered"] = _Ours(ours_uri + "-buffered", rank, world, buffered=True)
        for name in cfg["variants"]:
            variants[name] = _DCP(name, cfg["kind"], dcp_root, rank, s3)
        names = list(variants)
        rows: dict[str, dict[str, list[float]]] = {n: {m: [] for m in METRICS} for n in names}
        step = 0
        for rep in range(cfg["reps"] + 1):  # repetition 0 warms up (allocations, connections)
            order = names[rep % len(names):] + names[: rep % len(names)]
            for name in order:
                v = variants[name]
                train_step(state)
                step += 1
                dist.barrier()
                t0 = time.perf_counter()
                mine = dcp_state if isinstance(v, _DCP) else state
                t_stall = v.save(step, mine)
                t_done = time.perf_counter()
                v.settle(step)  # untimed: old checkpoints deleted (ours: retention; DCP: rmtree)
                dist.barrier()
                t1 = time.perf_counter()
                v.load(mine)
                t_load = time.perf_counter() - t1
                dist.barrier()
                t_cold = float("nan")
                if local:
                    gc.collect()  # nothing may map the files any more
                    _evict(v.files())
                    dist.barrier()
                    t1 = time.perf_counter()
                    v.load(mine)
                    t_cold = time.perf_counter() - t1
                    dist.barrier()
                vals = torch.tensor([t_stall - t0, t_done - t0, t_load, t_cold], dtype=torch.float64)
                dist.all_reduce(vals, op=dist.ReduceOp.MAX)
                if rep:
                    for m, x in zip(METRICS, vals.tolist(), strict=True):
                        rows[name][m].append(x)
        for v in variants.values():
            v.close()
        if rank == 0:
            med = {n: {m: statistics.median(xs) for m, xs in r.items()} for n, r in rows.items()}
            with open(cfg["out"], "w") as f:
                json.dump(med, f)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_setting(kind: str, world: int, size_mb: float, reps: int, base: str,
                bucket: str | None = None, env: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Medians {variant: {stall, durable, restore, restore-cold}} of one setting (see the
    module doc; restore-cold is NaN for S3)."""
    work = tempfile.mkdtemp(prefix=f"dcp-{kind}-{world}-", dir=base)
    try:
        cfg = {
            "kind": kind, "size_mb": size_mb, "reps": reps, "root": work, "bucket": bucket,
            "variants": list(dcp_variants()), "init_file": os.path.join(work, f"pg-{uuid.uuid4().hex}"),
            "out": os.path.join(work, "result.json"), "env": env or {},
        }
        mp.start_processes(_worker, args=(world, cfg), nprocs=world, join=True, start_method="spawn")
        with open(cfg["out"]) as f:
            return json.load(f)  # type: ignore[no-any-return]
    finally:
        shutil.rmtree(work, ignore_errors=True)


Row = tuple[str, float, str, bool]


def report(label: str, med: dict[str, dict[str, float]]) -> list[Row]:
    """Prints the setting's medians; returns ratio rows ours/DCP with their targets."""
    ours = med["ours"]
    dcps = {n: r for n, r in med.items() if not n.startswith("ours")}
    print(f"\n[{label}] medians, ms (max over ranks per repetition)")
    metrics = [m for m in METRICS if not math.isnan(ours[m])]
    print(f"  {'variant':13s} " + " ".join(f"{m:>12s}" for m in metrics))
    for n, r in med.items():
        print(f"  {n:13s} " + " ".join(f"{r[m] * 1e3:12.1f}" for m in metrics))
    out: list[Row] = []
    targets: dict[str, tuple[str, Callable[[float], bool]]] = {
        "stall": ("<= 0.5", lambda x: x <= 0.5),
        "durable": ("<= 1.0", lambda x: x <= 1.0),
        "restore": ("<= 1.0", lambda x: x <= 1.0),
        "restore-cold": ("<= 1.0", lambda x: x <= 1.0),
    }
    for m in metrics:
        for n, r in dcps.items():
            out.append((f"{label} {m} ours/{n}", ours[m] / r[m], "", True))
        if "ours-buffered" in med:  # the same engine writing through the page cache
            out.append((f"{label} {m} ours-buffered/best DCP", med["ours-buffered"][m] / min(r[m] for r in dcps.values()), "", True))
        best_name = min(dcps, key=lambda n: dcps[n][m])
        ratio = ours[m] / dcps[best_name][m]
        tgt, ok = targets[m]
        out.append((f"{label} {m} ours/best DCP ({best_name})", ratio, tgt, ok(ratio)))
    return out
