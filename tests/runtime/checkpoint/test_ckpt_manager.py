"""The commit protocol end to end (each test on a local directory and on S3 via moto):
save/latest/load round trip, per-rank shards with two ranks, keep-last-K retention,
partial checkpoints ignored then collected after a newer commit, a pointer that never
moves back or to an older attempt (zombie writers), pointer loss/corruption falling back to
a manifest scan, corrupted shards falling back to the previous commit, other runs never
resumed, at most one save in flight, and the storage-failure age policy."""

from __future__ import annotations

import gc
import hashlib
import json
import threading
import time
import weakref
from typing import Any

import numpy as np
import pytest
import torch
from llmops_runtime.checkpoint import (
    CheckpointCorrupt,
    CheckpointError,
    CheckpointManager,
    Store,
    open_store,
)
from llmops_runtime.checkpoint.manager import POINTER_KEY, OwnedByAnotherRun, checkpoint_id


def make_state(seed: int, n: int = 1000) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {
        "model": {"w": torch.randn(n, generator=g), "b": torch.randn(3, generator=g).to(torch.bfloat16)},
        "optimizer": {"state": {0: {"step": torch.tensor(float(seed)), "exp_avg": torch.randn(n, generator=g)}},
                      "param_groups": [{"lr": 0.1 * seed, "params": [0]}]},
        "rng": {"numpy": np.random.RandomState(seed).get_state()},
        "step": seed,
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        torch.equal(a["model"]["w"], b["model"]["w"])
        and torch.equal(a["model"]["b"], b["model"]["b"])
        and torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
        and a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
        and a["rng"]["numpy"][1].tobytes() == b["rng"]["numpy"][1].tobytes()
        and a["step"] == b["step"]
    )


def mgr(uri: str, attempt: int = 0, rank: int = 0, world: int = 1, run: str = "run-1", **kw: Any) -> CheckpointManager:
    return CheckpointManager(open_store(uri), run, attempt, rank, world, **kw)


def committed_files(store: Store) -> dict[str, str]:
    """sha256 of every file of every committed checkpoint (manifest included)."""
    out: dict[str, str] = {}
    m = CheckpointManager(store, "reader", 0, 0, 1, continue_other_runs=True)  # whoever's they are
    for info in m.candidates():
        out[info.manifest] = hashlib.sha256(store.read(info.manifest)).hexdigest()
        for key in json.loads(store.read(info.manifest))["files"]:
            out[key] = hashlib.sha256(store.read(key)).hexdigest()
    return out


def test_roundtrip(store_uri: str) -> None:
    m = mgr(store_uri)
    assert m.latest() is None and m.load_latest() is None
    state = make_state(3)
    info = m.save(30, state).result()
    assert info is not None and info.id == "step-00000030" and info.step == 30 and info.attempt == 0
    assert m.latest() == info == m.last_committed
    assert m.latest(deep=True) == info
    assert same(m.load(info), state)
    fresh = mgr(store_uri, attempt=1)  # a restarted process finds it
    found = fresh.load_latest()
    assert found is not None and found[0] == info and same(found[1], state)
    m.close()


def test_two_ranks_write_their_own_shards(store_uri: str) -> None:
    states = {r: make_state(10 + r) for r in range(2)}
    managers = {r: mgr(store_uri, rank=r, world=2, barrier_timeout=60) for r in range(2)}
    results: dict[int, Any] = {}

    def run(r: int) -> None:
        results[r] = managers[r].save(5, states[r]).result()

    ts = [threading.Thread(target=run, args=(r,)) for r in (1, 0)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert results[0] is not None and results[1] is not None
    info = managers[0].latest()
    assert info is not None and info.world_size == 2 and info.step == 5
    for r in range(2):
        assert same(managers[r].load(info), states[r])
    manifest = json.loads(managers[0].store.read(info.manifest))
    assert sorted(manifest["ranks"]) == ["0", "1"] and len(manifest["files"]) == 4


def test_retention_keeps_last_k(store_uri: str) -> None:
    m = mgr(store_uri, keep_last=2)
    for step in range(1, 6):
        assert m.save(step, make_state(step)).result() is not None
    m.wait()  # retention runs right after the commit, on the persist thread
    dirs = sorted({k.split("/")[0] for k in m.store.list() if "/" in k})
    assert dirs == ["step-00000004", "step-00000005"]
    assert [i.step for i in m.candidates()] == [5, 4]
    assert same(m.load(m.candidates()[1]), make_state(4))


def test_partial_ignored_then_collected_after_newer_commit(store_uri: str) -> None:
    m = mgr(store_uri, keep_last=3)
    m.save(2, make_state(2)).result()
    # attempt 1, two ranks; rank 1 dies before its shard -> step 3 stays partial
    r0 = mgr(store_uri, attempt=1, rank=0, world=2, barrier_timeout=0.3)
    assert r0.save(3, make_state(3)).result() is None
    assert "did not finish" in (r0.last_error or "")
    assert any(k.startswith("step-00000003/") for k in m.store.list())
    assert m.latest() is not None and m.latest().step == 2  # type: ignore[union-attr]
    assert m.load_latest()[0].step == 2  # type: ignore[index]
    # a newer commit (attempt 2, single rank) garbage-collects the partial step 3, keeps step 2
    m2 = mgr(store_uri, attempt=2)
    assert m2.save(4, make_state(4)).result() is not None
    m2.wait()
    keys = m.store.list()
    assert not any(k.startswith("step-00000003/") for k in keys)
    assert [i.step for i in m2.candidates()] == [4, 2]


def test_pointer_never_moves_back_and_zombies_cannot_move_it(store_uri: str) -> None:
    old = mgr(store_uri, attempt=0)
    assert old.save(5, make_state(5)).result() is not None
    new = mgr(store_uri, attempt=1)
    assert new.save(6, make_state(6)).result() is not None
    before = committed_files(new.store)
    # the zombie of attempt 0 keeps training and tries to commit a newer step
    assert old.save(7, make_state(7)).result() is None
    assert old.superseded and "superseded" in (old.last_error or "")
    # an attempt can never move the pointer to an older step either
    back = mgr(store_uri, attempt=1)
    assert back.save(4, make_state(4)).result() is None and not back.superseded
    latest = new.latest()
    assert latest is not None and (latest.step, latest.attempt) == (6, 1)
    assert committed_files(new.store) == before  # nothing committed was lost or rewritten
    assert same(new.load(latest), make_state(6))
    # a newer attempt may commit the pointer's own step again (never an older one)
    newer = mgr(store_uri, attempt=2)
    assert newer.save(6, make_state(66)).result() is not None
    latest = newer.latest()
    assert latest is not None and (latest.step, latest.attempt) == (6, 2) and same(newer.load(latest), make_state(66))
    assert [(i.step, i.attempt) for i in newer.candidates()] == [(6, 2), (5, 0)]


@pytest.mark.parametrize("damage", ["delete", "garbage", "other-format"])
def test_lost_pointer_falls_back_to_manifest_scan(store_uri: str, damage: str) -> None:
    m = mgr(store_uri, keep_last=5)
    for step in (1, 2, 3):
        m.save(step, make_state(step)).result()
    if damage == "delete":
        m.store.delete_prefix(POINTER_KEY)
    else:
        m.store.put(POINTER_KEY, b"{not json" if damage == "garbage" else b'{"format": "x"}')
    assert [i.step for i in m.candidates()] == [3, 2, 1]
    info = m.latest()
    assert info is not None and info.step == 3 and same(m.load(info), make_state(3))
    # the next commit repairs the pointer
    assert m.save(4, make_state(4)).result() is not None
    assert [i.step for i in mgr(store_uri).candidates()][:1] == [4]


@pytest.mark.parametrize("what", ["tensors-bitflip", "tensors-truncated", "skeleton", "manifest"])
def test_corruption_falls_back_to_previous(store_uri: str, what: str) -> None:
    m = mgr(store_uri)
    m.save(1, make_state(1)).result()
    info = m.save(2, make_state(2)).result()
    assert info is not None
    manifest = json.loads(m.store.read(info.manifest))
    shard = manifest["ranks"]["0"]
    key = {"skeleton": shard["skeleton"], "manifest": info.manifest}.get(what, shard["tensors"])
    data = bytearray(m.store.read(key))
    if what == "tensors-truncated":
        data = data[:-10]
    else:
        data[len(data) // 2] ^= 0x01
    m.store.put(key, bytes(data))
    if what == "tensors-truncated" or what == "manifest":
        assert m.latest().step == 1  # type: ignore[union-attr]
    else:
        assert m.latest().step == 2  # type: ignore[union-attr]  # same size: only hashing can tell
        assert not m.verify(info, deep=True)
    with pytest.raises(CheckpointCorrupt):
        m.load(info)
    found = m.load_latest()
    assert found is not None and found[0].step == 1 and same(found[1], make_state(1))


def test_another_runs_checkpoints_are_refused_and_left_untouched(store_uri: str) -> None:
    """resumePolicy SameRun (default): a re-created job meets the deleted job's checkpoints.
    It neither resumes them silently nor takes the prefix over (which would let retention
    delete them): it is told why, and every committed byte stays."""
    a = mgr(store_uri, run="run-a")
    a.save(9, make_state(9)).result()
    before = committed_files(a.store)
    b = mgr(store_uri, run="run-b")
    with pytest.raises(OwnedByAnotherRun, match=r"run-a.*newest step 9.*resumePolicy: Continue"):
        b.candidates()
    assert b.save(20, make_state(20)).result() is None and "SameRun" in (b.last_error or "")  # refused, reported
    assert json.loads(a.store.read(POINTER_KEY))["run_id"] == "run-a"
    assert {k: v for k, v in committed_files(a.store).items() if k in before} == before
    a.store.delete_prefix(POINTER_KEY)  # no pointer: the manifest scan still finds only own runs
    assert [i.run_id for i in b.candidates()] in ([], ["run-b"]) and mgr(store_uri, run="run-c").latest() is None


def test_continue_resumes_another_run_and_keeps_it_until_newer_commits(store_uri: str) -> None:
    a = mgr(store_uri, run="run-a")
    a.save(9, make_state(9)).result()
    b = mgr(store_uri, run="run-b", keep_last=2, continue_other_runs=True)
    found = b.load_latest()
    assert found is not None and (found[0].step, found[0].run_id) == (9, "run-a") and same(found[1], make_state(9))
    b.save(12, make_state(12)).result()
    b.wait()
    pointer = json.loads(b.store.read(POINTER_KEY))
    assert pointer["run_id"] == "run-b" and [e["step"] for e in pointer["kept"]] == [12, 9]
    assert b.load(b.candidates()[1]) is not None  # run-a's checkpoint is still there, verified
    b.save(15, make_state(15)).result()
    b.wait()
    assert [e["step"] for e in json.loads(b.store.read(POINTER_KEY))["kept"]] == [15, 12]
    assert not [k for k in b.store.list() if k.startswith(checkpoint_id(9))]  # pushed out by retention only now


def test_same_step_is_noop_and_older_step_refused(store_uri: str) -> None:
    m = mgr(store_uri)
    h = m.save(3, make_state(3))
    assert m.save(3, make_state(99)) is h
    with pytest.raises(ValueError):
        m.save(2, make_state(2))
    assert same(m.load(m.latest()), make_state(3))  # type: ignore[arg-type]
    # a failed later save does not change what "step 3 again" answers
    m.store.fault_hook = lambda op, key: (_ for _ in ()).throw(OSError(5, "I/O error"))
    assert m.save(4, make_state(4)).result() is None
    m.store.fault_hook = None
    assert m.save(3, make_state(99)) is h
    assert m.save(4, make_state(4)).result() is not None  # the failed step can be retried


def test_save_blocks_only_for_the_snapshot_and_one_in_flight(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = mgr(str(tmp_path))
    gate = threading.Event()
    m.store.fault_hook = lambda op, key: gate.wait(60) if op == "write" else None
    state = make_state(1)
    h1 = m.save(1, state)
    assert not h1.done()  # persisting is in the background, held at the gate
    state["model"]["w"].add_(100.0)  # the loop mutates its tensors; the snapshot must not see it
    second: list[Any] = []
    t = threading.Thread(target=lambda: second.append((m.save(2, make_state(2)), h1.done())))
    t.start()
    t.join(timeout=0.2)
    assert t.is_alive()  # the second save waits for the first (at most one in flight)
    gate.set()
    t.join(timeout=60)
    h2, first_done_when_second_returned = second[0]
    assert first_done_when_second_returned and h2.waited_seconds > 0
    assert h2.result() is not None
    m.store.fault_hook = None
    assert same(m.load(m.candidates()[1]), make_state(1))


def test_storage_failures_tolerated_until_max_age(tmp_path) -> None:  # type: ignore[no-untyped-def]
    m = mgr(str(tmp_path), max_age_seconds=0.5)
    assert m.save(1, make_state(1)).result() is not None
    failing = threading.Event()
    failing.set()

    def hook(op: str, key: str) -> None:
        if failing.is_set():
            raise OSError(5, "Input/output error")

    m.store.fault_hook = hook
    h = m.save(2, make_state(2))
    assert h.result() is None and h.error and "Input/output error" in h.error
    assert m.failing_since is not None and "Input/output error" in (m.last_error or "")
    # keeps training (no raise) while the last good checkpoint is young; raises once too old
    step = 3
    deadline = time.monotonic() + 60  # bounded poll: the age limit is reached within ~0.5 s
    with pytest.raises(CheckpointError):
        while time.monotonic() < deadline:
            step += 1
            m.save(step, make_state(1)).result()
    assert m.latest().step == 1  # type: ignore[union-attr]
    failing.clear()  # storage recovers: the next save commits and clears the signal
    m.max_age_seconds = None
    assert m.save(step + 1, make_state(2)).result() is not None
    assert m.failing_since is None and m.last_error is None


def test_checkpoint_id_format() -> None:
    assert checkpoint_id(120) == "step-00000120"
    assert checkpoint_id(123456789) == "step-123456789"


def test_gc_never_touches_newer_shards_in_progress(store_uri: str) -> None:
    """Rank 1 is already at the next step while rank 0 commits (and collects) the previous
    one: the newer shards must survive rank 0's garbage collection."""
    r0 = mgr(store_uri, rank=0, world=2, keep_last=1, barrier_timeout=60)
    r1 = mgr(store_uri, rank=1, world=2, keep_last=1, barrier_timeout=60)
    assert r1.save(1, make_state(11)).result() is not None
    assert r1.save(2, make_state(12)).result() is not None  # rank 1 runs ahead
    assert r0.save(1, make_state(1)).result() is not None  # commit 1 + GC (keep 1)
    info = r0.save(2, make_state(2)).result()
    assert info is not None, r0.last_error
    assert same(r1.load(info), make_state(12)) and same(r0.load(info), make_state(2))


def test_checkpoint_of_the_previous_format_loads(store_uri: str) -> None:
    """A manifest of format /1 (whole-file sha256 digests, written before the hash list)
    still loads and verifies; a corrupted file in it is still caught."""
    m = mgr(store_uri)
    m.store.piece = 4096  # several pieces per file: new digests differ from whole-file ones
    state = make_state(5, n=5000)
    info = m.save(5, state).result()
    assert info is not None
    manifest = json.loads(m.store.read(info.manifest))
    assert manifest["format"] == "llmops-ckpt-manifest/2"
    for key, d in manifest["files"].items():
        data = bytes(m.store.read(key))
        assert d["piece"] == 4096 and d["size"] == len(data)
        manifest["files"][key] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest["format"] = "llmops-ckpt-manifest/1"
    m.store.delete_prefix(info.manifest)
    m.store.put(info.manifest, json.dumps(manifest).encode())
    fresh = mgr(store_uri, attempt=1)
    assert fresh.latest(deep=True) == info
    found = fresh.load_latest()
    assert found is not None and found[0] == info and same(found[1], state)
    key = manifest["ranks"]["0"]["tensors"]
    data = bytearray(m.store.read(key))
    data[len(data) // 2] ^= 0x01
    m.store.put(key, bytes(data))
    with pytest.raises(CheckpointCorrupt):
        fresh.load(info)
    m.close()


def test_unknown_manifest_format_is_refused_clearly(store_uri: str) -> None:
    m = mgr(store_uri)
    info = m.save(1, make_state(1)).result()
    assert info is not None
    manifest = json.loads(m.store.read(info.manifest))
    manifest["format"] = "llmops-ckpt-manifest/9"
    m.store.delete_prefix(info.manifest)
    m.store.put(info.manifest, json.dumps(manifest).encode())
    with pytest.raises(CheckpointCorrupt, match=r"manifest format 'llmops-ckpt-manifest/9' is not one this version reads"):
        m.load(info)
    assert m.latest() is None
    m.close()


def test_loaded_tensors_are_private_copies(tmp_path: Any) -> None:
    """Local loads map the shard copy-on-write: the tensors are writable, writing them never
    reaches the file, and the copying load (mapped_loads off) returns the same state."""
    m = mgr(str(tmp_path / "ckpt"))
    state = make_state(9, n=50_000)
    info = m.save(9, state).result()
    assert info is not None
    first = m.load(info)
    assert same(first, state)
    first["model"]["w"].add_(1.0)
    first["optimizer"]["state"][0]["exp_avg"].zero_()
    assert m.verify(info, deep=True)
    assert same(m.load(info), state)
    m.mapped_loads = False
    assert same(m.load(info), state)
    m.close()


def test_a_dropped_restore_is_freed_at_once(tmp_path: Any) -> None:
    """Nothing keeps a restored state alive once the caller drops it (no reference cycle
    waiting for the garbage collector): its tensors, and the file mapping under them, go
    with the last reference."""
    m = mgr(str(tmp_path / "ckpt"))
    info = m.save(1, make_state(1)).result()
    assert info is not None
    gc.disable()
    try:
        loaded = m.load(info)
        w = weakref.ref(loaded["model"]["w"])
        exp_avg = weakref.ref(loaded["optimizer"]["state"][0]["exp_avg"])
        del loaded
        assert w() is None and exp_avg() is None
    finally:
        gc.enable()
    m.close()


def test_persist_thread_yields_to_training(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The background persist (shard writes, barrier, manifest, pointer) runs on a thread
    with the background pool's niceness added, so it yields to the loop; the save commits
    and loads back bitwise as usual."""
    import os

    from llmops_runtime.checkpoint import store as store_mod

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    store_mod.configure_io(nice=4)
    try:
        m = mgr(str(tmp_path / "ckpt"))
        seen: set[int] = set()
        m.store.fault_hook = lambda op, key: seen.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        state = make_state(5)
        info = m.save(5, state).result()
        assert info is not None
        assert seen == {min(19, base + 4)}
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller is untouched
        assert same(m.load(info), state)
        m.close()
    finally:
        store_mod.configure_io()
