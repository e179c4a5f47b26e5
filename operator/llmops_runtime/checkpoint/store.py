"""Checkpoint stores: a tiny object-store interface, a local/PVC directory implementation.

The commit protocol (``manager.py``) needs only six operations, each with a precise
failure contract, so that a local directory, a PVC and S3 behave the same:

* ``write(key, chunks, create_only=)``: the object appears whole or not at all (local:
  temp file written with ``O_DIRECT`` where the file system takes it, + fsync +
  ``os.replace``/``os.link``; S3: a PUT or a completed multipart upload), and the sha256
  and size of what was written come back, computed while writing (a sha256 hash list over
  16 MiB pieces, see :class:`Digest`: the pieces are hashed on a pool of threads, in
  parallel with each other and with the I/O). ``create_only`` never replaces an existing
  object (used for manifests, so nothing committed is ever overwritten).
* ``read(key, expect=)``: the whole object; with ``expect`` its sha256 and size are checked
  (:class:`IntegrityError` otherwise). Local reads ``pread`` the pieces on the same pool, each
  task hashing what it just read while it is still in the CPU cache.
* ``size``, ``list``, ``delete_prefix``: inspection and garbage collection.
* ``swap(key, decide)``: compare-and-swap of a small object (the ``latest.json`` pointer).
  ``decide(current_bytes_or_None)`` returns the new content or ``None`` to refuse; the
  write happens only if nobody changed the object since it was read (local: an exclusive
  ``flock`` around read-decide-replace; S3: ``If-Match`` on the ETag / ``If-None-Match: *``).

Every I/O failure surfaces as :class:`StorageError` (``ENOSPC`` included, with its
``errno``), which the manager treats as "storage failing", never as a training error.

``fault_hook(op, key)`` is a test seam: it is called at ``write`` (before an object is
started), ``chunk`` (after each chunk of an object) and ``commit`` (data durable, before it
becomes visible); a test raises from it or SIGKILLs its own process to simulate a crash or
a full disk at that exact point. Production code never sets it.
"""

from __future__ import annotations

import contextlib
import errno as _errno
import fcntl
import hashlib
import mmap
import os
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from llmops.api.runtime_env import CHECKPOINT_DIRECT_IO as DIRECT_IO_ENV
from llmops.api.runtime_env import CHECKPOINT_IO_NICE as IO_NICE_ENV
from llmops.api.runtime_env import CHECKPOINT_IO_THREADS as IO_THREADS_ENV
from llmops.api.runtime_env import PVC_ROOT as PVC_ROOT_ENV

#: Default mount root of ``pvc://claim/path`` URIs; overridden by ``$LLMOPS_PVC_ROOT``.
DEFAULT_PVC_ROOT = "/mnt/pvc"

FaultHook = Callable[[str, str], None]
Chunk = bytes | bytearray | memoryview
#: ``tiles(size, pread)``: writable byte views that tile an object of ``size`` bytes in order,
#: planned with an unverified ``pread(offset, n) -> bytes`` (see :meth:`Store.read_tiles`).
Tiles = Callable[[int, Callable[[int, int], bytes]], list[memoryview]]

#: Piece size of the sha256 hash list written by this version (see :class:`Digest`).
PIECE = 16 << 20
#: Sub-chunk of a piece read and then hashed at once (stays in the CPU cache between both).
_SUB = 1 << 20


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a pod's cpuset), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"${name} must be an integer, not {raw!r}") from None


#: Niceness added to background checkpoint threads (0 = same priority as training). Not
#: lowered by default: on a host whose cores are busy with other work, niceness 5 made a
#: 256 MiB persist 2.9x slower to become durable (measured on the loaded 2-core VM), a
#: longer window without a checkpoint, for a loop slowdown of 1.5x instead of 1.8x.
DEFAULT_IO_NICE = 0


class IoPool:
    """The thread pool that hashes (and writes alongside) a checkpoint *in the background*,
    while the training loop runs.

    Sized below the core count by default (``usable_cpus() - 1``, at least 2, at most 16:
    :func:`default_io_threads`), so a persist in flight leaves a core to the training loop
    instead of competing with it on every core. While a thread waits for the save to
    finish (:func:`waiting_for_save`: the loop is blocked, not running) the cap is lifted
    to the pool's size before the cap (2x the cores, 4..16): with hashing capped, a
    256 MiB persist took 2-2.4x as long to become durable on a host whose cores other
    work kept busy (measured on a loaded 2-core VM: a training step ran 2.6-3.4x slower
    during a persist with hashing on 2x the cores). ``nice`` (default
    :data:`DEFAULT_IO_NICE`, 0) lowers the threads' scheduling priority (Linux: per
    thread; the manager's persist thread gets the same), trading time-to-durable for a
    faster loop when the cores are saturated. Loads, which run when nothing else does (at
    resume), use a separate pool on every core (:data:`_READ_POOL`).

    ``$LLMOPS_CHECKPOINT_IO_THREADS`` / ``$LLMOPS_CHECKPOINT_IO_NICE`` set the defaults of
    the process-wide pool; :func:`configure_io` replaces it (tests, a trainer's own choice).
    """

    def __init__(self, threads: int | None = None, nice: int | None = None) -> None:
        cpus = usable_cpus()
        self.threads = threads if threads is not None else default_io_threads(cpus)
        self.nice = nice if nice is not None else DEFAULT_IO_NICE
        if self.threads < 1:
            raise ValueError(f"checkpoint I/O threads must be >= 1, not {self.threads}")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"checkpoint I/O nice must be within 0..19, not {self.nice}")
        #: threads allowed while someone waits for a save (:func:`waiting_for_save`)
        self.boosted_threads = max(self.threads, min(16, max(4, 2 * cpus)))
        self.executor = ThreadPoolExecutor(
            max_workers=self.boosted_threads, thread_name_prefix="ckpt-hash", initializer=lower_priority,
            initargs=(self.nice,),
        )
        self._cond = threading.Condition()
        self._running = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self.executor.submit(self._gated, fn, *args)

    def _gated(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._cond:
            while self._running >= (self.boosted_threads if _WAITERS[0] else self.threads):
                self._cond.wait(0.05)  # also re-checks when a waiter arrives (notify_all)
            self._running += 1
        try:
            return fn(*args)
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


# How many threads are blocked waiting for a save to finish (SaveHandle.result, wait,
# close, a save waiting for the previous one). While any is, the training loop is not
# running, so the background pool may use every core it had before its cap.
_WAITERS = [0]
_WAITERS_LOCK = threading.Lock()


@contextmanager
def waiting_for_save() -> Iterator[None]:
    """Mark the calling thread as blocked on a save: the background pool runs up to its
    ``boosted_threads`` meanwhile (the loop is not running, so nobody is slowed by it)."""
    with _WAITERS_LOCK:
        _WAITERS[0] += 1
    _POOL.wake()
    try:
        yield
    finally:
        with _WAITERS_LOCK:
            _WAITERS[0] -= 1


def default_io_threads(cpus: int) -> int:
    """One core fewer than the process may use, but at least 2 and at most 16: with one
    hashing thread on a 2-core host a 256 MiB persist took 2-2.8x as long to become
    durable whenever other work kept the cores busy (ahead of DCP's), for a loop only
    1.15x less slowed (measured side by side, bench/checkpoint.py)."""
    return min(16, max(2, cpus - 1))


def lower_priority(nice: int) -> None:
    """Lower the calling thread's scheduling priority by ``nice`` (Linux: niceness is per
    thread; elsewhere, or where refused, nothing happens: priority is advice, not a need)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


def io_pool() -> IoPool:
    """The background hashing pool now (see :class:`IoPool`)."""
    return _POOL


def io_nice() -> int:
    """Niceness of the background checkpoint threads now (see :class:`IoPool`)."""
    return _POOL.nice


def configure_io(threads: int | None = None, nice: int | None = None) -> IoPool:
    """Replace the background hashing pool (None: the default, see :class:`IoPool`); tasks
    already queued finish on the old one. Returns the new pool."""
    global _POOL
    old, _POOL = _POOL, IoPool(threads, nice)
    old.executor.shutdown(wait=False)
    return _POOL


# Background hashing (writes): short tasks, never waiting on each other, so one shared,
# capped pool serves every concurrent writer (ranks simulated as threads in tests included).
_POOL = IoPool(
    _env_int(IO_THREADS_ENV, 0) or None,
    _env_int(IO_NICE_ENV, DEFAULT_IO_NICE),
)
# Loads (read + verify) run at resume, when the loop waits for them: every core, full priority.
_READ_POOL = ThreadPoolExecutor(max_workers=min(16, max(4, 2 * usable_cpus())), thread_name_prefix="ckpt-read")


class StorageError(Exception):
    """The store failed (I/O error, full disk, network, timeout). ``errno`` when known."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class NotFound(StorageError):
    """The object does not exist."""


class Conflict(StorageError):
    """A create-only write found the object already there."""


class IntegrityError(StorageError):
    """An object's bytes do not match the sha256/size recorded when it was written."""


@dataclass(frozen=True)
class Digest:
    """sha256 and size of one stored object.

    ``piece`` set (what this version writes): ``sha256`` is the root of a sha256 hash list:
    the object is cut into ``piece``-byte pieces, each hashed with sha256 (in parallel,
    on several cores), and the root is the sha256 of the concatenated binary piece digests,
    or the one piece's digest when there is only one (so an object of at most one piece has
    its plain sha256). ``piece`` None (checkpoints written before the hash list): ``sha256``
    is the plain sha256 of the whole object, verified on one core.
    """

    sha256: str
    size: int
    piece: int | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, object]:
        d: dict[str, object] = {"sha256": self.sha256, "size": self.size}
        if self.piece is not None:
            d["piece"] = self.piece
        return d

    @staticmethod
    def from_json(d: dict[str, object]) -> Digest:
        piece = d.get("piece")
        if piece is not None and (not isinstance(piece, int) or piece <= 0):
            raise ValueError(f"bad piece size {piece!r}")
        return Digest(sha256=str(d["sha256"]), size=int(d["size"]), piece=piece)  # type: ignore[arg-type]


def _hash_slices(slices: list[memoryview]) -> bytes:
    h = hashlib.sha256()
    for s in slices:
        h.update(s)  # releases the GIL for large buffers
    return h.digest()


def _root(digests: list[bytes]) -> str:
    if not digests:
        return hashlib.sha256(b"").hexdigest()
    if len(digests) == 1:
        return digests[0].hex()
    return hashlib.sha256(b"".join(digests)).hexdigest()


class Sha256Pieces:
    """The :class:`Digest` of a stream of chunks, computed while the caller does its I/O:
    every completed piece is hashed on the shared pool, so hashing runs on other cores in
    parallel with the writing/reading and with the other pieces. ``piece`` None: one
    piece (the plain sha256 of everything, for digests written before the hash list).
    Every chunk must stay valid and unchanged until :meth:`digest` returns."""

    def __init__(self, piece: int | None = PIECE, pool: Any = None) -> None:
        self.piece = piece
        self._pool = pool  # None: the background pool at the time of each piece
        self.size = 0
        self._futures: list[Future[bytes]] = []
        self._cur: list[memoryview] = []
        self._fill = 0

    def update(self, chunk: Chunk) -> None:
        mv = memoryview(chunk).cast("B")
        self.size += len(mv)
        if self.piece is None:
            self._cur.append(mv)
            return
        while len(mv):
            take = min(len(mv), self.piece - self._fill)
            self._cur.append(mv[:take])
            self._fill += take
            mv = mv[take:]
            if self._fill == self.piece:
                self._flush()

    def _flush(self) -> None:
        self._futures.append((self._pool or _POOL).submit(_hash_slices, self._cur))
        self._cur, self._fill = [], 0

    def close(self) -> None:
        """Drop what is queued (the I/O failed); safe to call twice."""
        for f in self._futures:
            f.cancel()
        self._futures, self._cur = [], []

    def digest(self) -> Digest:
        if self._cur or not self._futures:
            self._flush()
        digests = [f.result() for f in self._futures]
        self._futures = []
        return Digest(_root(digests), self.size, self.piece)


class Store(ABC):
    """An object store rooted at one prefix; keys are relative, ``/``-separated."""

    uri: str
    fault_hook: FaultHook | None = None
    #: longest sleep between two polls of the shard barrier (``CheckpointManager``)
    poll_max_seconds = 0.5
    #: piece size of the sha256 hash list of what this store writes (see :class:`Digest`)
    piece = PIECE

    def _fault(self, op: str, key: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(op, key)

    def url(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    @abstractmethod
    def write(self, key: str, chunks: Iterable[Chunk], *, create_only: bool = False) -> Digest: ...

    def put(self, key: str, data: bytes, *, create_only: bool = False) -> Digest:
        return self.write(key, [data], create_only=create_only)

    @abstractmethod
    def read(self, key: str, expect: Digest | None = None) -> bytearray: ...

    def read_buffer(self, key: str, expect: Digest | None = None) -> np.ndarray:
        """Like :meth:`read` for large objects: a uint8 array, filled without zeroing first."""
        return np.frombuffer(self.read(key, expect), dtype=np.uint8)

    def read_tiles(self, key: str, expect: Digest | None, tiles: Tiles) -> None:
        """Read the object into the buffers ``tiles`` plans (verified like :meth:`read`).
        This default reads it whole and copies; a local store reads straight into them."""
        buf = memoryview(self.read_buffer(key, expect)).cast("B")
        pos = 0
        for v in tiles(len(buf), lambda off, n: bytes(buf[off : off + n])):
            v[:] = buf[pos : pos + len(v)]
            pos += len(v)
        if pos != len(buf):
            raise StorageError(f"read {self.url(key)}: the tiles do not cover the object")

    @abstractmethod
    def size(self, key: str) -> int | None: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def swap(self, key: str, decide: Callable[[bytes | None], bytes | None]) -> bytes | None: ...

    def close(self) -> None:  # noqa: B027 - an optional hook: stores holding nothing need no close
        pass


def empty_buffer(n: int) -> np.ndarray:
    """An uninitialised uint8 buffer for a large read. Not ``bytearray`` (it zeroes the memory,
    which costs as much as the read) and not ``np.empty``: numpy asks for transparent huge
    pages on large arrays, and with THP in ``madvise`` mode every first touch may then stall
    in direct compaction (measured: 5x slower reads of a fresh 32 MiB buffer on a busy
    host). torch's allocator asks for no huge pages."""
    return torch.empty(n, dtype=torch.uint8).numpy()


def check_digest(key: str, got: Digest, expect: Digest | None) -> None:
    if expect is not None and got != expect:
        raise IntegrityError(
            f"{key}: sha256/size mismatch (have {got.sha256[:12]}/{got.size}, "
            f"manifest says {expect.sha256[:12]}/{expect.size})"
        )


#: O_DIRECT alignment of buffer addresses, file offsets and lengths (4096 satisfies every
#: logical block size in use: 512 and 4096).
DIRECT_ALIGN = 4096
#: Size of one aligned bounce buffer: an object is written 8 MiB at a time.
_BOUNCE_BYTES = 8 << 20
_BOUNCES: list[np.ndarray] = []  # reused across writes: never allocated or page-faulted again
_BOUNCES_LOCK = threading.Lock()


def direct_io_default() -> bool:
    """Whether local checkpoint files are written with O_DIRECT (``$LLMOPS_CHECKPOINT_DIRECT_IO``,
    default 1 where the OS has it; a file system that refuses it falls back by itself)."""
    return hasattr(os, "O_DIRECT") and _env_int(DIRECT_IO_ENV, 1) != 0


@contextmanager
def _bounce() -> Iterator[np.ndarray]:
    with _BOUNCES_LOCK:
        buf = _BOUNCES.pop() if _BOUNCES else None
    if buf is None:  # an anonymous map is page-aligned
        buf = np.frombuffer(mmap.mmap(-1, _BOUNCE_BYTES), dtype=np.uint8)
    try:
        yield buf
    finally:
        with _BOUNCES_LOCK:
            _BOUNCES.append(buf)


def _pwrite_all(fd: int, view: memoryview | np.ndarray, offset: int) -> None:
    mv = memoryview(view).cast("B")
    while len(mv):  # a write may be short
        n = os.pwrite(fd, mv, offset)
        mv, offset = mv[n:], offset + n


def _create(path: Path, direct: bool) -> tuple[int, bool]:
    """A new file open for writing, and whether it is open with ``O_DIRECT`` (asked for and
    taken: a file system without it answers ``EINVAL`` and gets an ordinary descriptor)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    if direct:
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644), True
        except OSError as e:
            if e.errno != _errno.EINVAL:
                raise
    return os.open(path, flags, 0o644), False


class _FileWriter:
    """Writes a stream of chunks to ``fd`` from offset 0.

    ``direct``: the descriptor was opened with ``O_DIRECT``. Chunks are then gathered in an
    aligned bounce buffer and written 8 MiB at a time straight to the device; the last,
    partial block is padded to the alignment and the file truncated to its real size. The
    page cache is bypassed: on the development VM, buffered writes of a 256 MiB shard took
    150-950 ms (the kernel providing fresh page-cache pages) and direct ones 155-220 ms, and
    a checkpoint does not evict the node's dataset and model pages. A file system that
    refuses ``O_DIRECT`` for a write (``EINVAL``) gets it again buffered, and the rest of
    the file follows buffered."""

    def __init__(self, fd: int, direct: bool, buf: np.ndarray) -> None:
        self.fd, self.direct, self.buf = fd, direct, buf
        self.offset = 0  # file bytes written
        self.fill = 0  # bytes waiting in the bounce buffer (direct only)

    def feed(self, chunk: memoryview) -> None:
        if not self.direct:
            _pwrite_all(self.fd, chunk, self.offset)
            self.offset += len(chunk)
            return
        src = np.frombuffer(chunk, dtype=np.uint8)
        while len(src):
            take = min(len(src), len(self.buf) - self.fill)
            self.buf[self.fill : self.fill + take] = src[:take]  # numpy copies without the GIL
            self.fill += take
            src = src[take:]
            if self.fill == len(self.buf):
                self._flush(self.fill)

    def _flush(self, n: int) -> None:
        try:
            _pwrite_all(self.fd, self.buf[:n], self.offset)
        except OSError as e:
            if e.errno != _errno.EINVAL or not self.direct:
                raise
            self._go_buffered()  # this file system does not take O_DIRECT writes
            _pwrite_all(self.fd, self.buf[:n], self.offset)
        self.offset += n
        self.fill = 0

    def _go_buffered(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
        self.direct = False

    def finish(self) -> None:
        """Write what is left and make the file exactly as long as the stream."""
        if not self.fill:
            return
        size = self.offset + self.fill
        if self.direct:
            padded = -(-self.fill // DIRECT_ALIGN) * DIRECT_ALIGN
            self._flush(padded)
            os.ftruncate(self.fd, size)
        else:
            self._flush(self.fill)
        self.offset = size


def _span(views: list[memoryview], start: int, end: int) -> list[memoryview]:
    """The parts of ``views`` (tiling a file in order) that cover file bytes [start, end)."""
    out: list[memoryview] = []
    pos = 0
    for v in views:
        a, b = max(start, pos), min(end, pos + len(v))
        if a < b:
            out.append(v[a - pos : b - pos])
        pos += len(v)
        if pos >= end:
            break
    return out


def _read_piece(fd: int, parts: list[memoryview], offset: int, hashing: bool) -> bytes:
    h = hashlib.sha256() if hashing else None
    for mv in parts:
        pos = 0
        while pos < len(mv):
            n = os.preadv(fd, [mv[pos : pos + _SUB]], offset + pos)
            if not n:
                raise StorageError("file shrank while reading")
            if h is not None:
                h.update(mv[pos : pos + n])
            pos += n
        offset += len(mv)
    return h.digest() if h is not None else b""


def _storage_error(what: str, e: OSError) -> StorageError:
    if e.errno == _errno.ENOENT:
        return NotFound(f"{what}: {e}", e.errno)
    return StorageError(f"{what}: {e}", e.errno)


class LocalStore(Store):
    """A directory (local disk or a mounted PVC). Crash-safe: temp file, fsync, rename."""

    #: longest sleep between two polls of the shard barrier (listing a directory is cheap)
    poll_max_seconds = 0.01

    def __init__(self, root: str | os.PathLike[str], uri: str | None = None, direct: bool | None = None) -> None:
        self.root = Path(root)
        self.uri = uri or str(self.root)
        #: write files with O_DIRECT (see :class:`_FileWriter`); None: :func:`direct_io_default`
        self.direct = direct_io_default() if direct is None else direct
        self._locks = threading.Lock()

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad key {key!r}")
        return self.root / key

    def _fsync_dir(self, d: Path) -> None:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, key: str, chunks: Iterable[Chunk], *, create_only: bool = False) -> Digest:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
        pipe = Sha256Pieces(self.piece)
        try:
            self._fault("write", key)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, direct = _create(tmp, self.direct)
            try:
                with _bounce() as buf:
                    out = _FileWriter(fd, direct, buf)
                    for chunk in chunks:
                        pipe.update(chunk)  # hashed on other cores while this thread writes
                        out.feed(memoryview(chunk).cast("B"))
                        self._fault("chunk", key)
                    out.finish()
                os.fsync(fd)  # the hash may still be running: overlap it with the flush
            finally:
                os.close(fd)
            digest = pipe.digest()
            self._fault("commit", key)
            if create_only:
                try:
                    os.link(tmp, path)  # atomic create-if-absent, unlike os.replace
                except FileExistsError:
                    raise Conflict(f"{key}: already exists") from None
                os.unlink(tmp)
            else:
                os.replace(tmp, path)
            self._fsync_dir(path.parent)
            return digest
        except OSError as e:
            raise _storage_error(f"write {self.url(key)}", e) from e
        finally:
            pipe.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def read(self, key: str, expect: Digest | None = None) -> bytearray:
        return self._read_into(key, expect, bytearray)  # type: ignore[no-any-return]

    def read_buffer(self, key: str, expect: Digest | None = None) -> np.ndarray:
        return self._read_into(key, expect, empty_buffer)

    def _read_into(self, key: str, expect: Digest | None, alloc: Callable[[int], Any]) -> Any:
        out: list[Any] = []

        def one_buffer(size: int, _pread: Any) -> list[memoryview]:
            out.append(alloc(size))
            return [memoryview(out[0]).cast("B")]

        self.read_tiles(key, expect, one_buffer)
        return out[0]

    def read_mapped(self, key: str, expect: Digest) -> np.ndarray:
        """The verified object as a private, writable memory map of the file (copy-on-write:
        pages are the page cache's until written, so nothing is copied or allocated; the
        pieces are hashed in parallel straight from the mapping). Objects are immutable
        once written (temp + rename; deletion only unlinks), so the mapping keeps showing
        the verified bytes; an empty object is read the ordinary way."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size != expect.size:
                    raise IntegrityError(f"{key}: size {size}, manifest says {expect.size}")
                if size == 0:
                    return self.read_buffer(key, expect)
                mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY)
        except OSError as e:
            raise _storage_error(f"read {self.url(key)}", e) from e
        buf = np.frombuffer(mm, dtype=np.uint8)
        mv = memoryview(buf)
        piece = expect.piece or size
        futures = [_READ_POOL.submit(_hash_slices, [mv[a : min(a + piece, size)]]) for a in range(0, size, piece)]
        check_digest(key, Digest(_root([f.result() for f in futures]), size, expect.piece), expect)
        return buf

    def read_tiles(self, key: str, expect: Digest | None, tiles: Tiles) -> None:
        # The file is cut into pieces, and each piece is read (pread, into the tiles it
        # covers) and hashed by one task of the shared pool, several pieces at once; a task
        # hashes each sub-chunk right after reading it, while it is still in the CPU cache.
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            raise _storage_error(f"read {self.url(key)}", e) from e
        try:
            size = os.fstat(fd).st_size
            if expect is not None and size != expect.size:
                raise IntegrityError(f"{key}: size {size}, manifest says {expect.size}")
            views = [v for v in tiles(size, lambda off, n: os.pread(fd, n, off)) if len(v)]
            if sum(len(v) for v in views) != size:
                raise StorageError(f"read {self.url(key)}: the tiles do not cover the file")
            piece = PIECE if expect is None else (expect.piece or max(size, 1))
            futures = [
                _READ_POOL.submit(_read_piece, fd, _span(views, start, min(start + piece, size)), start, expect is not None)
                for start in range(0, size, piece)
            ]
            wait(futures)  # all of them, before the descriptor closes
            digests = [f.result() for f in futures]
            if expect is not None:
                check_digest(key, Digest(_root(digests), size, expect.piece), expect)
        except OSError as e:
            raise _storage_error(f"read {self.url(key)}", e) from e
        finally:
            os.close(fd)

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None
        except OSError as e:
            raise _storage_error(f"stat {self.url(key)}", e) from e

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        out: list[str] = []
        try:
            if base.is_file():
                return [prefix]
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    if name.startswith(".") and ".tmp-" in name:
                        continue  # an unfinished write, never an object
                    out.append(Path(dirpath, name).relative_to(self.root).as_posix())
        except OSError as e:
            raise _storage_error(f"list {self.url(prefix)}", e) from e
        return sorted(out)

    def delete_prefix(self, prefix: str) -> None:
        path = self._path(prefix)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        except OSError as e:
            raise _storage_error(f"delete {self.url(prefix)}", e) from e

    def swap(self, key: str, decide: Callable[[bytes | None], bytes | None]) -> bytes | None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # flock serialises writers on this host (and on NFSv4 PVCs); threads of this
            # process additionally share one mutex because flock is per open file.
            with self._locks, open(path.with_name(f".{path.name}.lock"), "a+b") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    try:
                        current: bytes | None = path.read_bytes()
                    except FileNotFoundError:
                        current = None
                    new = decide(current)
                    if new is None:
                        return None
                    self.write(key, [new])
                    return new
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        except OSError as e:
            raise _storage_error(f"swap {self.url(key)}", e) from e


def open_store(uri: str, **s3_options: object) -> Store:
    """A store for ``uri``: ``/abs/dir``, ``file:///dir``, ``pvc://claim/path`` (under
    ``$LLMOPS_PVC_ROOT``, default ``/mnt/pvc``) or ``s3://bucket/prefix`` (boto3; endpoint
    from ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``; ``s3_options`` go to :class:`S3Store`)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        from .s3 import S3Store

        if not parsed.netloc:
            raise ValueError(f"{uri}: no bucket")
        return S3Store(parsed.netloc, parsed.path.strip("/"), **s3_options)  # type: ignore[arg-type]
    if parsed.scheme == "file":
        return LocalStore(parsed.path, uri=uri)
    if parsed.scheme == "pvc":
        root = Path(os.environ.get(PVC_ROOT_ENV) or DEFAULT_PVC_ROOT)
        return LocalStore(root / parsed.netloc / parsed.path.strip("/"), uri=uri)
    if parsed.scheme == "" and uri.startswith("/"):
        return LocalStore(uri)
    raise ValueError(f"unsupported checkpoint URI {uri!r} (absolute path, file://, pvc:// or s3://)")
