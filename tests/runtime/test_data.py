"""Data-loader position: the resumable distributed sampler's partition and order, the
per-worker augmentation RNG, and exact mid-epoch / epoch-boundary resume of the stateful
loader (0 and 2 workers) after the state went through the checkpoint codec (no pickle)."""

from __future__ import annotations

import json

import pytest
import torch
from llmops_runtime import data
from llmops_runtime.checkpoint import codec
from torch.utils.data import Dataset

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


@pytest.mark.parametrize("n,world", [(10, 1), (10, 3), (64, 2), (7, 7)])
def test_sampler_partitions_each_epoch(n, world):
    samplers = [data.ResumableDistributedSampler(n, world, r, seed=5) for r in range(world)]
    for epoch in (0, 1):
        shares = [s.indices(epoch) for s in samplers]
        flat = [i for share in shares for i in share]
        assert len(set(flat)) == len(flat) == (n // world) * world  # disjoint, equal, drop_last
        assert all(len(share) == n // world for share in shares)
    assert samplers[0].indices(0) != samplers[0].indices(1) or n // world < 2  # reshuffled per epoch


def test_sampler_order_ignores_the_global_rng():
    torch.manual_seed(1)
    a = data.ResumableDistributedSampler(50, 2, 1, seed=9).indices(3)
    torch.manual_seed(2)
    torch.rand(100)
    assert data.ResumableDistributedSampler(50, 2, 1, seed=9).indices(3) == a


def test_sampler_resumes_mid_epoch():
    sampler = data.ResumableDistributedSampler(20, 2, 0, seed=1)
    sampler.set_epoch(4)
    it = iter(sampler)
    head = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(sampler.state_dict()))
    fresh = data.ResumableDistributedSampler(20, 2, 0, seed=1)
    fresh.load_state_dict(state)
    assert head + list(fresh) == sampler.indices(4)


class Augmented(data.WorkerRandom, Dataset):
    def __init__(self, n: int = 24) -> None:
        data.WorkerRandom.__init__(self, seed=3, rank=0)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"id": index, "noise": torch.rand(3, generator=self.worker_rng())}


def _consume(loader, epochs: int, stop: int | None = None):
    sampler = data.sampler_of(loader)
    out = []
    while sampler.epoch < epochs:
        for batch in loader:
            out.append((batch["id"].tolist(), batch["noise"].numpy().tobytes()))
            if stop is not None and len(out) == stop:
                return out, data.loader_state(loader)
        sampler.set_epoch(sampler.epoch + 1)
    return out, None


def _loader(workers: int):
    return data.make_loader(Augmented(), batch_size=2, rank=0, world_size=1, seed=11, num_workers=workers)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("stop", [1, 5, 12, 13])  # 12 batches per epoch: 12 = on the boundary
def test_loader_resume_is_exact_through_the_codec(workers, stop):
    full, _ = _consume(_loader(workers), epochs=2)
    head, state = _consume(_loader(workers), epochs=2, stop=stop)
    restored = _roundtrip(state)
    resumed = _loader(workers)
    resumed.load_state_dict(restored)
    tail, _ = _consume(resumed, epochs=2)
    assert head + tail == full


def _roundtrip(state):
    """Encode with the engine's codec and decode again, as a checkpoint save + load would."""
    snap = codec.snapshot(state)
    raw = b"".join(bytes(chunk) for chunk in codec.iter_safetensors(snap.tensors))
    return codec.restore(snap.skeleton, codec.parse_safetensors(bytearray(raw)))


class GlobalNoise(Dataset):
    """The common idiom: augmentation from the worker's process-wide RNG (seeded per epoch)."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> dict:
        return {"id": index, "noise": torch.rand(3)}


@pytest.mark.parametrize("stop", [14, 24])  # in epoch 1 (the fresh generator is right for epoch 0), at its end
def test_epochs_after_a_resume_seed_their_workers_as_before(stop):
    """The loader's generator travels in its state: worker seeds of later epochs match (issue 15)."""

    def make():
        return data.make_loader(GlobalNoise(), batch_size=2, rank=0, world_size=1, seed=11, num_workers=2)

    full, _ = _consume(make(), epochs=3)
    head, state = _consume(make(), epochs=3, stop=stop)
    resumed = make()
    resumed.load_state_dict(_roundtrip(state))
    tail, _ = _consume(resumed, epochs=3)
    assert len(head + tail) == len(full) == 36
    assert (head + tail)[24:] == full[24:]  # the whole epoch after the resumed one


def test_augmentation_differs_per_worker_but_repeats_per_run():
    a, _ = _consume(_loader(2), epochs=1)
    b, _ = _consume(_loader(2), epochs=1)
    assert a == b
    noises = {noise for _, noise in a}
    assert len(noises) == len(a)  # no two batches drew the same numbers


def test_loader_state_omitting_position_restarts_the_epoch():
    full, _ = _consume(_loader(0), epochs=1)
    head, _ = _consume(_loader(0), epochs=1, stop=4)
    tail, _ = _consume(_loader(0), epochs=1)  # no state loaded: what a resume without it does
    assert head + tail != full and tail == full
