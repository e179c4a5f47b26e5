"""Our checkpoint engine and torch.distributed.checkpoint (DCP) ``async_save``, side by side.

Used by ``bench/checkpoint.py`` (see its docstring for what is printed). Each setting runs
``world`` processes (spawned, gloo process group); every rank holds a ``size_mb / world``
share of the state model of ``checkpoint.make_state`` (its own shard, under a rank-unique
key for DCP, which would otherwise treat plain tensors as replicated and write them once).
Per repetition every variant, in an order that rotates with the repetition, does:

    barrier -> an idle training step, timed: forward/backward (``--fwd-ms`` of read-only
          compute) + update (in place, every model tensor) -> barrier
    a step with a save: save -> forward/backward -> wait for staging -> update
          stall   = until the save call returns + the wait for staging before the update
                    (ours-bg: ``wait_staged()``; dcp-async: ``staging_completion``; the
                    others stage inside the call and wait 0)
          loop    = that step's time (save call included) / the idle step's time
          durable = until the save is known durable (ours: committed, pointer moved; DCP:
                    the upload future done, .metadata renamed), timed by a callback on it
    untimed: checkpoints older than the last two deleted (ours: its retention, which runs
          on the persist thread after the commit, so ``wait()``; DCP: rank 0 removes them)
    barrier -> restore of this rank's shard -> barrier
    local only: the checkpoint's files dropped from the page cache (posix_fadvise DONTNEED,
          both variants) -> barrier -> restore again ("restore-cold", what a gang restarted
          on other nodes, or after the cache was reclaimed, pays) -> barrier

Times are the maximum over ranks of one repetition, then the median over repetitions (a
warm-up repetition is dropped). ``ours`` stages inside ``save()`` (as before background
staging); ``ours-bg`` defers the copy of the model and optimizer tensors (what the
runtime's session does with the registered optimizer's parameters and state) and waits
for it before the update, as the session's optimizer step pre-hook does. ``ours-buffered`` (local only) is ``ours`` writing through
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

METRICS = ("stall", "durable", "restore", "restore-cold", "loop")


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
        out["dcp-async"] = f"DefaultStager(StagingOptions: shared memory, {pin}, asynchronous staging)"
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


def _stamp(fut: Any) -> list[float]:
    """A cell that receives the time ``fut`` completes (from the thread completing it)."""
    cell: list[float] = []
    fut.add_done_callback(lambda _f: cell.append(time.perf_counter()))
    return cell


class _Ours:
    """Our engine; ``bg``: background staging of the model and optimizer tensors;
    ``buffered``: its local store writing through the page cache (no O_DIRECT)."""

    def __init__(self, uri: str, rank: int, world: int, buffered: bool = False, bg: bool = False) -> None:
        from llmops_runtime.checkpoint import CheckpointManager, open_store

        self.bg = bg
        self.root = uri
        store = open_store(uri)
        if buffered:
            store.direct = False  # type: ignore[attr-defined]
        self.mgr = CheckpointManager(store, "bench-dcp", 0, rank, world, keep_last=2)
        self.info: Any = None
        self.handle: Any = None
        self.done_at: list[float] = []

    def save(self, step: int, state: dict[str, Any]) -> float:
        from checkpoint import tensors_of
        from llmops_runtime.checkpoint import sharing_memory_with

        defer = sharing_memory_with(tensors_of(state["model"]) + tensors_of(state["optimizer"])) if self.bg else None
        self.handle = self.mgr.save(step, state, defer=defer)
        returned = time.perf_counter()
        self.done_at = _stamp(self.handle._future)
        return returned

    def wait_staged(self) -> None:
        self.mgr.wait_staged()

    def durable(self) -> float:
        self.info = self.handle.result()
        if self.info is None:
            raise RuntimeError(f"save failed: {self.mgr.last_error}")
        return self.done_at[0]

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
        self.response: Any = None
        self.done_at: list[float] = []
        if name in ("dcp-stager", "dcp-async"):
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            cuda = torch.cuda.is_available()
            self.stager = DefaultStager(StagingOptions(cuda, True, name == "dcp-async", cuda))
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
        self.response = dcp.async_save(state, checkpoint_id=self.path, storage_writer=writer, async_stager=self.stager)
        returned = time.perf_counter()
        self.done_at = _stamp(getattr(self.response, "upload_completion", self.response))
        return returned

    def wait_staged(self) -> None:
        staging = getattr(self.response, "staging_completion", None)  # async staging only
        if staging is not None:
            staging.result()

    def durable(self) -> float:
        getattr(self.response, "upload_completion", self.response).result()
        return self.done_at[0]

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
    from checkpoint import forward_backward, make_state, train_step

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
        variants: dict[str, Any] = {"ours": _Ours(ours_uri, rank, world),
                                    "ours-bg": _Ours(ours_uri + "-bg", rank, world, bg=True)}
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
                mine = name.startswith("ours")
                step += 1
                dist.barrier()
                t_idle = time.perf_counter()
                forward_backward(cfg["fwd_iters"])
                train_step(state)
                idle = time.perf_counter() - t_idle
                dist.barrier()
                t0 = time.perf_counter()
                t_ret = v.save(step, state if mine else dcp_state)
                forward_backward(cfg["fwd_iters"])  # the next step's compute: may overlap staging
                t_w = time.perf_counter()
                v.wait_staged()  # before the update, as the optimizer step pre-hook does
                waited = time.perf_counter() - t_w
                train_step(state)
                looped = time.perf_counter() - t0
                t_done = v.durable()
                v.settle(step)  # untimed: old checkpoints deleted (ours: retention; DCP: rmtree)
                dist.barrier()
                t1 = time.perf_counter()
                v.load(state if mine else dcp_state)
                t_load = time.perf_counter() - t1
                dist.barrier()
                t_cold = float("nan")
                if local:
                    gc.collect()  # nothing may map the files any more
                    _evict(v.files())
                    dist.barrier()
                    t1 = time.perf_counter()
                    v.load(state if mine else dcp_state)
                    t_cold = time.perf_counter() - t1
                    dist.barrier()
                vals = torch.tensor([t_ret - t0 + waited, t_done - t0, t_load, t_cold, looped / idle], dtype=torch.float64)
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


def run_setting(kind: str, world: int, size_mb: float, reps: int, base: str, fwd_iters: int,
                bucket: str | None = None, env: dict[str, str] | None = None) -> dict[str, dict[str, float]]:
    """Medians {variant: {stall, durable, restore, restore-cold, loop}} of one setting (see
    the module doc; restore-cold is NaN for S3)."""
    work = tempfile.mkdtemp(prefix=f"dcp-{kind}-{world}-", dir=base)
    try:
        cfg = {
            "kind": kind, "size_mb": size_mb, "reps": reps, "root": work, "bucket": bucket, "fwd_iters": fwd_iters,
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
    """Prints the setting's medians; returns ratio rows ours/DCP with their targets: for
    ``ours`` (staging inside save(), the default) and ``ours-bg`` (background staging,
    opt-in) against the best DCP variant, ``ours-bg`` against every variant,
    ``ours-buffered`` against the best without a target."""
    dcps = {n: r for n, r in med.items() if not n.startswith("ours")}
    metrics = [m for m in METRICS if not math.isnan(med["ours"][m])]
    times = [m for m in metrics if m != "loop"]
    print(f"\n[{label}] medians, ms (max over ranks per repetition); loop = step with a save / idle step")
    print(f"  {'variant':13s} " + " ".join(f"{m:>12s}" for m in times) + f" {'loop':>7s}")
    for n, r in med.items():
        print(f"  {n:13s} " + " ".join(f"{r[m] * 1e3:12.1f}" for m in times) + f" {r['loop']:6.2f}x")
    out: list[Row] = []
    targets: dict[str, tuple[str, Callable[[float], bool]]] = {
        "stall": ("<= 0.5", lambda x: x <= 0.5),
        "durable": ("<= 1.0", lambda x: x <= 1.0),
        "restore": ("<= 1.0", lambda x: x <= 1.0),
        "restore-cold": ("<= 1.0", lambda x: x <= 1.0),
        "loop": ("", lambda x: True),
    }
    for m in metrics:
        best_name = min(dcps, key=lambda n: dcps[n][m])
        best = dcps[best_name][m]
        tgt, ok = targets[m]
        for ours in ("ours", "ours-bg"):
            ratio = med[ours][m] / best
            out.append((f"{label} {m} {ours}/best DCP ({best_name})", ratio, tgt, ok(ratio)))
        for n, r in dcps.items():
            out.append((f"{label} {m} ours-bg/{n}", med["ours-bg"][m] / r[m], "", True))
        if "ours-buffered" in med:  # the same engine writing through the page cache
            out.append((f"{label} {m} ours-buffered/best DCP", med["ours-buffered"][m] / best, "", True))
    return out
