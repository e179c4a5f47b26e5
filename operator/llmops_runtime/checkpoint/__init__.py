"""The checkpoint engine of the training runtime (stores, commit protocol, async save).

Interface (stable; used by the launcher and ``step_done`` bookkeeping)::

    from llmops_runtime.checkpoint import open_store, CheckpointManager, CheckpointInfo, CheckpointError

    store = open_store(uri)  # "/abs/dir", "file:///dir", "pvc://claim/path", "s3://bucket/prefix"
    mgr = CheckpointManager(store, run_id, attempt, rank, world_size, keep_last=3,
                            max_age_seconds=None, barrier_timeout=600)

    handle = mgr.save(step, state, blocking=False, extra=None, defer=None)
        # state: this rank's nested tree (dicts incl. int keys, lists, tuples, tensors on any
        # device, numpy arrays/scalars, numbers, str, bytes, None). Blocks only for the
        # in-memory snapshot (and, if the previous save is still running, for that one:
        # at most one in flight). handle.stall_seconds / snapshot_seconds / waited_seconds;
        # handle.result() -> CheckpointInfo | None (None = failed, reason in handle.error).
        # Saving the step already saved is a no-op; an older step raises ValueError.
        # `extra` (JSON) is stored in rank 0's manifest.
        # defer: background staging, a predicate over the state's tensors (e.g.
        # sharing_memory_with(optimizer's params and state)): those tensors are copied
        # after save() returns, by copy-pool threads, and must not be updated in place
        # before mgr.wait_staged() returned.
    mgr.wait_staged() -> float                # block until the in-flight save's copy is complete
                                               # (helping with it); seconds, added to its stall
    mgr.wait() -> CheckpointInfo | None       # the in-flight save's result (+ retention done)
    mgr.latest(verify=True, deep=False)        # newest committed (pointer -> manifest -> files
                                               # present with recorded sizes; deep: + sha256)
    mgr.candidates() -> list[CheckpointInfo]   # committed ones, newest first (unverified)
    mgr.load(info, rank=None) -> dict          # this rank's state (CPU tensors), sha256-verified;
                                               # raises CheckpointCorrupt. Local stores: the
                                               # tensors are a copy-on-write map of the shard
                                               # (mgr.mapped_loads = False: fresh tensors)
    mgr.load_latest() -> (info, state) | None  # newest loadable, falling back past corrupt ones
    mgr.failing_since: float | None            # time.time() of the first failure since the last success
    mgr.last_error: str | None                 # for the CheckpointFailing progress signal
    mgr.last_committed: CheckpointInfo | None  # rank 0: newest committed by this process
    mgr.superseded: bool                       # a newer attempt owns the pointer: stop (zombie)
    mgr.close()

    store.configure_io(threads=None, nice=None)  # the background hashing pool: threads
        # (default usable cores - 1, 2..16; $LLMOPS_CHECKPOINT_IO_THREADS) and niceness added to
        # it and to persist threads created afterwards (default 0; $LLMOPS_CHECKPOINT_IO_NICE)

``CheckpointInfo(id="step-00000120", step, uri, time, attempt, run_id, world_size, manifest)``:
``uri`` is the manifest's full URI, ``manifest`` its key under the store, ``time`` RFC 3339
(when the manifest was written); ``info.to_json()`` gives a dict.

Files under the store root: ``latest.json`` (pointer), ``step-<8 digits>/`` per checkpoint
with ``rank-<r:05>.a<attempt:04>.safetensors`` / ``.json`` (state) / ``.done.json`` and
``manifest.a<attempt:04>.json``. The attempt is part of every name so a restarted gang
never mixes its files with a dead attempt's leftovers.

``save``/``wait`` raise :class:`CheckpointError` once storage has failed for longer than
``max_age_seconds`` since the last success (or since the manager was created); map it to
``ExitCode.CHECKPOINT_UNRECOVERABLE``. On ranks other than 0 a save's info means "this
rank's shard is durable"; only rank 0 commits. The commit protocol is described in
``manager.py``; stores in ``store.py`` / ``s3.py``; the pickle-free state format in ``codec.py``.
"""

from .codec import NotPortable, sharing_memory_with
from .manager import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointInfo,
    CheckpointManager,
    SaveHandle,
    TornSnapshot,
    checkpoint_id,
)
from .store import Digest, IntegrityError, LocalStore, StorageError, Store, open_store

__all__ = [
    "CheckpointCorrupt",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointManager",
    "Digest",
    "IntegrityError",
    "LocalStore",
    "NotPortable",
    "SaveHandle",
    "StorageError",
    "Store",
    "TornSnapshot",
    "checkpoint_id",
    "open_store",
    "sharing_memory_with",
]
