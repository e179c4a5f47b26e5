"""The checkpoint commit protocol: shards, then a manifest, then the pointer.

A checkpoint is many files written by many processes over seconds to minutes, and any of
them may die at any instant (SIGKILL, node loss, a full disk, S3 throttling). Resume must
nevertheless always find the newest checkpoint that is complete and must never lose or
overwrite one that was complete. The protocol gets there with three ordered layers, each
of which only ever refers to things already durable:

1. **Shards.** Every rank writes its own files under ``<prefix>/step-<8 digits>/``: one
   safetensors file with all its tensors and one JSON file with the rest of its state
   (never pickle), then ``rank-<r>.a<attempt>.done.json`` holding the sha256 and size of
   those two. File names carry the attempt, so a restarted gang that saves the same step
   again never mixes its files with a dead attempt's leftovers. Every object is written
   atomically by the store (temp + fsync + rename, or one S3 PUT / multipart completion).
2. **Manifest.** Rank 0's background thread polls the store (bounded by
   ``barrier_timeout``) until every rank's done file for this step and attempt exists, then
   writes ``manifest.a<attempt>.json``: run id, attempt, step, world size, time and the
   sha256/size of every shard file. It is written create-only, so an existing manifest
   (something another writer may already point at) is never replaced.
3. **Pointer.** ``<prefix>/latest.json`` moves last, by compare-and-swap (S3 ``If-Match``
   on its ETag, local ``flock`` + ``os.replace``), and only forward: it refuses a writer of
   an older attempt than the one it names (a zombie of a replaced gang) and any older step
   (the same step only from a newer attempt). The pointer also carries the last K committed entries, which is the
   retention list.

A checkpoint is *committed* when the pointer names it. Anything else is partial: a crash
between shards leaves files without a done marker, a crash before or during the manifest
leaves no manifest (the manifest itself appears atomically), a crash after the manifest
leaves a manifest nobody points at. ``latest()`` walks the pointer's entries newest first
and returns the first whose manifest parses and whose files all exist with the recorded
sizes (``deep=True`` also re-hashes them); ``load()`` always re-hashes what it reads, so a
corrupted file makes the caller fall back to the previous committed entry
(:meth:`CheckpointManager.load_latest`). Only when the pointer is missing or unreadable
does ``latest()`` scan manifests instead, newest (step, attempt) first.

Garbage collection runs on rank 0 right after a successful pointer move and only deletes
step directories older than the step just committed that are not among the kept K, so a
partial checkpoint is removed only once something newer is committed, and nothing a reader
may be about to resume from is ever deleted.

Asynchrony: ``save()`` blocks for the in-memory snapshot only (``codec.snapshot``); the
shard writes, the barrier, the manifest and the pointer run on one background thread.
With ``defer`` (background staging) it does not even wait for the copy of the tensors
``defer`` selects: copy-pool threads finish it while the loop runs its next
forward/backward, and the caller must call :meth:`CheckpointManager.wait_staged` before it
updates any of them in place (the runtime's session does so in an optimizer step pre-hook).
The persist thread writes each tensor once its own copy landed and marks nothing done
before the whole copy is complete and found untouched, so what is committed is the state
at ``save()``, byte for byte; the time the loop spends in ``wait_staged`` counts
as stall. At
most one save is in flight: a new ``save()`` first waits for the previous one (the wait is
reported in the handle, so a too-short interval shows up as stall instead of silently
queueing snapshots in host memory). Storage failures are recorded (``failing_since``,
``last_error``) and do not interrupt training until no checkpoint has been committed for
``max_age_seconds``; then ``save()``/``wait()`` raise :class:`CheckpointError`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from llmops.api.checkpoint import Checkpoint

from .codec import (
    BufferPool,
    CorruptShard,
    SafetensorsTiles,
    Staging,
    iter_safetensors,
    parse_safetensors,
    restore,
    snapshot,
)
from .store import (
    Conflict,
    Digest,
    LocalStore,
    NotFound,
    StorageError,
    Store,
    io_nice,
    lower_priority,
    waiting_for_save,
)

KEEP_LAST: int = Checkpoint.model_fields["keep_last"].default  # spec.checkpoint.keepLast's default, declared once

log = logging.getLogger("llmops.checkpoint")

POINTER_KEY = "latest.json"
MANIFEST_FORMAT = "llmops-ckpt-manifest/2"
#: Manifest formats this version reads. /1 (before the sha256 hash list): every file's
#: digest is the plain sha256 of the whole file; /2: digests carry a ``piece`` size and are
#: hash-list roots (``store.Digest``). The shard files themselves are the same in both.
MANIFEST_FORMATS_READ = ("llmops-ckpt-manifest/1", MANIFEST_FORMAT)
POINTER_FORMAT = "llmops-ckpt-pointer/1"
DONE_FORMAT = "llmops-ckpt-done/1"
_ID_RE = re.compile(r"^step-(\d{8,})$")
_MANIFEST_RE = re.compile(r"^(step-\d{8,})/manifest\.a(\d+)\.json$")


class CheckpointError(Exception):
    """Checkpointing cannot go on: storage has failed for longer than ``max_age_seconds``
    (the runtime exits with ``ExitCode.CHECKPOINT_UNRECOVERABLE``), or a load failed."""


class OwnedByAnotherRun(CheckpointError):
    """The prefix's pointer names another run and this run may not continue it (SameRun)."""


class CheckpointCorrupt(CheckpointError):
    """A committed checkpoint's files are missing or do not match its manifest."""


class TornSnapshot(CheckpointError):
    """A tensor whose copy was deferred changed before the copy finished: the save fails."""


def checkpoint_id(step: int) -> str:
    return f"step-{step:08d}"


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def shard_keys(cid: str, rank: int, attempt: int) -> tuple[str, str, str]:
    """(tensors, skeleton, done) keys of one rank's shard."""
    stem = f"{cid}/rank-{rank:05d}.a{attempt:04d}"
    return f"{stem}.safetensors", f"{stem}.json", f"{stem}.done.json"


def manifest_key(cid: str, attempt: int) -> str:
    return f"{cid}/manifest.a{attempt:04d}.json"


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint. On rank 0 (and from ``latest``) it is committed; a save handle on
    another rank returns it once that rank's shard is durable."""

    id: str  # "step-00000120"
    step: int  # optimizer steps completed when it was taken
    uri: str  # URI of its manifest
    time: str  # RFC 3339, when the manifest was written
    attempt: int  # gang restart attempt that wrote it
    run_id: str  # run (TrainingJob uid) that wrote it
    world_size: int  # number of ranks (shards)
    manifest: str  # manifest key relative to the store root

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SaveHandle:
    """An in-flight or finished save. ``result()`` returns the info, or ``None`` when the
    save failed (the reason is in ``error`` and in the manager's ``last_error``)."""

    step: int
    id: str
    snapshot_seconds: float  # time the caller was blocked copying state (the stall)
    waited_seconds: float  # time the caller waited for the previous save to finish
    snapshot_bytes: int
    _future: Future[CheckpointInfo | None]
    error: str | None = None
    staging: Staging | None = None  # background staging (``save(defer=...)``), else None
    staging_wait_seconds: float = 0.0  # time the caller spent in ``wait_staged`` for this save

    def done(self) -> bool:
        return self._future.done()

    def staged(self) -> bool:
        """The state at ``save()`` is fully copied: updating it in place is safe again."""
        return self.staging is None or self.staging.done()

    def result(self, timeout: float | None = None) -> CheckpointInfo | None:
        try:
            if self._future.done():
                return self._future.result()
            with waiting_for_save():  # the loop is blocked: the persist may use every core
                return self._future.result(timeout)
        except TimeoutError:
            raise
        except Exception as e:  # recorded by the manager already
            self.error = self.error or f"{type(e).__name__}: {e}"
            return None

    @property
    def stall_seconds(self) -> float:
        return self.snapshot_seconds + self.waited_seconds + self.staging_wait_seconds


def _info_from(d: dict[str, Any], store: Store) -> CheckpointInfo:
    return CheckpointInfo(
        id=str(d["id"]),
        step=int(d["step"]),
        uri=store.url(str(d["manifest"])),
        time=str(d["time"]),
        attempt=int(d["attempt"]),
        run_id=str(d["run_id"]),
        world_size=int(d["world_size"]),
        manifest=str(d["manifest"]),
    )


def _entry_json(info: CheckpointInfo) -> dict[str, Any]:
    d = info.to_json()
    d.pop("uri")
    return d


class CheckpointManager:
    """Saves and finds this rank's checkpoints under one store (see the module essay)."""

    def __init__(
        self,
        store: Store,
        run_id: str,
        attempt: int,
        rank: int,
        world_size: int,
        keep_last: int = KEEP_LAST,
        max_age_seconds: float | None = None,
        barrier_timeout: float = 600,
        continue_other_runs: bool = False,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if keep_last < 1:
            raise ValueError("keep_last must be >= 1")
        self.store = store
        self.run_id = run_id
        self.attempt = attempt
        self.rank = rank
        self.world_size = world_size
        self.keep_last = keep_last
        self.max_age_seconds = max_age_seconds
        self.barrier_timeout = barrier_timeout
        #: resumePolicy Continue: another run's checkpoints at this prefix may be resumed and
        #: stay kept (never garbage-collected) until newer commits push them out
        self.continue_other_runs = continue_other_runs
        #: local stores: load() returns tensors in a copy-on-write map of the shard file
        self.mapped_loads = True
        #: wall-clock time (time.time()) of the first failure since the last success
        self.failing_since: float | None = None
        self.last_error: str | None = None
        #: True once the pointer named a newer attempt: this process is a zombie and should stop
        self.superseded = False
        self.last_committed: CheckpointInfo | None = None
        self._last_good = time.monotonic()  # age of "last good" starts at construction
        self._lock = threading.Lock()
        self._pool = BufferPool()
        # The persist thread writes while training runs: it gets the hashing pool's
        # niceness (store.IoPool; none by default).
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"ckpt-persist-r{rank}", initializer=lower_priority, initargs=(io_nice(),)
        )
        self._inflight: SaveHandle | None = None
        self._last_ok_step: int | None = None
        self._last_ok_handle: SaveHandle | None = None
        self._closed = False

    # ------------------------------------------------------------------ saving

    def save(
        self, step: int, state: dict[str, Any], *, blocking: bool = False, extra: dict[str, Any] | None = None,
        defer: Callable[[Any], bool] | None = None,
    ) -> SaveHandle:
        """Snapshot ``state`` now and persist it in the background (see the module essay).

        ``defer(tensor)`` True: that tensor is copied in the background after this returns;
        call :meth:`wait_staged` before updating it in place.

        Raises :class:`CheckpointError` when storage has been failing for longer than
        ``max_age_seconds``, and ``codec.NotPortable`` when ``state`` holds an object that
        could only be pickled."""
        if self._closed:
            raise CheckpointError("checkpoint manager is closed")
        if step < 0:
            raise ValueError("step must be >= 0")
        t0 = time.monotonic()
        if self._inflight is not None:
            self._inflight.result()
        waited = time.monotonic() - t0
        self._raise_if_too_old()
        cid = checkpoint_id(step)
        if self._last_ok_step is not None and step <= self._last_ok_step:
            if step < self._last_ok_step:
                raise ValueError(f"step {step} is older than the last saved step {self._last_ok_step}")
            assert self._last_ok_handle is not None
            return self._last_ok_handle  # this step is already durable: saving it again is a no-op
        t1 = time.monotonic()
        snap = snapshot(state, self._pool, defer=defer)
        if snap.staging is not None:
            snap.staging.start()
        snap_s = time.monotonic() - t1
        extra = json.loads(json.dumps(extra)) if extra else None  # freeze it, refuse non-JSON now
        fut = self._executor.submit(self._persist, step, snap, extra)
        handle = SaveHandle(step, cid, snap_s, waited, snap.tensor_bytes + len(snap.skeleton), fut,
                            staging=snap.staging)
        self._inflight = handle
        fut.add_done_callback(lambda f: self._remember_ok(handle, f))
        if blocking:
            handle.result()
            self._raise_if_too_old()
        return handle

    def _remember_ok(self, handle: SaveHandle, fut: Future[CheckpointInfo | None]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._last_ok_handle = handle

    def wait_staged(self) -> float:
        """Block until the in-flight save's background copy is complete (helping with it);
        the seconds blocked, also added to that save's ``stall_seconds``. After it returns,
        the tensors the save deferred may be updated in place. Cheap when nothing is left."""
        handle = self._inflight
        if handle is None or handle.staged():
            return 0.0
        assert handle.staging is not None
        seconds = handle.staging.wait()
        handle.staging_wait_seconds += seconds
        return seconds

    def wait(self) -> CheckpointInfo | None:
        """Wait for the in-flight save and the retention that follows it; the save's info,
        or ``None`` if it failed (see ``last_error``)."""
        handle = self._inflight
        info = handle.result() if handle is not None else None
        if not self._closed:
            with waiting_for_save():
                self._executor.submit(lambda: None).result()  # drain housekeeping (retention) too
        self._raise_if_too_old()
        return info

    def _raise_if_too_old(self) -> None:
        if self.failing_since is None or self.max_age_seconds is None:
            return
        age = time.monotonic() - self._last_good
        if age > self.max_age_seconds:
            raise CheckpointError(
                f"no checkpoint committed for {age:.0f}s (limit {self.max_age_seconds:.0f}s); last error: {self.last_error}"
            )

    def _persist(self, step: int, snap: Any, extra: dict[str, Any] | None) -> CheckpointInfo | None:
        try:
            info = self._persist_inner(step, snap, extra)
        except Exception as e:
            with self._lock:
                if self.failing_since is None:
                    self.failing_since = time.time()
                self.last_error = f"{type(e).__name__}: {e}"
            log.warning("checkpoint step %d failed: %s", step, self.last_error)
            raise
        with self._lock:
            self.failing_since = None
            self.last_error = None
            self._last_good = time.monotonic()
            self._last_ok_step = step
            if self.rank == 0:
                self.last_committed = info
        return info

    def _persist_inner(self, step: int, snap: Any, extra: dict[str, Any] | None) -> CheckpointInfo:
        store = self.store
        cid = checkpoint_id(step)
        t_key, s_key, d_key = shard_keys(cid, self.rank, self.attempt)
        # background staging: each tensor is written as soon as its copy landed; nothing is
        # marked done before the whole copy is complete and found untouched
        t_digest = store.write(t_key, iter_safetensors(snap.tensors, staging=snap.staging))
        if snap.staging is not None:
            snap.staging.wait(help=False)
            if snap.staging.error:
                raise TornSnapshot(f"step {step}: {snap.staging.error}")
        s_digest = store.write(s_key, [snap.skeleton])
        done = {
            "format": DONE_FORMAT,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "step": step,
            "rank": self.rank,
            "world_size": self.world_size,
            "files": {t_key: t_digest.to_json(), s_key: s_digest.to_json()},
            "tensors": t_key,
            "skeleton": s_key,
        }
        store.put(d_key, json.dumps(done).encode())
        m_key = manifest_key(cid, self.attempt)
        if self.rank != 0:
            return CheckpointInfo(cid, step, store.url(m_key), _now_rfc3339(), self.attempt, self.run_id, self.world_size, m_key)

        dones = self._gather(cid, step)
        manifest = {
            "format": MANIFEST_FORMAT,
            "id": cid,
            "step": step,
            "attempt": self.attempt,
            "run_id": self.run_id,
            "world_size": self.world_size,
            "time": _now_rfc3339(),
            "ranks": {str(r): {"tensors": d["tensors"], "skeleton": d["skeleton"]} for r, d in sorted(dones.items())},
            "files": {k: v for r in sorted(dones) for k, v in dones[r]["files"].items()},
            "extra": extra,
        }
        try:
            store.put(m_key, json.dumps(manifest, indent=1).encode(), create_only=True)
        except Conflict:
            # Same attempt saved this step before (a retried save after a pointer failure):
            # reuse the existing manifest only if it describes exactly the same files.
            existing = json.loads(store.read(m_key))
            if existing.get("files") != manifest["files"] or existing.get("run_id") != self.run_id:
                raise StorageError(f"{m_key} exists with different content; not overwriting a manifest") from None
            manifest = existing
        info = CheckpointInfo(
            cid, step, store.url(m_key), str(manifest["time"]), self.attempt, self.run_id, self.world_size, m_key
        )
        self._move_pointer(info)
        # Retention runs as the persist thread's next task: the save counts as done at the
        # commit, and the next persist (same single thread) starts only after collection.
        self._executor.submit(self._collect_garbage_quietly, step)
        return info

    def _gather(self, cid: str, step: int) -> dict[int, dict[str, Any]]:
        """Poll the store until every rank's done file for (step, attempt) is there."""
        wanted = {r: shard_keys(cid, r, self.attempt)[2] for r in range(self.world_size)}
        found: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + self.barrier_timeout
        delay = 0.005
        while True:
            present = set(self.store.list(cid + "/")) if len(found) < len(wanted) else set()
            for r, key in wanted.items():
                if r in found or key not in present:
                    continue
                d = json.loads(self.store.read(key))
                if d.get("run_id") != self.run_id or d.get("attempt") != self.attempt or d.get("step") != step:
                    continue
                found[r] = d
            if len(found) == len(wanted):
                return found
            if time.monotonic() > deadline:
                missing = sorted(set(wanted) - set(found))
                raise StorageError(f"{cid}: ranks {missing} did not finish their shards within {self.barrier_timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, self.store.poll_max_seconds)

    def _move_pointer(self, info: CheckpointInfo) -> None:
        refusal: list[str] = []

        def decide(current: bytes | None) -> bytes | None:
            refusal.clear()
            cur = _parse_pointer(current)
            kept: list[dict[str, Any]] = []
            if cur is not None and cur.get("run_id") == self.run_id:
                if int(cur["attempt"]) > self.attempt:
                    refusal.append(f"superseded: pointer names attempt {cur['attempt']} (this is attempt {self.attempt})")
                    return None
                # A newer attempt may re-commit the pointer's own step (e.g. after resuming
                # past a corrupted newest checkpoint); nobody may move it to an older step.
                if int(cur["step"]) > info.step or (int(cur["step"]) == info.step and int(cur["attempt"]) == self.attempt):
                    refusal.append(f"pointer already at step {cur['step']} (attempt {cur['attempt']}), not moving back to {info.step}")
                    return None
                kept = [e for e in cur.get("kept", []) if int(e["step"]) < info.step]
            elif cur is not None:
                if not self.continue_other_runs:
                    refusal.append(f"the prefix holds run {cur.get('run_id')}'s checkpoints (resumePolicy SameRun): not taking it over")
                    return None
                log.warning("pointer belonged to run %s; this run %s continues it", cur.get("run_id"), self.run_id)
                kept = [e for e in cur.get("kept", []) if int(e["step"]) < info.step]
            entry = _entry_json(info)
            pointer = {"format": POINTER_FORMAT, **entry, "kept": [entry, *kept][: self.keep_last]}
            return json.dumps(pointer, indent=1).encode()

        if self.store.swap(POINTER_KEY, decide) is None:
            if refusal and refusal[0].startswith("superseded"):
                self.superseded = True
            raise StorageError(f"pointer not moved to {info.id}: {refusal[0] if refusal else 'refused'}")

    def _collect_garbage_quietly(self, committed_step: int) -> None:
        try:
            self._collect_garbage(committed_step)
        except StorageError as e:  # retention is housekeeping; a failure must not fail anything
            log.warning("checkpoint garbage collection failed: %s", e)

    def _collect_garbage(self, committed_step: int) -> None:
        pointer = _parse_pointer(self._read_pointer_bytes())
        if pointer is None:
            return
        keep = {str(e["id"]) for e in pointer.get("kept", [])}
        for cid in _step_dirs(self.store):
            m = _ID_RE.match(cid)
            if m and int(m.group(1)) < committed_step and cid not in keep:
                self.store.delete_prefix(cid)

    # ------------------------------------------------------------------ finding and loading

    def _read_pointer_bytes(self) -> bytes | None:
        try:
            return bytes(self.store.read(POINTER_KEY))
        except NotFound:
            return None

    def candidates(self) -> list[CheckpointInfo]:
        """Committed checkpoints of this run, newest first, unverified: the pointer's kept
        entries, or (pointer missing/corrupt) every manifest found by scanning."""
        pointer = _parse_pointer(self._read_pointer_bytes())
        if pointer is not None and pointer.get("run_id") == self.run_id:
            return [_info_from(e, self.store) for e in pointer.get("kept", [])]
        if pointer is not None:
            if self.continue_other_runs:  # resumePolicy Continue: the earlier run's kept checkpoints
                return [_info_from(e, self.store) for e in pointer.get("kept", [])]
            raise OwnedByAnotherRun(
                f"{self.store.uri} holds checkpoints of another run ({pointer.get('run_id')}, newest step "
                f"{pointer.get('step')}); set spec.checkpoint.resumePolicy: Continue to continue them, or use another uri")
        found: list[CheckpointInfo] = []
        for key in self.store.list():
            if not _MANIFEST_RE.match(key):
                continue
            try:
                m = json.loads(self.store.read(key))
                if m.get("format") in MANIFEST_FORMATS_READ and m.get("run_id") == self.run_id:
                    found.append(_info_from({**m, "manifest": key}, self.store))
            except (StorageError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda i: (i.step, i.attempt), reverse=True)

    def verify(self, info: CheckpointInfo, deep: bool = False) -> bool:
        """Manifest parses and names this checkpoint; every file exists with its recorded
        size (``deep``: and its sha256)."""
        try:
            m = self._manifest(info)
            for key, d in m["files"].items():
                digest = Digest.from_json(d)
                if deep:
                    self.store.read(key, expect=digest)
                elif self.store.size(key) != digest.size:
                    return False
            return True
        except (StorageError, CheckpointError, ValueError, KeyError, TypeError):
            return False

    def latest(self, verify: bool = True, deep: bool = False) -> CheckpointInfo | None:
        """The newest committed checkpoint of this run that passes :meth:`verify`."""
        for info in self.candidates():
            if not verify or self.verify(info, deep=deep):
                return info
        return None

    def _manifest(self, info: CheckpointInfo) -> dict[str, Any]:
        try:
            m = json.loads(self.store.read(info.manifest))
        except NotFound as e:
            raise CheckpointCorrupt(f"{info.id}: manifest missing: {e}") from e
        except ValueError as e:
            raise CheckpointCorrupt(f"{info.id}: manifest is not JSON: {e}") from e
        if not isinstance(m, dict):
            raise CheckpointCorrupt(f"{info.id}: manifest is not a JSON object")
        if m.get("format") not in MANIFEST_FORMATS_READ:
            raise CheckpointCorrupt(
                f"{info.id}: manifest format {m.get('format')!r} is not one this version reads "
                f"({', '.join(MANIFEST_FORMATS_READ)}); a newer version of the runtime wrote it?"
            )
        if (
            m.get("step") != info.step
            or m.get("attempt") != info.attempt
            or m.get("run_id") != info.run_id
        ):
            raise CheckpointCorrupt(f"{info.id}: manifest does not describe this checkpoint")
        return m

    def load(self, info: CheckpointInfo, rank: int | None = None) -> dict[str, Any]:
        """This rank's state from ``info``; every byte read is checked against the manifest's
        sha256. Raises :class:`CheckpointCorrupt` on any mismatch."""
        r = self.rank if rank is None else rank
        m = self._manifest(info)
        shard = m["ranks"].get(str(r))
        if shard is None:
            raise CheckpointCorrupt(f"{info.id}: no shard for rank {r} (world size {m['world_size']})")
        try:
            t_key, t_digest = shard["tensors"], Digest.from_json(m["files"][shard["tensors"]])
            if isinstance(self.store, LocalStore) and self.mapped_loads:
                # tensors viewed in a copy-on-write map of the verified file: no copy
                tensors = parse_safetensors(self.store.read_mapped(t_key, t_digest))
            elif isinstance(self.store, LocalStore):
                # straight from the page cache into one tensor per entry (no whole-file buffer)
                plan = SafetensorsTiles()
                self.store.read_tiles(t_key, t_digest, plan.tiles)
                tensors = plan.tensors()
            else:  # S3: one buffer filled by parallel ranged GETs, tensors viewed in it
                tensors = parse_safetensors(self.store.read_buffer(t_key, expect=t_digest))
            skeleton = self.store.read(shard["skeleton"], expect=Digest.from_json(m["files"][shard["skeleton"]]))
            return restore(bytes(skeleton), tensors)
        except (StorageError, CorruptShard, KeyError) as e:
            raise CheckpointCorrupt(f"{info.id} rank {r}: {e}") from e

    def load_latest(self, rank: int | None = None) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """Newest committed checkpoint whose shard for this rank loads and verifies, with its
        state; falls back entry by entry past corrupted ones. With several ranks, agree on
        the id first (each rank checks :meth:`candidates` and the group takes the newest
        every rank could load), since corruption may hit one rank's shard only."""
        for info in self.candidates():
            try:
                return info, self.load(info, rank)
            except CheckpointError as e:
                log.warning("checkpoint %s unusable, trying an older one: %s", info.id, e)
        return None

    # ------------------------------------------------------------------ lifecycle

    def close(self, wait: bool = True) -> None:
        if self._closed:
            return
        self._closed = True
        if wait and self._inflight is not None:
            self._inflight.result()
        self._executor.shutdown(wait=wait)
        self._pool.clear()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse_pointer(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        p = json.loads(raw)
        if p.get("format") != POINTER_FORMAT:
            return None
        int(p["step"]), int(p["attempt"]), str(p["run_id"]), str(p["manifest"])
        return p
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _step_dirs(store: Store) -> list[str]:
    return sorted({k.split("/", 1)[0] for k in store.list() if "/" in k and _ID_RE.match(k.split("/", 1)[0])})
