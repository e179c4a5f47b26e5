"""Checkpoint stores: a tiny object-store interface, a local/PVC directory implementation.

The commit protocol (``manager.py``) needs only six operations, each with a precise
failure contract, so that a local directory, a PVC and S3 behave the same:

* ``write(key, chunks, create_only=)``: the object appears whole or not at all (local:
  temp file + fsync + ``os.replace``/``os.link``; S3: a PUT or a completed multipart
  upload), and the sha256 and size of what was written come back, computed while writing
  (hashing runs on a helper thread, overlapping the I/O). ``create_only`` never replaces
  an existing object (used for manifests, so nothing committed is ever overwritten).
* ``read(key, expect=)``: the whole object; with ``expect`` its sha256 and size are checked
  (:class:`IntegrityError` otherwise).
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

import errno as _errno
import fcntl
import hashlib
import os
import queue
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from llmops.api.runtime_env import PVC_ROOT as PVC_ROOT_ENV

#: Default mount root of ``pvc://claim/path`` URIs; overridden by ``$LLMOPS_PVC_ROOT``.
DEFAULT_PVC_ROOT = "/mnt/pvc"

FaultHook = Callable[[str, str], None]
Chunk = bytes | bytearray | memoryview

# Hashers block on their queue until fed, so give every concurrent writer/reader its own
# thread (ranks simulated as threads in tests would otherwise wait on each other).
_HASH_POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ckpt-hash")


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
    """sha256 (hex) and size of one stored object."""

    sha256: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"sha256": self.sha256, "size": self.size}

    @staticmethod
    def from_json(d: dict[str, object]) -> Digest:
        return Digest(sha256=str(d["sha256"]), size=int(d["size"]))  # type: ignore[arg-type]


class Sha256Pipe:
    """sha256 computed on a helper thread that follows the caller's I/O: ``update`` only
    queues the chunk (never waits), so writing/reading and hashing run on two cores and the
    hash adds ``max(0, hash_time - io_time)`` instead of ``hash_time`` (hashlib releases the
    GIL). Every chunk must stay valid and unchanged until :meth:`digest` returns."""

    _END = object()

    def __init__(self) -> None:
        self._h = hashlib.sha256()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._future: Future[None] | None = None
        self.size = 0

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not self._END:
            self._h.update(chunk)

    def update(self, chunk: Chunk) -> None:
        if self._future is None:
            self._future = _HASH_POOL.submit(self._run)
        self._queue.put(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        """Stop the helper without a result (the I/O failed); safe to call twice."""
        if self._future is not None:
            self._queue.put(self._END)
            self._future = None

    def digest(self) -> Digest:
        if self._future is not None:
            self._queue.put(self._END)
            self._future.result()
            self._future = None
        return Digest(self._h.hexdigest(), self.size)


class Store(ABC):
    """An object store rooted at one prefix; keys are relative, ``/``-separated."""

    uri: str
    fault_hook: FaultHook | None = None

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


def check_digest(key: str, got: Digest, expect: Digest | None) -> None:
    if expect is not None and got != expect:
        raise IntegrityError(
            f"{key}: sha256/size mismatch (have {got.sha256[:12]}/{got.size}, "
            f"manifest says {expect.sha256[:12]}/{expect.size})"
        )


def _storage_error(what: str, e: OSError) -> StorageError:
    if e.errno == _errno.ENOENT:
        return NotFound(f"{what}: {e}", e.errno)
    return StorageError(f"{what}: {e}", e.errno)


class LocalStore(Store):
    """A directory (local disk or a mounted PVC). Crash-safe: temp file, fsync, rename."""

    READ_CHUNK = 8 << 20

    def __init__(self, root: str | os.PathLike[str], uri: str | None = None) -> None:
        self.root = Path(root)
        self.uri = uri or str(self.root)
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
        pipe = Sha256Pipe()
        try:
            self._fault("write", key)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb", buffering=0) as f:
                for chunk in chunks:
                    pipe.update(chunk)  # hashed on another core while this thread writes
                    f.write(chunk)
                    self._fault("chunk", key)
                os.fsync(f.fileno())  # the hash may still be running: overlap it with the flush
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
            try:
                os.unlink(tmp)
            except OSError:
                pass

    def read(self, key: str, expect: Digest | None = None) -> bytearray:
        return self._read_into(key, expect, bytearray)  # type: ignore[no-any-return]

    def read_buffer(self, key: str, expect: Digest | None = None) -> np.ndarray:
        # np.empty does not zero the memory (bytearray does, which costs as much as the
        # read itself); pages are faulted in by the kernel copy, overlapping the hash.
        return self._read_into(key, expect, lambda n: np.empty(n, dtype=np.uint8))

    def _read_into(self, key: str, expect: Digest | None, alloc: Callable[[int], Any]) -> Any:
        path = self._path(key)
        pipe = Sha256Pipe()
        try:
            with open(path, "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                buf = alloc(size)
                mv = memoryview(buf).cast("B")
                pos = 0
                while pos < size:
                    n = f.readinto(mv[pos : pos + self.READ_CHUNK])
                    if not n:
                        raise StorageError(f"read {self.url(key)}: file shrank while reading")
                    if expect is not None:
                        pipe.update(mv[pos : pos + n])
                    pos += n
            if expect is not None:
                check_digest(key, pipe.digest(), expect)
            return buf
        except OSError as e:
            raise _storage_error(f"read {self.url(key)}", e) from e
        finally:
            pipe.close()

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
