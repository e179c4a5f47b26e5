"""The pickle-free state codec: nested state round-trips bitwise through snapshot ->
safetensors stream + JSON skeleton -> parse -> restore; snapshots are independent of later
mutation; the tensor file is a standard safetensors file; unsupported objects and corrupt
shards are refused."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
import safetensors.torch
import torch
from llmops_runtime.checkpoint.codec import (
    BufferPool,
    CorruptShard,
    NotPortable,
    iter_safetensors,
    parse_safetensors,
    restore,
    snapshot,
)


def roundtrip(state: Any, pool: BufferPool | None = None) -> Any:
    snap = snapshot(state, pool)
    data = b"".join(bytes(c) for c in iter_safetensors(snap.tensors, chunk=7))  # odd chunking on purpose
    return restore(snap.skeleton, parse_safetensors(bytearray(data)))


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Structural + bitwise equality (types included; NaN == NaN; -0.0 != 0.0)."""
    if isinstance(a, dict):  # an OrderedDict (state_dict) comes back as a dict, order kept
        assert isinstance(b, dict), path
    else:
        assert type(a) is type(b), f"{path}: {type(a)} vs {type(b)}"
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        raw = lambda t: t.detach().contiguous().reshape(-1).view(torch.uint8)  # noqa: E731 - bitwise, NaN-safe
        assert torch.equal(raw(a), raw(b)), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), path
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), path
    elif isinstance(a, float):
        assert math.copysign(1, a) == math.copysign(1, b) and (a == b or (math.isnan(a) and math.isnan(b))), path
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), path
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, path


def _optimizer_state() -> dict[str, Any]:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict()}


CASES: list[tuple[str, Any]] = [
    ("scalars", {"a": 1, "b": -0.0, "c": float("nan"), "d": float("inf"), "e": None, "f": True, "g": "x", "h": 2**80}),
    ("float repr", {"x": 0.1 + 0.2, "y": 1e-310, "z": -1.7976931348623157e308}),
    ("tuples and int keys", {"t": (1, (2, [3, (4,)])), "m": {0: "a", 7: {"n": (None,)}}, "tk": {(1, "a"): 2}}),
    ("tag-like keys", {"__tuple__": 1, "__tensor__": [1]}),
    ("bytes", {"b": b"\x00\xffabc"}),
    ("torch dtypes",
     {str(dt): torch.arange(6).to(dt).reshape(2, 3)
      for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
                 torch.uint8, torch.bool)}),
    ("float8", {"f8": torch.randn(5).to(torch.float8_e4m3fn), "f8b": torch.randn(5).to(torch.float8_e5m2)}),
    ("special tensors",
     {"nan": torch.tensor([float("nan"), -0.0, float("inf")]), "empty": torch.empty(0, 3), "scalar": torch.tensor(3.5),
      "strided": torch.arange(12.0).reshape(3, 4).t(), "grad": torch.ones(2, requires_grad=True)}),
    ("numpy",
     {"u32": np.arange(5, dtype=np.uint32), "f16": np.ones((2, 2), np.float16), "c64": np.array([1 + 2j], np.complex64),
      "empty": np.zeros((0,), np.int8), "s32": np.float32(1.25), "i64": np.int64(-3), "b": np.bool_(True)}),
    ("rng states",
     {"py": random.Random(5).getstate(), "np": np.random.RandomState(3).get_state(), "np_new": np.random.default_rng(1).bit_generator.state,
      "torch": torch.Generator().manual_seed(9).get_state()}),
    ("torch dtype value", {"dtype": torch.bfloat16}),
    ("optimizer", _optimizer_state()),
    ("same tensor twice", (lambda t: {"a": t, "b": t, "c": [t]})(torch.arange(3.0))),
    ("slash in keys", {"a/b": torch.ones(1), "a": {"b": torch.zeros(1)}}),
]


@pytest.mark.parametrize("name,state", CASES, ids=[c[0] for c in CASES])
def test_roundtrip_is_bitwise(name: str, state: Any) -> None:
    assert_same(state, roundtrip(state))


def test_reused_buffers_keep_snapshots_independent() -> None:
    pool = BufferPool()
    w = torch.randn(1000)
    state = {"w": w, "arr": np.arange(4)}
    snap1 = snapshot(state, pool)
    saved = snap1.tensors["w"].clone()
    w.add_(1.0)  # the training loop mutates its state right after the snapshot
    state["arr"][0] = 99
    assert torch.equal(snap1.tensors["w"], saved)
    restored = restore(snap1.skeleton, {k: v.clone() for k, v in snap1.tensors.items()})
    assert restored["arr"][0] == 0
    snap2 = snapshot(state, pool)  # steady state: the pool's buffer is reused, no allocation
    assert snap2.tensors["w"].data_ptr() == snap1.tensors["w"].data_ptr()
    assert torch.equal(snap2.tensors["w"], w)


def test_tensor_file_is_standard_safetensors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    state = {"w": torch.randn(3, 5), "h": torch.arange(7, dtype=torch.bfloat16), "e": torch.empty(0)}
    snap = snapshot(state)
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"".join(bytes(c) for c in iter_safetensors(snap.tensors)))
    loaded = safetensors.torch.load_file(str(path))
    assert set(loaded) == {"w", "h", "e"}
    assert torch.equal(loaded["w"], state["w"]) and torch.equal(loaded["h"], state["h"])
    # and the reference writer's output parses with our reader
    ref = safetensors.torch.save({"a": torch.randn(4), "b": torch.arange(3)})
    assert torch.equal(parse_safetensors(bytearray(ref))["b"], torch.arange(3))


@pytest.mark.parametrize(
    "state",
    [{"f": lambda: 1}, {"o": object()}, {"a": np.array([object()])}, {"c": torch.zeros(2, dtype=torch.complex64)}, {"s": {1, 2}}],
    ids=["lambda", "object", "object-array", "complex-tensor", "set"],
)
def test_unportable_state_is_refused_at_save(state: Any) -> None:
    with pytest.raises(NotPortable):
        snapshot(state)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:4],  # truncated header length
        lambda b: b[:-1],  # truncated data
        lambda b: b + b"\x00",  # trailing bytes
        lambda b: b[:8] + b"x" + b[9:],  # header no longer JSON
        lambda b: (2**40).to_bytes(8, "little") + b[8:],  # absurd header length
    ],
    ids=["short", "truncated", "trailing", "bad-json", "bad-length"],
)
def test_corrupt_shard_is_detected(mutate: Any) -> None:
    snap = snapshot({"w": torch.randn(10), "v": torch.ones(3)})
    data = b"".join(bytes(c) for c in iter_safetensors(snap.tensors))
    with pytest.raises(CorruptShard):
        parse_safetensors(bytearray(mutate(data)))


def test_skeleton_tensor_mismatch_is_detected() -> None:
    snap = snapshot({"w": torch.randn(10)})
    with pytest.raises(CorruptShard):
        restore(snap.skeleton, {"w": torch.randn(11)})
    with pytest.raises(CorruptShard):
        restore(snap.skeleton, {})
    with pytest.raises(CorruptShard):
        restore(b'{"format": "other"}', {})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: checks the pinned-memory snapshot path")
def test_cuda_snapshot_goes_through_pinned_buffers_and_roundtrips() -> None:
    state = {"w": torch.randn(1 << 20, device="cuda"), "h": torch.randn(7, device="cuda").to(torch.bfloat16), "cpu": torch.ones(3)}
    before = {k: v.clone() for k, v in state.items()}
    snap = snapshot(state, BufferPool())
    assert snap.tensors["w"].is_pinned() and snap.tensors["w"].device.type == "cpu"
    state["w"].add_(1.0)  # after snapshot() returns the copy has landed (synchronised)
    data = b"".join(bytes(c) for c in iter_safetensors(snap.tensors))
    back = restore(snap.skeleton, parse_safetensors(bytearray(data)))
    for k in state:
        assert torch.equal(back[k], before[k].cpu()), k


def test_large_tensors_copied_in_slices_round_trip() -> None:
    """Tensors above COPY_SLICE are copied slice by slice on the copy pool: every byte lands,
    including a partial last slice, and non-contiguous ones take the whole-tensor path."""
    from llmops_runtime.checkpoint.codec import COPY_SLICE

    g = torch.Generator().manual_seed(7)
    n = 3 * COPY_SLICE // 4 + 123  # float32: three whole slices and a partial one
    big = torch.randn(n, generator=g)
    wide = torch.randn(1024, 2 * COPY_SLICE // 4 // 1024 + 3, generator=g, dtype=torch.float64).t()  # not contiguous
    state = {"big": big, "wide": wide, "b16": torch.randn(n, generator=g).to(torch.bfloat16)}
    pool = BufferPool()
    snap = snapshot(state, pool)
    expect = {k: v.clone() for k, v in state.items()}
    for v in state.values():
        v.mul_(2)  # the snapshot shares nothing with the live state
    data = b"".join(bytes(c) for c in iter_safetensors(snap.tensors))
    back = restore(snap.skeleton, parse_safetensors(bytearray(data)))
    for k, v in expect.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k].reshape(-1).view(torch.uint8), v.contiguous().reshape(-1).view(torch.uint8)), k


def test_reused_staging_buffers_give_the_same_bytes_as_fresh_ones() -> None:
    """Saves into the pool's reused buffers (and copied by the caller with the pool's
    threads) produce byte-identical shards to a snapshot into freshly allocated buffers,
    save after save, while the state changes in between."""
    from llmops_runtime.checkpoint.codec import COPY_SLICE

    g = torch.Generator().manual_seed(3)
    state = {"w": torch.randn(5 * COPY_SLICE // 4 + 17, generator=g), "b": torch.randn(31, generator=g), "n": 1}
    pool = BufferPool()
    ptrs = None
    for i in range(3):
        reused = snapshot(state, pool)
        fresh = snapshot(state, BufferPool())
        assert reused.skeleton == fresh.skeleton
        assert b"".join(bytes(c) for c in iter_safetensors(reused.tensors)) == b"".join(
            bytes(c) for c in iter_safetensors(fresh.tensors)
        )
        now = {k: t.data_ptr() for k, t in reused.tensors.items()}
        assert ptrs is None or now == ptrs  # the same buffers every time: nothing allocated
        ptrs = now
        state["w"].add_(float(i + 1))
        state["n"] += 1


def test_snapshot_copy_does_not_wait_for_a_late_pool_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The caller copies slices itself, taking them from the same counter as the pool's
    threads: a helper that starts only after the caller finished finds nothing left, and
    every byte is still copied (a loaded host cannot make the stall wait for a wake-up)."""
    from concurrent.futures import Future

    from llmops_runtime.checkpoint import codec

    class LateExecutor:
        """Runs a submitted task only when its result is asked for (as late as possible)."""

        def submit(self, fn: Any) -> Future[Any]:
            fut: Future[Any] = Future()
            orig = fut.result

            def result(timeout: float | None = None) -> Any:
                if not fut.done():
                    fut.set_result(fn())
                return orig(timeout)

            fut.result = result  # type: ignore[method-assign]
            return fut

    copied_by_helper: list[int] = []
    monkeypatch.setattr(codec, "_COPY_POOL", LateExecutor())
    monkeypatch.setattr(codec, "_COPY_WORKERS", 3)
    real_copy = torch.Tensor.copy_
    helper_running = [False]

    def drain_marker(fn: Any) -> Any:
        def run() -> Any:
            helper_running[0] = True
            try:
                return fn()
            finally:
                helper_running[0] = False
        return run

    submit = LateExecutor.submit
    monkeypatch.setattr(LateExecutor, "submit", lambda self, fn: submit(self, drain_marker(fn)))

    def counting_copy(self: torch.Tensor, src: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
        if helper_running[0]:
            copied_by_helper.append(1)
        return real_copy(self, src, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "copy_", counting_copy)
    big = torch.randn(4 * codec.COPY_SLICE // 4 + 5)
    snap = snapshot({"big": big}, BufferPool())
    assert torch.equal(snap.tensors["big"], big)
    assert copied_by_helper == []
