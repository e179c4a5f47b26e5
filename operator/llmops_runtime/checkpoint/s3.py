"""S3 checkpoint store (boto3): parallel multipart transfers, bounded retries, conditional writes.

Throughput: one TCP stream is capped well below instance bandwidth, so large shards go
through boto3's transfer manager as multipart uploads and ranged parallel downloads
(``chunk_bytes`` parts, ``max_concurrency`` in flight). The upload source is a
non-seekable reader over the snapshot's tensor memory that hashes each chunk as the
transfer manager pulls it, so no serialised copy of the state is built and the sha256 is
ready when the upload completes. A verified download hashes each piece of the hash list as
soon as the ranged GETs covering it have landed (``_BufferSink``), alongside the download.

Retries: botocore's retry handler (``mode="standard"`` by default, or ``"adaptive"`` for
client-side rate limiting) retries 5xx, throttling (``SlowDown``) and connection errors
with exponential backoff and jitter, at most ``max_attempts`` tries per request; beyond
that the error surfaces as :class:`StorageError` and the manager records it.

Conditional writes: the pointer is swapped with ``If-Match: <ETag>`` (or
``If-None-Match: *`` when absent) and manifests are created with ``If-None-Match: *``; S3
answers 412 (or 409 on a concurrent conditional write) when another writer won, and the
swap re-reads and re-decides. These headers are supported by AWS S3 since 2024 and by the
moto server used in tests; a backend that ignores them would silently lose the zombie
protection, so deployments on other S3-compatible stores must check they honour them.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any

import boto3
import numpy as np
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from .store import (
    _READ_POOL,
    Chunk,
    Conflict,
    Digest,
    NotFound,
    Sha256Pieces,
    StorageError,
    Store,
    _hash_slices,
    _root,
    check_digest,
    empty_buffer,
)

_MISSING = {"NoSuchKey", "404", "NotFound"}
_LOST_RACE = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


class _HashingReader(io.RawIOBase):
    """A read-only, non-seekable stream over chunks that hashes what is read."""

    def __init__(self, chunks: Iterable[Chunk], pipe: Sha256Pieces, on_chunk: Callable[[], None]) -> None:
        self._it: Iterator[Chunk] = iter(chunks)
        self._cur = memoryview(b"")
        self._pipe = pipe
        self._on_chunk = on_chunk

    def readable(self) -> bool:
        return True

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        out = memoryview(b).cast("B")
        n = 0
        while n < len(out):
            if not len(self._cur):
                try:
                    self._cur = memoryview(next(self._it)).cast("B")
                except StopIteration:
                    break
                self._pipe.update(self._cur)
                self._on_chunk()
                continue
            k = min(len(out) - n, len(self._cur))
            out[n : n + k] = self._cur[:k]
            self._cur = self._cur[k:]
            n += k
        return n


class _BufferSink:
    """A seekable write target over a preallocated buffer (parallel ranged GETs land at
    their offsets without an intermediate copy of the whole object).

    With ``piece`` (a hash-list digest is expected), each piece is hashed on ``pool`` as
    soon as all of its bytes have landed, so verification runs while the rest of the
    object is still downloading instead of after it; a piece written more than once (a
    retried ranged GET) is hashed again at the end from what the buffer finally holds."""

    def __init__(self, buf: bytearray | np.ndarray, piece: int | None = None, pool: Any = None) -> None:
        self.buf = buf
        self._mv = memoryview(buf).cast("B")
        self._pos = 0
        self._piece = piece if piece and len(self._mv) else None
        self._pool = pool
        n = -(-len(self._mv) // piece) if self._piece and piece else 0
        self._filled = [0] * n
        self._early: dict[int, Future[bytes]] = {}
        self._again: set[int] = set()
        self._lock = threading.Lock()

    def seek(self, pos: int, whence: int = 0) -> int:
        self._pos = pos if whence == 0 else (self._pos + pos if whence == 1 else len(self.buf) + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes) -> int:
        start, end = self._pos, self._pos + len(data)
        if end > len(self._mv):
            raise StorageError("object grew while downloading")
        self._mv[start:end] = data
        self._pos = end
        if self._piece is not None:
            self._landed(start, end)
        return len(data)

    def _piece_span(self, i: int) -> tuple[int, int]:
        assert self._piece is not None
        return i * self._piece, min((i + 1) * self._piece, len(self._mv))

    def _landed(self, start: int, end: int) -> None:
        assert self._piece is not None
        with self._lock:
            while start < end:
                i = start // self._piece
                a, b = self._piece_span(i)
                k = min(end, b) - start
                self._filled[i] += k
                if self._filled[i] == b - a and i not in self._again:
                    self._early[i] = self._pool.submit(_hash_slices, [self._mv[a:b]])
                elif self._filled[i] > b - a:
                    self._again.add(i)  # rewritten after it was hashed: hash the final bytes
                start += k

    def digest(self) -> Digest:
        """The hash-list digest of the buffer (after the download completed)."""
        assert self._piece is not None
        futures = []
        for i in range(len(self._filled)):
            f = self._early.get(i)
            if f is None or i in self._again:
                a, b = self._piece_span(i)
                f = self._pool.submit(_hash_slices, [self._mv[a:b]])
            futures.append(f)
        return Digest(_root([f.result() for f in futures]), len(self._mv), self._piece)


class S3Store(Store):
    """Objects under ``s3://bucket/prefix``."""

    #: longest sleep between two polls of the shard barrier (each poll is a LIST request)
    poll_max_seconds = 0.2

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: object | None = None,
        endpoint_url: str | None = None,
        chunk_bytes: int = 16 << 20,
        max_concurrency: int = 8,
        max_attempts: int = 5,
        retry_mode: str = "standard",
        swap_attempts: int = 20,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        self.client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            config=Config(
                retries={"max_attempts": max_attempts, "mode": retry_mode},
                max_pool_connections=max_concurrency * 2,
                connect_timeout=10,
                read_timeout=60,
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=chunk_bytes,
            multipart_chunksize=chunk_bytes,
            max_concurrency=max_concurrency,
            io_chunksize=1 << 20,
        )
        self.swap_attempts = swap_attempts

    def _k(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _err(self, what: str, key: str, e: Exception) -> StorageError:
        if isinstance(e, ClientError) and _code(e) in _MISSING:
            return NotFound(f"{what} {self.url(key)}: not found")
        return StorageError(f"{what} {self.url(key)}: {e}")

    def write(self, key: str, chunks: Iterable[Chunk], *, create_only: bool = False) -> Digest:
        self._fault("write", key)
        pipe = Sha256Pieces(self.piece)
        try:
            if create_only:
                # Small objects only (manifests): one PUT that S3 refuses if the key exists.
                body = b"".join(bytes(c) for c in chunks)
                pipe.update(body)
                self._fault("commit", key)
                self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=body, IfNoneMatch="*")
            else:
                reader = io.BufferedReader(_HashingReader(chunks, pipe, lambda: self._fault("chunk", key)), 1 << 20)
                self.client.upload_fileobj(reader, self.bucket, self._k(key), Config=self.transfer)
        except ClientError as e:
            if create_only and _code(e) in _LOST_RACE:
                raise Conflict(f"{key}: already exists") from None
            raise self._err("write", key, e) from e
        except (BotoCoreError, OSError) as e:
            raise self._err("write", key, e) from e
        except Exception as e:  # s3transfer wraps failures in its own exception types
            if isinstance(e, StorageError):
                raise
            raise self._err("write", key, e) from e
        finally:
            digest = pipe.digest()  # also stops the hashing thread when the upload failed
        return digest

    def read(self, key: str, expect: Digest | None = None) -> bytearray:
        return self._read_into(key, expect, bytearray)  # type: ignore[no-any-return]

    def read_buffer(self, key: str, expect: Digest | None = None) -> np.ndarray:
        return self._read_into(key, expect, empty_buffer)  # type: ignore[no-any-return]

    def _read_into(self, key: str, expect: Digest | None, alloc: Callable[[int], Any]) -> Any:
        try:
            size = expect.size if expect is not None else self._head(key)
            if size is None:
                raise NotFound(f"read {self.url(key)}: not found")
            piece = expect.piece if expect is not None else None
            sink = _BufferSink(alloc(size), piece, _READ_POOL)
            if size:
                self.client.download_fileobj(self.bucket, self._k(key), sink, Config=self.transfer)
        except (ClientError, BotoCoreError, OSError) as e:
            raise self._err("read", key, e) from e
        except Exception as e:
            if isinstance(e, StorageError):
                raise
            raise self._err("read", key, e) from e
        if expect is not None and sink._piece is not None:
            check_digest(key, sink.digest(), expect)  # most pieces were hashed while downloading
        elif expect is not None:  # a whole-file sha256 (format /1) or an empty object
            pipe = Sha256Pieces(expect.piece, _READ_POOL)
            pipe.update(memoryview(sink.buf).cast("B"))
            check_digest(key, pipe.digest(), expect)
        return sink.buf

    def _head(self, key: str) -> int | None:
        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._k(key))["ContentLength"])
        except ClientError as e:
            if _code(e) in _MISSING:
                return None
            raise

    def size(self, key: str) -> int | None:
        try:
            return self._head(key)
        except (ClientError, BotoCoreError) as e:
            raise self._err("stat", key, e) from e

    def list(self, prefix: str = "") -> list[str]:
        full = self._k(prefix) if prefix else (self.prefix + "/" if self.prefix else "")
        strip = len(self.prefix) + 1 if self.prefix else 0
        out: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
                out.extend(o["Key"][strip:] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as e:
            raise self._err("list", prefix, e) from e
        return sorted(out)

    def delete_prefix(self, prefix: str) -> None:
        keys = [k for k in self.list(prefix) if k == prefix or k.startswith(prefix.rstrip("/") + "/")]
        try:
            for i in range(0, len(keys), 1000):
                batch = [{"Key": self._k(k)} for k in keys[i : i + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as e:
            raise self._err("delete", prefix, e) from e

    def swap(self, key: str, decide: Callable[[bytes | None], bytes | None]) -> bytes | None:
        for _ in range(self.swap_attempts):
            try:
                try:
                    obj = self.client.get_object(Bucket=self.bucket, Key=self._k(key))
                    current: bytes | None = obj["Body"].read()
                    etag: str | None = obj["ETag"]
                except ClientError as e:
                    if _code(e) not in _MISSING:
                        raise
                    current, etag = None, None
                new = decide(current)
                if new is None:
                    return None
                cond = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
                self._fault("commit", key)
                self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=new, **cond)
                return new
            except ClientError as e:
                if _code(e) in _LOST_RACE:
                    continue  # another writer moved it between our read and write: re-decide
                raise self._err("swap", key, e) from e
            except BotoCoreError as e:
                raise self._err("swap", key, e) from e
        raise StorageError(f"swap {self.url(key)}: lost the race {self.swap_attempts} times")

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()
