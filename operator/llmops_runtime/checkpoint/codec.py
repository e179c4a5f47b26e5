"""Snapshot and (de)serialisation of one rank's state, without pickle.

A rank's state is a nested tree (model and optimizer ``state_dict``s with integer keys and
tuples, RNG tuples holding numpy arrays, loader positions, plain numbers). Saving it is
split in two phases so the training loop blocks only for the first:

1. :func:`snapshot` (caller's thread, the "stall"): walk the tree once; copy every tensor
   into a host buffer (pinned memory for CUDA tensors, reused across saves through a
   :class:`BufferPool`, so steady-state saves allocate nothing and take no page faults) and
   encode everything else to JSON bytes right away. Large CPU tensors are copied in
   ``COPY_SLICE`` slices by the caller and a pool of threads together (one per core, see
   ``_copy_all``): the loop is blocked anyway, so the copy may use every core. After it returns the caller may mutate
   its state freely: the snapshot shares nothing with it.

   Background staging (``defer``): the tensors the caller promises not to change until
   :meth:`Staging.wait` returned (the optimizer's parameters and state, guarded by a step
   pre-hook) are not copied in the call; their slices are left in a :class:`Staging` that
   copy-pool threads work through while the loop runs its next forward/backward, and the
   writer streams each tensor once its own copy landed. Everything else is still copied
   before :func:`snapshot` returns.
2. :func:`iter_safetensors` (background thread): stream the tensors as one standard
   safetensors file, chunk by chunk straight from the host buffers (no serialised copy of
   the whole state is ever built), so the store can hash and upload while reading.

Loading parses the same two files: the JSON skeleton with ``json`` and the tensor file as
safetensors (:func:`parse_safetensors`: the header is JSON, the data is raw bytes viewed
as tensors, zero-copy over the verified buffer). Nothing is ever unpickled.

JSON tags (an object with exactly one ``__x__`` key): ``__tuple__``, ``__items__`` (dict
whose keys are not plain strings, or collide with a tag), ``__tensor__``, ``__ndarray__``,
``__npscalar__`` (numpy scalar, bit-exact via its bytes), ``__bytes__`` (base64),
``__dtype__`` (a torch dtype). Python floats round-trip exactly through ``repr``; NaN and
Inf are allowed (Python's json reads back what it writes).
"""

from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FORMAT = "llmops-ckpt-state/1"

#: safetensors dtype codes <-> torch dtypes (the subset safetensors defines).
_DTYPE_CODES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
for _name, _code in (
    ("uint16", "U16"),
    ("uint32", "U32"),
    ("uint64", "U64"),
    ("float8_e4m3fn", "F8_E4M3"),
    ("float8_e5m2", "F8_E5M2"),
):
    if hasattr(torch, _name):
        _DTYPE_CODES[getattr(torch, _name)] = _code
_CODE_DTYPES = {code: dt for dt, code in _DTYPE_CODES.items()}
_TAGS = ("__tuple__", "__items__", "__tensor__", "__ndarray__", "__npscalar__", "__bytes__", "__dtype__")

#: Chunk size for streaming tensor bytes (hashing/uploading overlap at this grain).
CHUNK = 8 << 20
#: Slice of a large CPU tensor copied by one task of the snapshot's copy pool.
COPY_SLICE = 4 << 20
#: Threads copying a snapshot, the caller's included: the loop is blocked anyway, so every
#: core this process may use (at full priority, unlike the background pool).
_COPY_WORKERS = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
_COPY_POOL = ThreadPoolExecutor(max_workers=max(1, _COPY_WORKERS - 1), thread_name_prefix="ckpt-copy")


class NotPortable(TypeError):
    """A state object that could be saved only with pickle; refused at save time."""


class CorruptShard(ValueError):
    """A shard file that does not parse as the format it claims."""


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def _torch_dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise CorruptShard(f"unknown torch dtype {name!r}")
    return dt


@dataclass
class BufferPool:
    """Host buffers reused across saves, keyed by tensor name (pinned when CUDA is used).

    Only one save is ever in flight, and a new snapshot starts only after the previous
    persist finished, so reusing a buffer never races with a reader.
    """

    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def take(self, name: str, like: torch.Tensor) -> torch.Tensor:
        buf = self.buffers.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            pin = like.device.type == "cuda"
            buf = torch.empty(like.shape, dtype=like.dtype, device="cpu", pin_memory=pin)
            self.buffers[name] = buf
        return buf

    def clear(self) -> None:
        self.buffers.clear()


@dataclass
class Snapshot:
    """A rank's state frozen in host memory: JSON skeleton + named contiguous CPU tensors."""

    skeleton: bytes
    tensors: dict[str, torch.Tensor]
    #: copies still running after ``snapshot`` returned (``defer``); None: all done
    staging: Staging | None = None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())


Copy = tuple[torch.Tensor, torch.Tensor]  # (dst, src)


class Staging:
    """The copies of a snapshot that run after :func:`snapshot` returned (background staging).

    Slices are taken from one shared counter by copy-pool threads (:meth:`start`) and by any
    thread that calls :meth:`wait`: a loop that reaches its optimizer step before the copy
    is done blocks only for what is left, and copies it itself rather than idling. The
    thread that finishes the last slice compares every source's version counter with the
    one it had at ``save()`` and only then marks the staging done: an in-place update that
    ran before the wait (a broken promise) fails the save instead of committing a torn
    state. The check cannot see an update still running at that instant, so it is a net,
    not the guarantee; the guarantee is waiting before the update."""

    def __init__(self, copies: list[Copy], sources: list[torch.Tensor], cuda: list[Copy],
                 owners: list[str] | None = None) -> None:
        self._copies = copies
        self._owners = owners or [""] * len(copies)  # the tensor name of each slice
        self._pending = collections.Counter(self._owners)  # slices left per tensor name
        self._taken = itertools.count()
        self._left = len(copies)
        self._lock = threading.Condition()
        self._done = threading.Event()
        self._versions = [(t, _version(t)) for t in sources]
        self.error: str | None = None
        self._cuda_event: Any = None
        if cuda:  # queued behind the eager copies on the current stream; consumers sync the event
            for d, s in cuda:
                d.copy_(s, non_blocking=True)
            self._cuda_event = torch.cuda.Event()
            self._cuda_event.record()
        if not copies:
            self._finish()

    def start(self, helpers: int | None = None) -> None:
        """Hand the slices to ``helpers`` copy-pool threads (default: the pool's size)."""
        n = max(1, _COPY_WORKERS - 1) if helpers is None else helpers
        for _ in range(min(n, len(self._copies))):
            _COPY_POOL.submit(self._drain)

    def _drain(self) -> None:
        for i in self._taken:
            if i >= len(self._copies):
                return
            d, s = self._copies[i]
            try:
                d.copy_(s)
            except Exception as e:  # noqa: BLE001 - recorded; the save fails with it
                self.error = self.error or f"staging copy failed: {type(e).__name__}: {e}"
            with self._lock:
                self._left -= 1
                last = self._left == 0
                self._pending[self._owners[i]] -= 1
                if not self._pending[self._owners[i]]:
                    self._lock.notify_all()
            if last:
                self._finish()

    def _finish(self) -> None:
        changed = sum(1 for t, v in self._versions if _version(t) != v)
        if changed and self.error is None:
            self.error = (f"{changed} tensor(s) were updated in place while being staged "
                          "(call wait_staged() before the optimizer step)")
        self._versions = []  # no references to the live state beyond the copy
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set() and (self._cuda_event is None or bool(self._cuda_event.query()))

    def wait_for(self, name: str) -> None:
        """Block (without helping) until every slice of tensor ``name`` is copied: the
        persist may write a tensor as soon as its own copy landed."""
        if self._cuda_event is not None:
            self._cuda_event.synchronize()
        with self._lock:
            self._lock.wait_for(lambda: self._pending[name] <= 0)

    def wait(self, help: bool = True) -> float:
        """Block until every copy landed (``help``: copy the slices left meanwhile); seconds."""
        t0 = time.perf_counter()
        if help:
            self._drain()
        self._done.wait()
        if self._cuda_event is not None:
            self._cuda_event.synchronize()
        return time.perf_counter() - t0


def sharing_memory_with(tensors: Iterable[torch.Tensor]) -> Callable[[torch.Tensor], bool]:
    """A ``defer`` predicate: True for a tensor whose memory belongs to one of ``tensors``
    (a ``state_dict`` holds detached views of the parameters, not the parameters)."""
    keys = {_storage_key(t) for t in tensors}
    keys.discard(None)
    return lambda t: _storage_key(t) in keys


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    ptr = t.untyped_storage().data_ptr()
    return None if ptr == 0 else (str(t.device), ptr)


def _version(t: torch.Tensor) -> int:
    try:
        return int(t._version)
    except RuntimeError:  # inference-mode tensors keep no version counter
        return -1


def snapshot(state: Any, pool: BufferPool | None = None,
             defer: Callable[[torch.Tensor], bool] | None = None) -> Snapshot:
    """Freeze ``state``: copy tensors/arrays to host buffers, encode the rest to JSON.

    ``defer(t)`` True: a tensor whose copy may finish after this returns
    (``Snapshot.staging``); the caller must not update it in place before
    ``staging.wait()``."""
    pool = pool if pool is not None else BufferPool()
    tensors: dict[str, torch.Tensor] = {}
    cuda_used = False
    copies: list[Copy] = []  # (dst, src) flat slices, done after the walk
    later: list[Copy] = []  # deferred CPU slices
    owners: list[str] = []  # the tensor name of each deferred slice
    later_cuda: list[Copy] = []
    sources: list[torch.Tensor] = []  # the deferred tensors, for the version check

    def unique(path: str) -> str:
        name = path or "_"
        if name in tensors:
            n = 1
            while f"{name}#{n}" in tensors:
                n += 1
            name = f"{name}#{n}"
        return name

    def walk(value: Any, path: str) -> Any:
        nonlocal cuda_used
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, np.generic):
            return int(value) if isinstance(value, int) else float(value)  # IntEnum etc. -> plain
        if isinstance(value, torch.Tensor):
            name = unique(path)
            src = value.detach()
            if src.dtype not in _DTYPE_CODES:
                raise NotPortable(f"{path or '<root>'}: tensor dtype {src.dtype} is not supported by safetensors")
            buf = pool.take(name, src)
            big = src.is_contiguous() and src.numel() * src.element_size() > COPY_SLICE and src.device.type == "cpu"
            deferred = defer is not None and src.numel() > 0 and defer(src)
            if deferred:
                sources.append(src)
            if src.device.type == "cuda":
                if deferred:
                    later_cuda.append((buf, src))
                else:
                    cuda_used = True
                    buf.copy_(src, non_blocking=True)
            elif big:
                step = max(1, COPY_SLICE // src.element_size())
                d, s = buf.reshape(-1), src.reshape(-1)
                (later if deferred else copies).extend((d[i : i + step], s[i : i + step]) for i in range(0, d.numel(), step))
                if deferred:
                    owners.extend([name] * (len(later) - len(owners)))
            elif deferred:
                later.append((buf, src))
                owners.append(name)
            else:
                buf.copy_(src)
            tensors[name] = buf
            return {"__tensor__": name, "dtype": _dtype_name(src.dtype), "shape": list(src.shape)}
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise NotPortable(f"{path or '<root>'}: numpy object arrays need pickle")
            name = unique(path)
            arr = np.ascontiguousarray(value)
            raw = torch.from_numpy(arr.reshape(-1).view(np.uint8)) if arr.size else torch.empty(0, dtype=torch.uint8)
            buf = pool.take(name, raw)
            buf.copy_(raw)
            tensors[name] = buf
            return {"__ndarray__": name, "dtype": arr.dtype.str, "shape": list(arr.shape)}
        if isinstance(value, np.generic):
            if value.dtype.hasobject:
                raise NotPortable(f"{path or '<root>'}: numpy object scalar needs pickle")
            return {"__npscalar__": value.dtype.str, "hex": value.tobytes().hex()}
        if isinstance(value, tuple):
            return {"__tuple__": [walk(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and k not in _TAGS for k in value):
                return {k: walk(v, f"{path}/{k}" if path else k) for k, v in value.items()}
            return {
                "__items__": [
                    [walk(k, f"{path}/<key>"), walk(v, f"{path}/{k}" if path else str(k))] for k, v in value.items()
                ]
            }
        if isinstance(value, (bytes, bytearray)):
            return {"__bytes__": base64.b64encode(bytes(value)).decode()}
        if isinstance(value, torch.dtype):
            return {"__dtype__": _dtype_name(value)}
        raise NotPortable(f"{path or '<root>'}: {type(value).__qualname__} cannot be saved without pickle")

    tree = walk(state, "")
    _copy_all(copies)
    if cuda_used:
        # Copies were queued non_blocking into pinned buffers; the snapshot is consistent
        # only once they landed.
        torch.cuda.synchronize()
    skeleton = json.dumps({"format": FORMAT, "tree": tree}, separators=(",", ":")).encode()
    staging = Staging(later, sources, later_cuda, owners) if sources else None
    return Snapshot(skeleton=skeleton, tensors=tensors, staging=staging)


def _copy_all(copies: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Copy every (dst, src) slice, on the calling thread and ``_COPY_WORKERS - 1`` pool
    threads at once. The slices are taken from one shared counter (``next`` on an
    ``itertools.count`` is atomic under the GIL), so the work balances itself: a pool
    thread the scheduler starts late (a loaded host) takes fewer slices, and the caller,
    which is blocked until the last slice anyway, never idles waiting for a thread to
    wake up. ``Tensor.copy_`` releases the GIL, so the copies run in parallel."""
    if not copies:
        return
    taken = itertools.count()

    def drain() -> None:
        for i in taken:
            if i >= len(copies):
                return
            d, s = copies[i]
            d.copy_(s)

    helpers = [_COPY_POOL.submit(drain) for _ in range(min(_COPY_WORKERS, len(copies)) - 1)]
    drain()
    for f in helpers:
        f.result()


def _byte_view(t: torch.Tensor) -> memoryview:
    flat = t.reshape(-1)
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    return memoryview(flat.numpy()).cast("B")


def _file_order(tensors: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    # Widest dtypes first (stable otherwise): with the 8-byte padded header every tensor
    # then starts at an offset aligned to its element size, as the reference writer does,
    # so zero-copy/mmap readers can view it in place.
    return sorted(tensors.items(), key=lambda kv: -kv[1].element_size())


def safetensors_header(tensors: dict[str, torch.Tensor]) -> bytes:
    """The header of a standard safetensors file holding ``tensors`` (see ``_file_order``)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, t in _file_order(tensors):
        n = t.numel() * t.element_size()
        header[name] = {"dtype": _DTYPE_CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the reference writer pads to 8 so tensors stay aligned
    return struct.pack("<Q", len(raw)) + raw


def iter_safetensors(tensors: dict[str, torch.Tensor], chunk: int = CHUNK,
                     staging: Staging | None = None) -> Iterator[memoryview]:
    """Stream a safetensors file of ``tensors`` as byte chunks, straight from their memory
    (``staging``: each tensor once its background copy landed)."""
    yield memoryview(safetensors_header(tensors))
    for name, t in _file_order(tensors):
        if t.numel() == 0:
            continue
        if staging is not None:
            staging.wait_for(name)
        view = _byte_view(t)
        for start in range(0, len(view), chunk):
            yield view[start : start + chunk]


def _header_length(prefix: bytes | bytearray | memoryview, total: int) -> int:
    if total < 8 or len(prefix) < 8:
        raise CorruptShard("shorter than a safetensors header")
    (n,) = struct.unpack_from("<Q", prefix, 0)
    if n > total - 8 or n > 100 << 20:
        raise CorruptShard("header length out of range")
    return int(n)


def _layout(header_raw: bytes, body: int) -> list[tuple[str, torch.dtype, list[int], int, int]]:
    """(name, dtype, shape, start, end) of every tensor, in file order, checked to tile the
    body exactly (contiguous, sizes matching dtype x shape, no trailing bytes)."""
    try:
        header = json.loads(header_raw)
    except ValueError as e:
        raise CorruptShard(f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise CorruptShard("header is not a JSON object")
    try:
        entries = sorted(
            ((k, v) for k, v in header.items() if k != "__metadata__"), key=lambda kv: kv[1]["data_offsets"][0]
        )
        out = []
        expect = 0
        for name, meta in entries:
            dt = _CODE_DTYPES.get(meta.get("dtype"))
            if dt is None:
                raise CorruptShard(f"{name}: unknown dtype {meta.get('dtype')!r}")
            start, end = (int(x) for x in meta["data_offsets"])
            shape = [int(x) for x in meta["shape"]]
            numel = int(np.prod(shape)) if shape else 1
            itemsize = torch.empty(0, dtype=dt).element_size()
            if start != expect or end - start != numel * itemsize or end > body:
                raise CorruptShard(f"{name}: data offsets inconsistent")
            expect = end
            out.append((name, dt, shape, start, end))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        if isinstance(e, CorruptShard):
            raise
        raise CorruptShard(f"header malformed: {e}") from None
    if expect != body:
        raise CorruptShard("trailing bytes after the last tensor")
    return out


def parse_safetensors(data: bytearray | bytes | np.ndarray) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors buffer, viewed zero-copy (the buffer is kept alive by them)."""
    if isinstance(data, bytes):
        data = bytearray(data)  # tensors must be writable
    if isinstance(data, np.ndarray):
        data = memoryview(data).cast("B")  # type: ignore[assignment]
    n = _header_length(data, len(data))
    base = 8 + n
    out: dict[str, torch.Tensor] = {}
    mv = memoryview(data)
    for name, dt, shape, start, end in _layout(bytes(data[8:base]), len(data) - base):
        if start == end:
            out[name] = torch.empty(shape, dtype=dt)
            continue
        raw = torch.frombuffer(mv[base + start : base + end], dtype=torch.uint8)
        out[name] = raw.view(dt).reshape(shape)
    return out


class SafetensorsTiles:
    """Plans reading a safetensors file straight into one fresh tensor per entry (the way
    ``torch.load`` allocates, so no single huge buffer): :meth:`tiles` gets the file's size
    and an unverified ``pread(offset, n)`` to look at the header, and returns writable byte
    views that tile the whole file in order (header first); the store fills them (and
    verifies their sha256). :meth:`tensors` then checks that the verified header is the
    one the plan was made from and returns the tensors."""

    def __init__(self) -> None:
        self._planned = b""
        self._header = bytearray()
        self._out: dict[str, torch.Tensor] = {}

    def tiles(self, size: int, pread: Any) -> list[memoryview]:
        n = _header_length(pread(0, 8), size)
        self._planned = bytes(pread(0, 8 + n))
        if len(self._planned) != 8 + n:
            raise CorruptShard("file shrank while reading its header")
        self._header = bytearray(8 + n)
        views = [memoryview(self._header)]
        for name, dt, shape, start, end in _layout(self._planned[8:], size - 8 - n):
            t = torch.empty(shape, dtype=dt)
            self._out[name] = t
            if end > start:
                views.append(_byte_view(t))
        return views

    def tensors(self) -> dict[str, torch.Tensor]:
        if bytes(self._header) != self._planned:
            raise CorruptShard("header changed while reading")
        return self._out


def restore(skeleton: bytes, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`snapshot` (+ write + parse): the state tree, tensors on CPU."""
    try:
        doc = json.loads(skeleton)
    except ValueError as e:
        raise CorruptShard(f"skeleton is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptShard(f"unknown state format {doc.get('format') if isinstance(doc, dict) else None!r}")
    return _unflatten(doc["tree"], tensors)


def _tensor(tensors: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    try:
        return tensors[name]
    except KeyError:
        raise CorruptShard(f"tensor {name!r} missing from the shard") from None


def _unflatten(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    # A module-level function, not a closure: a recursive closure is a reference cycle that
    # kept every restored tensor (and a local load's file mapping) alive until the next
    # garbage collection.
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if "__tensor__" in node:
        t = _tensor(tensors, node["__tensor__"])
        if t.dtype != _torch_dtype(node["dtype"]) or list(t.shape) != node["shape"]:
            raise CorruptShard(f"tensor {node['__tensor__']!r} does not match its description")
        return t
    if "__ndarray__" in node:
        raw = _tensor(tensors, node["__ndarray__"]).numpy()
        return raw.view(np.dtype(node["dtype"])).reshape(node["shape"])
    if len(node) == 1 or "__npscalar__" in node:
        tag = next(iter(node))
        payload = node[tag]
        if tag == "__tuple__":
            return tuple(_unflatten(v, tensors) for v in payload)
        if tag == "__items__":
            return {_key(_unflatten(k, tensors)): _unflatten(v, tensors) for k, v in payload}
        if tag == "__npscalar__":
            return np.frombuffer(bytes.fromhex(node["hex"]), dtype=np.dtype(payload))[0]
        if tag == "__bytes__":
            return base64.b64decode(payload)
        if tag == "__dtype__":
            return _torch_dtype(payload)
    return {k: _unflatten(v, tensors) for k, v in node.items()}


def _key(k: Any) -> Any:
    # A key that was a tuple comes back as a tuple (hashable); lists never were keys.
    return k
