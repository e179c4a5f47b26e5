"""Verified model fetch into a shared cache (the InferenceService's init step).

How a fetch goes, and why:

1. **Key.** Each model lands in ``<cache>/<key>/``. With a pinned manifest digest the key is
   ``sha256-<digest>``, known before any request, so a replica that finds the model cached
   makes no storage request at all. Without a pin the key hashes the URI, revision and a
   listing fingerprint (names, sizes, ETags/mtimes): one LIST, no GET, and changed content
   gets a new directory instead of being overwritten under a running server.
2. **Cache hit.** The directory counts only with its completion marker
   (``.llmops-complete.json``: digest, files with sizes, bytes, seconds). The cheap check
   is: the marker parses and every file exists with its recorded size.
3. **One downloader.** On a miss the fetcher takes ``<cache>/.locks/<key>.lock``
   (``fcntl.flock``; the kernel drops it when a process dies), re-checks the marker (a
   replica that waited finds the other one's result), and clears temp dirs left by killed
   fetchers.
4. **Filter.** Weights must be ``*.safetensors``. Pickle files (``.bin .pt .pth .ckpt .pkl
   .pickle``) execute code when loaded: they are skipped when safetensors weights exist and a
   model with only pickle weights fails naming the file, unless ``--allow-pickle``.
5. **Download + verify.** S3 goes through boto3's transfer manager (parallel ranged GETs
   within a file, all files submitted to one manager), each file hashed as soon as it
   completes while others download. Local/PVC/HF sources are hard-linked when on the same
   filesystem (else copied) and hashed. Every file is compared with the manifest (given,
   found at the model root as ``llmops-manifest.json``, or for HF the sha256-named LFS
   blobs); a mismatch fails naming the file. Without a manifest the computed one is kept.
6. **Commit.** Everything is written to ``<cache>/.tmp-<key>-<pid>``; the marker is written
   and fsynced last, then the directory is renamed to ``<cache>/<key>`` in one step. A fetch
   killed at any point leaves no marker under the final name, and a rerun completes.

Failures end with exit codes from :class:`llmops.api.runtime_env.FetchExit` and a one-line
termination message ``<Reason>: <detail>``; success writes ``ModelVerified: digest=sha256:...
bytes=N seconds=S cache=hit|miss key=K path=P``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from llmops.api import runtime_env as E
from llmops.api.runtime_env import FetchExit

from llmops_runtime import localenv as L

from . import manifest as M

MARKER = ".llmops-complete.json"
MARKER_FORMAT = "llmops-model-cache/1"
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
WEIGHT_SUFFIX = ".safetensors"
DEFAULT_PVC_ROOT = "/mnt/pvc"
DEFAULT_TERMINATION_LOG = "/dev/termination-log"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


class FetchError(Exception):
    """A fetch failure with its exit code; ``reason`` is the condition reason."""

    def __init__(self, code: FetchExit, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def reason(self) -> str:
        return E.FETCH_REASONS[self.code]


@dataclass(frozen=True)
class FetchRequest:
    uri: str
    dest: Path
    manifest: str | None = None  # path/URI of a manifest, or a name relative to the model root
    manifest_sha256: str | None = None  # pin: the manifest's own sha256
    revision: str | None = None
    allow_pickle: bool = False
    concurrency: int = 16  # parallel requests (ranges and files)
    chunk_bytes: int = 8 << 20  # multipart part size
    max_bytes_per_second: float = 0.0  # 0 = no cap
    link: str | None = None  # also point <dest>/<link> (symlink) at the model directory


@dataclass(frozen=True)
class FetchResult:
    path: Path
    key: str
    digest: str  # sha256 of the manifest bytes
    files: int
    bytes: int
    seconds: float
    cache_hit: bool

    def message(self) -> str:
        return (
            f"{E.FETCH_OK_REASON}: digest=sha256:{self.digest} bytes={self.bytes} files={self.files} "
            f"seconds={self.seconds:.3f} cache={'hit' if self.cache_hit else 'miss'} key={self.key} path={self.path}"
        )


def pod_path(p: str | Path) -> Path:
    """Inside a sandbox pod an absolute path P means $LLMOPS_SANDBOX_ROOT/P; elsewhere P. A path
    already under the pod root stays as it is (a path handed on by another container)."""
    root = os.environ.get(L.SANDBOX_ROOT)
    p = Path(p)
    return Path(root) / str(p).lstrip("/") if root and p.is_absolute() and not p.is_relative_to(root) else p


class Throttle:
    """A shared byte budget per second (token bucket); ``consume`` sleeps when over it."""

    def __init__(self, bps: float) -> None:
        self.bps = bps
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._sent = 0

    def consume(self, n: int) -> None:
        if self.bps <= 0:
            return
        with self._lock:
            self._sent += n
            due = self._t0 + self._sent / self.bps
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


# --- sources -----------------------------------------------------------------------------------


class Source:
    """Where a model's files come from; ``listing`` maps relative path -> size."""

    uri: str

    def listing(self) -> dict[str, int]:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def download(self, rels: list[str], into: Path, throttle: Throttle, req: FetchRequest) -> dict[str, M.Entry]:
        """Fetch ``rels`` under ``into`` and return their sha256/size."""
        raise NotImplementedError

    def implied(self) -> dict[str, str]:
        """sha256 the source itself vouches for (HF LFS blob names); {} otherwise."""
        return {}


class LocalSource(Source):
    def __init__(self, root: Path, uri: str) -> None:
        self.root, self.uri = root, uri
        if not root.is_dir():
            raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{uri}: directory {root} not found")
        self._files: dict[str, Path] | None = None

    def files(self) -> dict[str, Path]:
        if self._files is None:
            self._files = {
                p.relative_to(self.root).as_posix(): p
                for p in sorted(self.root.rglob("*"))
                if p.is_file() and not p.relative_to(self.root).as_posix().startswith(".")
            }
        return self._files

    def listing(self) -> dict[str, int]:
        return {r: p.stat().st_size for r, p in self.files().items()}

    def fingerprint(self) -> str:
        parts = [f"{r}\0{p.stat().st_size}\0{p.stat().st_mtime_ns}\0{os.path.realpath(p)}" for r, p in self.files().items()]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def download(self, rels: list[str], into: Path, throttle: Throttle, req: FetchRequest) -> dict[str, M.Entry]:
        def one(rel: str) -> M.Entry:
            src, dst = Path(os.path.realpath(self.root / rel)), into / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if throttle.bps <= 0:
                try:
                    os.link(src, dst)  # same filesystem (PVC -> cache on the PVC): no bytes moved
                    return M.hash_file(dst)
                except OSError as e:
                    if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
            h, n = hashlib.sha256(), 0
            with open(src, "rb") as fi, open(dst, "wb") as fo:
                while chunk := fi.read(req.chunk_bytes):
                    throttle.consume(len(chunk))
                    h.update(chunk)
                    fo.write(chunk)
                    n += len(chunk)
            return M.Entry(h.hexdigest(), n)

        with ThreadPoolExecutor(max(1, min(4, req.concurrency))) as pool:
            return dict(zip(rels, pool.map(one, rels), strict=True))


class HFSource(LocalSource):
    """A pre-staged Hugging Face hub cache snapshot (nothing is downloaded from the Hub)."""

    def __init__(self, uri: str, revision: str | None) -> None:
        rest = uri[len("hf://") :]
        name, _, rev_in_uri = rest.partition("@")
        revision = revision or rev_in_uri or None
        if not revision:
            raise FetchError(FetchExit.UNSUPPORTED_SOURCE, f"{uri}: hf:// needs a pinned revision (--revision or @rev)")
        if name.count("/") != 1:
            raise FetchError(FetchExit.UNSUPPORTED_SOURCE, f"{uri}: expected hf://org/name")
        repo = pod_path(hf_root()) / ("models--" + name.replace("/", "--"))
        commit = revision
        if not _HEX40.match(revision):
            ref = repo / "refs" / revision
            if not ref.is_file():
                raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{uri}: revision {revision!r} not staged under {repo}")
            commit = ref.read_text().strip()
        snap = repo / "snapshots" / commit
        if not snap.is_dir():
            raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{uri}: snapshot {commit} not staged under {repo}")
        super().__init__(snap, f"hf://{name}@{commit}")

    def implied(self) -> dict[str, str]:
        # LFS blobs are stored under their sha256; small git blobs under a sha1 (not used).
        out = {}
        for rel, p in self.files().items():
            blob = os.path.basename(os.path.realpath(p))
            if _HEX64.match(blob):
                out[rel] = blob
        return out


def hf_root() -> str:
    env = os.environ
    if env.get(L.HF_SNAPSHOT_ROOT):
        return env[L.HF_SNAPSHOT_ROOT]
    if env.get("HF_HUB_CACHE"):
        return env["HF_HUB_CACHE"]
    if env.get("HF_HOME"):
        return os.path.join(env["HF_HOME"], "hub")
    return os.path.expanduser("~/.cache/huggingface/hub")


class S3Source(Source):
    def __init__(self, uri: str, concurrency: int = 16) -> None:
        import boto3
        from botocore.config import Config

        p = urlparse(uri)
        if not p.netloc:
            raise FetchError(FetchExit.UNSUPPORTED_SOURCE, f"{uri}: missing bucket")
        self.uri, self.bucket = uri, p.netloc
        self.prefix = p.path.strip("/") + "/" if p.path.strip("/") else ""
        cfg = Config(max_pool_connections=concurrency + 4, retries={"mode": "standard", "max_attempts": 5})
        # boto3 reads AWS_ENDPOINT_URL_S3 itself; passing it keeps older botocore working too.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
        self.client = boto3.client("s3", endpoint_url=endpoint, config=cfg)
        self._list: dict[str, tuple[int, str]] | None = None

    def _objects(self) -> dict[str, tuple[int, str]]:
        if self._list is None:
            out: dict[str, tuple[int, str]] = {}
            with _s3_errors(self.uri):
                for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                    for o in page.get("Contents", []):
                        rel = o["Key"][len(self.prefix) :]
                        if rel and not rel.endswith("/"):
                            out[rel] = (int(o["Size"]), str(o.get("ETag", "")))
            if not out:
                raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{self.uri}: no objects under this prefix")
            self._list = out
        return self._list

    def listing(self) -> dict[str, int]:
        return {r: s for r, (s, _) in self._objects().items()}

    def fingerprint(self) -> str:
        parts = [f"{r}\0{s}\0{etag}" for r, (s, etag) in sorted(self._objects().items())]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def read(self, rel: str) -> bytes:
        with _s3_errors(f"{self.uri}/{rel}"):
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + rel)["Body"].read()

    def download(self, rels: list[str], into: Path, throttle: Throttle, req: FetchRequest) -> dict[str, M.Entry]:
        from s3transfer.manager import TransferConfig, TransferManager
        from s3transfer.subscribers import BaseSubscriber

        cfg = TransferConfig(
            multipart_threshold=req.chunk_bytes,
            multipart_chunksize=req.chunk_bytes,
            max_request_concurrency=req.concurrency,
        )
        hashes: dict[str, Future[M.Entry]] = {}
        hash_pool = ThreadPoolExecutor(2)  # hash finished files while others still download

        class Progress(BaseSubscriber):  # type: ignore[misc]
            def __init__(self, rel: str) -> None:
                self.rel = rel

            def on_progress(self, future, bytes_transferred, **kw):  # type: ignore[no-untyped-def]
                throttle.consume(bytes_transferred)

            def on_done(self, future, **kw):  # type: ignore[no-untyped-def]
                try:
                    future.result()
                except BaseException:
                    return
                hashes[self.rel] = hash_pool.submit(M.hash_file, into / self.rel)

        try:
            with _s3_errors(self.uri), TransferManager(self.client, cfg) as tm:
                futures = []
                for rel in rels:
                    (into / rel).parent.mkdir(parents=True, exist_ok=True)
                    futures.append(tm.download(self.bucket, self.prefix + rel, str(into / rel), subscribers=[Progress(rel)]))
                for f in futures:
                    f.result()
            return {rel: hashes[rel].result() for rel in rels}
        finally:
            hash_pool.shutdown(wait=True)


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}:
            raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{what}: {code}") from None
        raise FetchError(FetchExit.FETCH_FAILED, f"{what}: {e}") from None
    except BotoCoreError as e:
        raise FetchError(FetchExit.FETCH_FAILED, f"{what}: {e}") from None


def open_source(uri: str, revision: str | None = None, concurrency: int = 16) -> Source:
    p = urlparse(uri)
    if p.scheme == "s3":
        return S3Source(uri, concurrency)
    if p.scheme == "hf":
        return HFSource(uri, revision)
    if p.scheme == "pvc":
        root = Path(os.environ.get(E.PVC_ROOT) or DEFAULT_PVC_ROOT)
        return LocalSource(pod_path(root / p.netloc / p.path.strip("/")), uri)
    if p.scheme == "file" or (p.scheme == "" and uri.startswith("/")):
        return LocalSource(pod_path(p.path if p.scheme else uri), uri)
    if p.scheme == "oci":
        raise FetchError(FetchExit.UNSUPPORTED_SOURCE, f"{uri}: oci:// models are not supported yet (use s3://, pvc:// or hf://)")
    raise FetchError(FetchExit.UNSUPPORTED_SOURCE, f"{uri}: unsupported model URI (s3://, pvc://, hf://, file:// or an absolute path)")


# --- selection (pure) --------------------------------------------------------------------------


def select(listing: dict[str, int], manifest: dict[str, M.Entry] | None, allow_pickle: bool, uri: str) -> tuple[list[str], list[str]]:
    """(files to fetch, pickle files skipped). Raises ModelNotFound/PickleNotAllowed/DigestMismatch."""
    if manifest is not None:
        for rel, e in sorted(manifest.items()):
            if rel not in listing:
                raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{rel}: listed in the manifest but missing under {uri}")
            if e.size >= 0 and listing[rel] != e.size:
                raise FetchError(FetchExit.DIGEST_MISMATCH, f"{rel}: size {listing[rel]} != manifest {e.size}")
        candidates = sorted(manifest)
    else:
        candidates = sorted(r for r in listing if r != M.DEFAULT_NAME)
    pickles = [r for r in candidates if Path(r).suffix.lower() in PICKLE_SUFFIXES]
    weights = [r for r in candidates if r.lower().endswith(WEIGHT_SUFFIX)]
    if allow_pickle:
        if not weights and not pickles:
            raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{uri}: no weight files (*.safetensors or pickle)")
        return candidates, []
    if not weights:
        if pickles:
            raise FetchError(
                FetchExit.PICKLE_NOT_ALLOWED,
                f"{pickles[0]}: pickle weights can run code when loaded and no *.safetensors weights exist; "
                f"convert to safetensors or set allowPickle ({len(pickles)} pickle file(s))",
            )
        raise FetchError(FetchExit.MODEL_NOT_FOUND, f"{uri}: no *.safetensors weight files")
    return [r for r in candidates if r not in set(pickles)], pickles


def verify(got: dict[str, M.Entry], expected: dict[str, str]) -> None:
    for rel in sorted(got):
        want = expected.get(rel)
        if want is not None and got[rel].sha256 != want:
            raise FetchError(FetchExit.DIGEST_MISMATCH, f"{rel}: sha256 {got[rel].sha256} != expected {want}")


# --- cache -------------------------------------------------------------------------------------


def cache_ok(path: Path) -> dict | None:
    """The marker when ``path`` is a complete cache entry (every file there with its size)."""
    try:
        marker = json.loads((path / MARKER).read_text())
        for rel, size in marker["files"].items():
            if (path / rel).stat().st_size != size:
                return None
        return marker
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link(dest: Path, name: str, key: str) -> None:
    tmp = dest / f".{name}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(key, tmp)
    os.replace(tmp, dest / name)


def _hit(path: Path, key: str, marker: dict, t0: float, req: FetchRequest) -> FetchResult:
    if req.link:
        _link(path.parent, req.link, key)
    return FetchResult(path, key, marker["digest"], len(marker["files"]), int(marker["bytes"]), time.monotonic() - t0, True)


def cache_key(req: FetchRequest, src: Source | None) -> str:
    if req.manifest_sha256:
        return f"sha256-{req.manifest_sha256.lower()}"
    assert src is not None
    h = hashlib.sha256(f"{src.uri}\0{req.revision or ''}\0{src.fingerprint()}".encode()).hexdigest()
    return f"src-{h[:40]}"


def _load_manifest(req: FetchRequest, src: Source, listing: dict[str, int]) -> bytes | None:
    m = req.manifest
    try:
        if m:
            if m.startswith("s3://"):
                return S3Source(m.rsplit("/", 1)[0]).read(m.rsplit("/", 1)[1])
            if m.startswith("/") or m.startswith("file://"):
                return pod_path(urlparse(m).path if m.startswith("file://") else m).read_bytes()
            if m not in listing:
                raise FetchError(FetchExit.MODEL_NOT_FOUND, f"manifest {m} not found under {src.uri}")
            return src.read(m)
        if M.DEFAULT_NAME in listing:
            return src.read(M.DEFAULT_NAME)
    except FileNotFoundError:
        raise FetchError(FetchExit.MODEL_NOT_FOUND, f"manifest {m} not found") from None
    return None


def fetch(req: FetchRequest) -> FetchResult:
    """Fetch and verify ``req.uri`` into ``req.dest``; see the module docstring."""
    t0 = time.monotonic()
    if req.manifest_sha256 and not _HEX64.match(req.manifest_sha256.lower()):
        raise FetchError(FetchExit.UNSUPPORTED_SOURCE, "manifest sha256 must be 64 hex digits")
    dest = req.dest
    dest.mkdir(parents=True, exist_ok=True)
    src: Source | None = None
    if not req.manifest_sha256:
        src = open_source(req.uri, req.revision, req.concurrency)
    key = cache_key(req, src)
    final = dest / key
    if marker := cache_ok(final):  # pinned: no storage request at all
        return _hit(final, key, marker, t0, req)
    with _locked(dest / ".locks" / f"{key}.lock"):
        if marker := cache_ok(final):  # another fetcher finished while we waited
            return _hit(final, key, marker, t0, req)
        for stale in dest.glob(f".tmp-{key}-*"):  # left by a killed fetcher (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        src = src or open_source(req.uri, req.revision, req.concurrency)
        listing = src.listing()
        raw = _load_manifest(req, src, listing)
        if req.manifest_sha256:
            if raw is None:
                raise FetchError(FetchExit.MODEL_NOT_FOUND,
                                 f"{req.uri}: a manifest sha256 is pinned but no manifest was found ({M.DEFAULT_NAME})")
            if M.digest(raw) != req.manifest_sha256.lower():
                raise FetchError(FetchExit.DIGEST_MISMATCH, f"manifest: sha256 {M.digest(raw)} != pinned {req.manifest_sha256.lower()}")
        try:
            manifest = M.parse(raw) if raw is not None else None
        except M.ManifestError as e:
            raise FetchError(FetchExit.DIGEST_MISMATCH, f"manifest: {e}") from None
        rels, skipped = select(listing, manifest, req.allow_pickle, src.uri)
        if skipped:
            print(f"skipping {len(skipped)} pickle file(s) (safetensors weights present): {', '.join(skipped[:5])}", file=sys.stderr)
        tmp = dest / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            got, raw, marker = _download_verify_commit(req, src, key, rels, skipped, manifest, raw, tmp, t0)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)  # a failed fetch leaves nothing behind
            raise
        if final.exists():  # an incomplete/corrupt earlier entry: move aside, never mix
            trash = dest / f".trash-{key}-{os.getpid()}"
            os.rename(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(dest)
    if req.link:
        _link(dest, req.link, key)
    return FetchResult(final, key, marker["digest"], len(got), marker["bytes"], time.monotonic() - t0, False)


def _download_verify_commit(
    req: FetchRequest, src: Source, key: str, rels: list[str], skipped: list[str],
    manifest: dict[str, M.Entry] | None, raw: bytes | None, tmp: Path, t0: float,
) -> tuple[dict[str, M.Entry], bytes, dict]:
    """Download into ``tmp``, verify, write the manifest and (last, fsynced) the marker."""
    got = src.download(rels, tmp, Throttle(req.max_bytes_per_second), req)
    expected = src.implied() | ({r: e.sha256 for r, e in manifest.items()} if manifest else {})
    verify(got, expected)
    for rel, e in got.items():
        if manifest and manifest[rel].size >= 0 and e.size != manifest[rel].size:
            raise FetchError(FetchExit.DIGEST_MISMATCH, f"{rel}: size {e.size} != manifest {manifest[rel].size}")
    if raw is None:
        raw = M.render(got)
    if M.DEFAULT_NAME not in got:
        (tmp / M.DEFAULT_NAME).write_bytes(raw)
    total = sum(e.size for e in got.values())
    seconds = time.monotonic() - t0
    marker = {
        "format": MARKER_FORMAT,
        "uri": src.uri,
        "revision": req.revision,
        "key": key,
        "digest": M.digest(raw),
        "files": {r: e.size for r, e in sorted(got.items())},
        "bytes": total,
        "seconds": round(seconds, 3),
        "skippedPickle": skipped,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with open(tmp / MARKER, "w") as f:
        json.dump(marker, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    return got, raw, marker


# --- CLI ---------------------------------------------------------------------------------------


def write_termination_message(line: str) -> None:
    path = pod_path(os.environ.get(L.TERMINATION_LOG) or DEFAULT_TERMINATION_LOG)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(line[:4000] + "\n")  # kubelet keeps at most 4096 bytes
    except OSError:
        pass  # not in a pod: stderr carries it


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llmops_runtime.serve.fetch", description="Fetch and verify a model into a cache.")
    ap.add_argument("--uri", required=True, help="s3://bucket/prefix, pvc://claim/path, hf://org/name[@rev], /abs/dir")
    ap.add_argument("--dest", required=True, help="cache directory (the model lands in DEST/<key>/)")
    ap.add_argument("--manifest", help=f"manifest path/URI, or a name under the model root (default: {M.DEFAULT_NAME} if present)")
    ap.add_argument("--manifest-sha256", help="pinned sha256 of the manifest file")
    ap.add_argument("--revision", help="pinned revision (required for hf://)")
    ap.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (.bin/.pt/...): they run code when loaded")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--chunk-mib", type=int, default=8)
    ap.add_argument("--max-bytes-per-second", type=float, default=float(os.environ.get(L.FETCH_MAX_BYTES_PER_SECOND) or 0))
    ap.add_argument("--link", help="also make DEST/LINK a symlink to the model directory (a stable path for the server)")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    req = FetchRequest(
        uri=a.uri,
        dest=pod_path(a.dest),
        manifest=a.manifest,
        manifest_sha256=a.manifest_sha256,
        revision=a.revision,
        allow_pickle=a.allow_pickle,
        concurrency=max(1, a.concurrency),
        chunk_bytes=max(1, a.chunk_mib) << 20,
        max_bytes_per_second=a.max_bytes_per_second,
        link=a.link,
    )
    try:
        res = fetch(req)
    except FetchError as e:
        line = f"{e.reason}: {e}"
        print(line, file=sys.stderr)
        write_termination_message(line)
        return int(e.code)
    except OSError as e:
        line = f"{E.FETCH_REASONS[FetchExit.FETCH_FAILED]}: {e}"
        print(line, file=sys.stderr)
        write_termination_message(line)
        return int(FetchExit.FETCH_FAILED)
    rate = res.bytes / res.seconds / 1e6 if res.seconds > 0 else 0.0
    how = "cache hit" if res.cache_hit else "fetched"
    print(f"{how}: {res.files} files, {res.bytes} bytes in {res.seconds:.3f} s ({rate:.1f} MB/s) -> {res.path}")
    line = res.message()
    print(line)
    write_termination_message(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
