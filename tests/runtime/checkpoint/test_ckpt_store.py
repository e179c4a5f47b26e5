"""Store contract, run identically against a local directory and S3 (moto on 127.0.0.1):
atomic writes with sha256 computed while writing, create-only writes never replace,
verified reads detect corruption, listing/deleting by prefix, compare-and-swap under
concurrent writers, URI parsing (absolute path, file://, pvc://, s3://)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from pathlib import Path

import pytest
from llmops.api.runtime_env import CHECKPOINT_DIRECT_IO
from llmops_runtime.checkpoint import store as store_mod
from llmops_runtime.checkpoint.store import (
    Conflict,
    Digest,
    IntegrityError,
    LocalStore,
    NotFound,
    StorageError,
    open_store,
)


def test_write_read_digest(store_uri: str) -> None:
    store = open_store(store_uri)
    data = bytes(range(256)) * 5000
    chunks = [memoryview(data)[i : i + 100_003] for i in range(0, len(data), 100_003)]
    d = store.write("a/b.bin", chunks)
    assert d == Digest(hashlib.sha256(data).hexdigest(), len(data))
    assert bytes(store.read("a/b.bin")) == data
    assert bytes(store.read("a/b.bin", expect=d)) == data
    assert store.size("a/b.bin") == len(data)
    assert store.size("a/missing") is None
    with pytest.raises(NotFound):
        store.read("a/missing")


def test_empty_object(store_uri: str) -> None:
    store = open_store(store_uri)
    d = store.put("e", b"")
    assert d.size == 0 and bytes(store.read("e", expect=d)) == b""


def test_verified_read_detects_mismatch(store_uri: str) -> None:
    store = open_store(store_uri)
    good = store.put("x", b"hello")
    store.put("x", b"jello")  # same size, other bytes: only the hash can tell
    with pytest.raises(IntegrityError):
        store.read("x", expect=good)


def test_create_only_never_replaces(store_uri: str) -> None:
    store = open_store(store_uri)
    store.put("m.json", b"first", create_only=True)
    with pytest.raises(Conflict):
        store.put("m.json", b"second", create_only=True)
    assert bytes(store.read("m.json")) == b"first"


def test_list_and_delete_prefix(store_uri: str) -> None:
    store = open_store(store_uri)
    for k in ("s1/a", "s1/b", "s10/a", "top"):
        store.put(k, k.encode())
    assert store.list() == ["s1/a", "s1/b", "s10/a", "top"]
    assert store.list("s1/") == ["s1/a", "s1/b"]
    store.delete_prefix("s1")
    assert store.list() == ["s10/a", "top"]


def test_swap_refusal_and_concurrent_increments(store_uri: str) -> None:
    store = open_store(store_uri)
    assert store.swap("ptr", lambda cur: None) is None
    assert store.size("ptr") is None

    def incr(cur: bytes | None) -> bytes:
        return str(int(cur or b"0") + 1).encode()

    per_thread, threads = 6, 4
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            s = open_store(store_uri)  # a separate client/lock per writer, like separate pods
            for _ in range(per_thread):
                s.swap("ptr", incr)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    assert not errors
    # every compare-and-swap landed exactly once: no lost update
    assert int(bytes(store.read("ptr"))) == per_thread * threads


def test_local_write_leaves_no_temp_on_failure(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    def boom(op: str, key: str) -> None:
        if op == "chunk":
            raise OSError(28, "No space left on device")

    store.fault_hook = boom
    with pytest.raises(StorageError) as err:
        store.write("d/f", [b"abc", b"def"])
    assert err.value.errno == 28
    assert list((tmp_path / "d").iterdir()) == []


@pytest.mark.parametrize(
    "uri,expected_root",
    [
        ("/abs/dir", "/abs/dir"),
        ("file:///abs/dir", "/abs/dir"),
        ("pvc://claim/sub/dir", "{pvc}/claim/sub/dir"),
        ("pvc://claim", "{pvc}/claim"),
    ],
)
def test_open_store_local_uris(uri: str, expected_root: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LLMOPS_PVC_ROOT", str(tmp_path))
    store = open_store(uri)
    assert isinstance(store, LocalStore)
    assert str(store.root) == expected_root.format(pvc=tmp_path)


def test_open_store_s3_uri(s3_env: str) -> None:
    store = open_store(f"s3://{s3_env}/a/b/")
    assert (store.bucket, store.prefix, store.uri) == (s3_env, "a/b", f"s3://{s3_env}/a/b")  # type: ignore[attr-defined]


@pytest.mark.parametrize("uri", ["relative/dir", "gs://b/p", "s3:///nobucket"])
def test_open_store_rejects(uri: str) -> None:
    with pytest.raises(ValueError):
        open_store(uri)


def test_s3_swap_loses_race_and_redecides(s3_env: str) -> None:
    """S3's swap is optimistic (If-Match): a writer that moved the object between our read
    and our write makes our conditional PUT fail, and we decide again on its value."""
    a, b = open_store(f"s3://{s3_env}/p"), open_store(f"s3://{s3_env}/p")
    a.put("ptr", b"0")
    seen: list[bytes | None] = []

    def decide(cur: bytes | None) -> bytes:
        seen.append(cur)
        if len(seen) == 1:
            assert b.swap("ptr", lambda c: b"B") == b"B"  # the other writer wins the race
        return (cur or b"") + b"+a"

    assert a.swap("ptr", decide) == b"B+a"
    assert seen == [b"0", b"B"]
    assert bytes(a.read("ptr")) == b"B+a"
    # creating an absent object is conditional too (If-None-Match: *)
    seen.clear()

    def create(cur: bytes | None) -> bytes:
        seen.append(cur)
        if len(seen) == 1:
            b.put("new", b"other")
        return b"mine" if cur is None else cur + b"+mine"

    assert a.swap("new", create) == b"other+mine"


def _hash_list_root(data: bytes, piece: int) -> str:
    digests = [hashlib.sha256(data[i : i + piece]).digest() for i in range(0, len(data), piece)]
    return digests[0].hex() if len(digests) == 1 else hashlib.sha256(b"".join(digests)).hexdigest()


def test_digest_is_a_sha256_hash_list_over_pieces(store_uri: str) -> None:
    store = open_store(store_uri)
    store.piece = 1000
    data = bytes(range(256)) * 22  # 5632 bytes: five whole pieces and a partial one
    chunks = [memoryview(data)[i : i + 777] for i in range(0, len(data), 777)]  # chunks straddle pieces
    d = store.write("p.bin", chunks)
    assert (d.sha256, d.size, d.piece) == (_hash_list_root(data, 1000), len(data), 1000)
    assert d.sha256 != hashlib.sha256(data).hexdigest()
    assert Digest.from_json(d.to_json()) == d and Digest.from_json(d.to_json()).piece == 1000
    assert bytes(store.read("p.bin", expect=d)) == data
    assert bytes(store.read_buffer("p.bin", expect=d)) == data
    for where in (0, 2500, len(data) - 1):  # a flipped byte in the first, a middle and the last piece
        bad = bytearray(data)
        bad[where] ^= 0x40
        store.put("p.bin", bytes(bad))
        with pytest.raises(IntegrityError):
            store.read_buffer("p.bin", expect=d)
    store.put("p.bin", data[:-1])
    with pytest.raises(IntegrityError):
        store.read("p.bin", expect=d)


def test_whole_file_digest_of_earlier_checkpoints_still_verifies(store_uri: str) -> None:
    """Digests written before the hash list (no ``piece``) are the plain sha256 of the file."""
    store = open_store(store_uri)
    store.piece = 1000
    data = bytes(range(256)) * 22
    store.write("old.bin", [data])
    legacy = Digest.from_json({"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    assert legacy.piece is None
    assert bytes(store.read_buffer("old.bin", expect=legacy)) == data
    bad = bytearray(data)
    bad[4000] ^= 1
    store.put("old.bin", bytes(bad))
    with pytest.raises(IntegrityError):
        store.read("old.bin", expect=legacy)
    with pytest.raises(ValueError):
        Digest.from_json({"sha256": "00", "size": 1, "piece": 0})


def test_safetensors_read_straight_into_tensors(tmp_path: Path) -> None:
    """LocalStore.read_tiles + SafetensorsTiles: pieces that straddle tensors, an empty
    tensor, odd sizes: every tensor comes back bitwise, and a flipped byte is caught."""
    import torch
    from llmops_runtime.checkpoint.codec import SafetensorsTiles, iter_safetensors, parse_safetensors

    store = LocalStore(tmp_path)
    store.piece = 1000
    g = torch.Generator().manual_seed(1)
    tensors = {
        "a": torch.randn(333, generator=g),
        "b": torch.randn(7, 5, generator=g).to(torch.bfloat16),
        "empty": torch.empty(0, 4),
        "flags": torch.rand(1001, generator=g) > 0.5,
    }
    d = store.write("t.safetensors", iter_safetensors(tensors, chunk=300))
    plan = SafetensorsTiles()
    store.read_tiles("t.safetensors", d, plan.tiles)
    back = plan.tensors()
    assert set(back) == set(tensors)
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and torch.equal(back[k], v), k
    raw = bytearray(store.read("t.safetensors"))
    assert {k: bool(torch.equal(v, tensors[k])) for k, v in parse_safetensors(raw).items()} == dict.fromkeys(tensors, True)
    raw[len(raw) - 500] ^= 0x10
    store.put("t.safetensors", bytes(raw))
    with pytest.raises(IntegrityError):
        store.read_tiles("t.safetensors", d, SafetensorsTiles().tiles)


@pytest.fixture()
def io_pool():  # type: ignore[no-untyped-def]
    """configure_io for one test; the default pool comes back afterwards."""
    from llmops_runtime.checkpoint import store as store_mod

    yield store_mod.configure_io
    store_mod.configure_io()


def test_background_hashing_pool_is_capped_and_runs_at_lower_priority(
    tmp_path: Path, io_pool, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """A write hashes its pieces on at most the configured number of threads, each with
    the configured niceness added, and the digest is the same as with any pool size."""
    import os
    import time

    from llmops_runtime.checkpoint import store as store_mod

    base_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    data = os.urandom(64 * 1024)
    store = LocalStore(tmp_path / "s")
    store.piece = 1024  # 64 pieces
    reference = store.write("ref", [data])

    active, peak, nices = [0], [0], set()
    lock = threading.Lock()
    real = store_mod._hash_slices

    def spy(slices):  # type: ignore[no-untyped-def]
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            nices.add(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        time.sleep(0.002)
        try:
            return real(slices)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(store_mod, "_hash_slices", spy)
    pool = io_pool(threads=2, nice=3)
    assert pool.threads == 2 and store_mod.io_nice() == 3
    d = store.write("x", [memoryview(data)[i : i + 777] for i in range(0, len(data), 777)])
    assert d == reference
    assert 1 <= peak[0] <= 2
    assert nices == {min(19, base_nice + 3)}


def test_background_pool_defaults_leave_a_core_to_training(io_pool) -> None:  # type: ignore[no-untyped-def]
    from llmops_runtime.checkpoint import store as store_mod

    pool = io_pool()
    assert pool.threads == min(16, max(2, store_mod.usable_cpus() - 1))
    assert [store_mod.default_io_threads(n) for n in (1, 2, 3, 8, 64)] == [2, 2, 2, 7, 16]
    assert pool.nice == store_mod.DEFAULT_IO_NICE
    for bad in ({"threads": 0}, {"nice": -1}, {"nice": 20}):
        with pytest.raises(ValueError):
            io_pool(**bad)


def test_s3_download_sink_hashes_pieces_as_they_land() -> None:
    """The S3 download target hashes each piece once all its bytes arrived (ranged GETs in
    any order, pieces split across writes); a piece written again (a retried GET) is
    hashed from its final bytes, so the digest is always that of what the buffer holds."""
    import os
    import random

    from llmops_runtime.checkpoint.s3 import _BufferSink
    from llmops_runtime.checkpoint.store import _READ_POOL, Sha256Pieces

    data = bytearray(os.urandom(10_500))
    piece = 1000

    def expect(buf: bytes) -> Digest:
        p = Sha256Pieces(piece)
        p.update(bytes(buf))
        return p.digest()

    ranges = [(a, min(a + 700, len(data))) for a in range(0, len(data), 700)]
    random.Random(1).shuffle(ranges)
    sink = _BufferSink(bytearray(len(data)), piece, _READ_POOL)
    for a, b in ranges:
        sink.seek(a)
        sink.write(bytes(data[a:b]))
    assert bytes(sink.buf) == bytes(data)
    assert sink.digest() == expect(data)
    assert len(sink._early) == 11  # every piece hashed before the end

    sink = _BufferSink(bytearray(len(data)), piece, _READ_POOL)
    sink.write(bytes(data))
    data[1500:1600] = os.urandom(100)  # a retry that (here, unlike S3) brought other bytes
    sink.seek(1200)
    sink.write(bytes(data[1200:2100]))
    assert sink.digest() == expect(data)


def test_cap_is_lifted_while_someone_waits_for_the_save(io_pool) -> None:  # type: ignore[no-untyped-def]
    """While a thread is blocked on a save (waiting_for_save) the training loop is not
    running, so the pool may run up to its size before the cap; afterwards the cap holds."""
    import time

    from llmops_runtime.checkpoint import store as store_mod

    pool = io_pool(threads=1, nice=0)
    assert pool.boosted_threads >= 4
    lock = threading.Lock()

    def run_batch() -> int:
        active, peak = [0], [0]

        def task() -> None:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.05)
            with lock:
                active[0] -= 1

        for f in [pool.submit(task) for _ in range(8)]:
            f.result()
        return peak[0]

    assert run_batch() == 1
    with store_mod.waiting_for_save():
        assert run_batch() > 1
    assert run_batch() == 1


# --- O_DIRECT writes -------------------------------------------------------------------------

_DIRECT_SIZES = [0, 1, 4095, 4096, 4097, (8 << 20) - 1, 8 << 20, (8 << 20) + 4096 + 3, (17 << 20) + 5]


def _chunks_of(data: bytes, cut: int) -> list[memoryview]:
    return [memoryview(data)[i : i + cut] for i in range(0, len(data), cut)] or [memoryview(b"")]


@pytest.mark.parametrize("size", _DIRECT_SIZES)
def test_direct_writes_are_byte_exact_at_every_alignment(tmp_path: Path, size: int) -> None:
    data = hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1)
    data = data[:size]
    store = LocalStore(tmp_path, direct=True)
    d = store.write("k.bin", _chunks_of(data, 3 << 20 if size > 4097 else 1000))  # chunks straddle the bounce buffer
    assert (tmp_path / "k.bin").read_bytes() == data
    assert d.size == size and bytes(store.read("k.bin", expect=d)) == data
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_direct_writes_bypass_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shard's descriptor is opened with O_DIRECT (where the file system takes it) and
    every block write but the padded last one is a whole bounce buffer."""
    opened: list[int] = []
    real_open = os.open

    def spy_open(path, flags, *a):  # type: ignore[no-untyped-def]
        opened.append(flags)
        return real_open(path, flags, *a)

    monkeypatch.setattr(store_mod.os, "open", spy_open)
    data = os.urandom((8 << 20) * 2 + 100)
    LocalStore(tmp_path, direct=True).write("k.bin", _chunks_of(data, 1 << 20))
    if not any(f & os.O_DIRECT for f in opened):
        pytest.skip(f"{tmp_path} refuses O_DIRECT (the buffered fallback is tested below)")
    assert (tmp_path / "k.bin").read_bytes() == data
    opened.clear()
    LocalStore(tmp_path, direct=False).write("b.bin", _chunks_of(data, 1 << 20))
    assert opened and not any(f & os.O_DIRECT for f in opened if f & os.O_WRONLY)


def test_direct_write_refused_mid_file_goes_on_buffered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that takes the O_DIRECT open but refuses the writes (EINVAL) gets the
    same bytes through the page cache."""
    real_pwrite = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data: object, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(store_mod.os, "pwrite", pwrite)
    data = os.urandom((8 << 20) + 12345)
    d = LocalStore(tmp_path, direct=True).write("k.bin", _chunks_of(data, 1 << 20))
    assert (tmp_path / "k.bin").read_bytes() == data and d.size == len(data)
    assert len(refused) <= 1  # refused at most once: the rest followed buffered


def test_direct_io_is_on_by_default_and_the_env_turns_it_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CHECKPOINT_DIRECT_IO, raising=False)
    assert LocalStore(tmp_path).direct is hasattr(os, "O_DIRECT")
    monkeypatch.setenv(CHECKPOINT_DIRECT_IO, "0")
    assert LocalStore(tmp_path).direct is False
    monkeypatch.setenv(CHECKPOINT_DIRECT_IO, "yes")
    with pytest.raises(ValueError, match=CHECKPOINT_DIRECT_IO):
        LocalStore(tmp_path)
