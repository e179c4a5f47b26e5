"""Data-loader position that survives kill and resume: each sample is consumed exactly once.

Why the position has three parts:

1. *Which samples, in which order.* :class:`ResumableDistributedSampler` shuffles with a
   generator seeded by ``seed + epoch`` (never by the process-wide RNG), so the order of an
   epoch is a pure function of (seed, epoch, world size, rank). Its state is just
   ``{"epoch", "yielded"}``; resuming skips the ``yielded`` indices without drawing them.
2. *Which batches were already handed out.* With loader workers, batches are produced ahead
   of time and out of the main process; torchdata's ``StatefulDataLoader`` snapshots the
   main and worker state at every step (``snapshot_every_n_steps=1``) and its
   ``state_dict()`` describes the last batch the training loop received, not the last one a
   worker produced. That is the one the checkpoint must record.
3. *The loader's own generator.* Every new iterator (one per epoch) draws the workers' base
   seed from it; the workers seed their process-wide ``torch``/``random``/``numpy`` from that
   seed, so a dataset drawing from them augments differently once it is off by one draw.
   :class:`ResumableLoader` keeps the generator as it was before the current iterator drew,
   so a resumed loader redraws the same seed and every later epoch matches the uninterrupted
   run (issue 15's drill found epochs after a resume seeding their workers differently).
4. *The augmentation RNG of each worker.* Random augmentation draws from a generator that
   lives in the dataset copy of each worker. :class:`WorkerRandom` keeps it in the dataset's
   own ``state_dict`` so ``StatefulDataLoader`` saves and restores it per worker; it is
   seeded from (seed, rank, worker id), never from a process-wide generator.

:func:`loader_state` returns the loader state. It is made of plain values (ints, strings,
booleans, None, nested dicts) plus the per-worker generator states as uint8 tensors, all of
which the checkpoint engine writes without pickle (``tests/runtime/test_data.py`` pins this).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler, get_worker_info
from torchdata.stateful_dataloader import StatefulDataLoader

#: The order of an epoch must be identical in every run, whatever the process-wide RNG did.
_SEED_MIX = 0x9E3779B1


class ResumableDistributedSampler(Sampler[int]):
    """This rank's share of a seeded per-epoch permutation, resumable mid-epoch.

    The dataset is cut to a multiple of ``num_replicas`` (``drop_last``) so that every rank
    takes the same number of steps per epoch; a gang that disagrees on the number of steps
    deadlocks in the next collective.
    """

    def __init__(self, dataset_len: int, num_replicas: int, rank: int, seed: int = 0, shuffle: bool = True) -> None:
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} not in a world of {num_replicas}")
        if dataset_len < num_replicas:
            raise ValueError(f"{dataset_len} samples cannot be split over {num_replicas} ranks")
        self.dataset_len = dataset_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.yielded = 0
        self._resume_at: int | None = None

    def __len__(self) -> int:
        return self.dataset_len // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, epoch: int) -> list[int]:
        """All indices this rank sees in ``epoch``, in order (pure)."""
        total = len(self) * self.num_replicas
        if self.shuffle:
            generator = torch.Generator().manual_seed((self.seed * _SEED_MIX + epoch) % (2**63))
            order = torch.randperm(self.dataset_len, generator=generator)[:total].tolist()
        else:
            order = list(range(total))
        return order[self.rank : total : self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        start = self._resume_at or 0
        self._resume_at = None
        self.yielded = start
        for index in self.indices(self.epoch)[start:]:
            self.yielded += 1
            yield index

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "yielded": self.yielded}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.yielded = int(state["yielded"])
        self._resume_at = self.yielded


class WorkerRandom:
    """A per-worker augmentation generator kept in the dataset's state.

    Mix into a map-style dataset and draw augmentation randomness from ``self.worker_rng()``.
    The generator is created lazily in whichever process runs ``__getitem__`` (a loader
    worker or the main process) and seeded from ``(seed, rank, worker id)``, so a given
    worker draws the same stream in every run; ``state_dict`` carries its exact state.
    """

    def __init__(self, seed: int, rank: int) -> None:
        self._aug_seed = seed
        self._aug_rank = rank
        self._aug_generator: torch.Generator | None = None
        self._aug_pending: torch.Tensor | None = None

    def worker_rng(self) -> torch.Generator:
        if self._aug_generator is None:
            info = get_worker_info()
            worker = 0 if info is None else info.id + 1  # main process and workers never share a stream
            generator = torch.Generator()
            generator.manual_seed(((self._aug_seed * 1_000_003 + self._aug_rank) * 1_009 + worker) % (2**63))
            if self._aug_pending is not None:
                generator.set_state(self._aug_pending)
                self._aug_pending = None
            self._aug_generator = generator
        return self._aug_generator

    def state_dict(self) -> dict[str, Any]:
        if self._aug_generator is not None:
            return {"generator": self._aug_generator.get_state()}
        return {"generator": self._aug_pending}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("generator")
        self._aug_generator = None
        self._aug_pending = None if saved is None else torch.as_tensor(saved, dtype=torch.uint8).clone()


#: Key of the loader generator's state inside the loader state (next to torchdata's keys).
_GENERATOR_KEY = "llmops_generator_before_iter"


class ResumableLoader(StatefulDataLoader):
    """``StatefulDataLoader`` whose state also holds its generator (point 3 of the essay)."""

    _generator_before_iter: torch.Tensor | None = None

    def _get_iterator(self) -> Any:
        # The one place a new iterator is made, right before it draws its base seed.
        if self.generator is not None:
            self._generator_before_iter = self.generator.get_state()
        return super()._get_iterator()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()  # may make the first iterator, so read the generator after
        if self._generator_before_iter is not None:
            state = {**state, _GENERATOR_KEY: self._generator_before_iter}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved = state.pop(_GENERATOR_KEY, None)
        if saved is not None and self.generator is not None:
            self.generator.set_state(torch.as_tensor(saved, dtype=torch.uint8).clone())
        super().load_state_dict(state)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    num_workers: int = 0,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> StatefulDataLoader:
    """A :class:`ResumableLoader` over this rank's share, snapshotting every step."""
    if not isinstance(dataset, Sized):
        raise TypeError("make_loader needs a map-style dataset with __len__")
    sampler = ResumableDistributedSampler(len(dataset), world_size, rank, seed=seed)
    return ResumableLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_fn,
        # Worker base seeds come from this generator, not from the process-wide RNG.
        generator=torch.Generator().manual_seed(seed * 7919 + rank),
        snapshot_every_n_steps=1,
        persistent_workers=False,
    )


def loader_state(loader: Any) -> Any:
    """The loader's position as of the last batch the training loop received."""
    return loader.state_dict()


def sampler_of(loader: Any) -> ResumableDistributedSampler | None:
    sampler = getattr(loader, "sampler", None)
    return sampler if isinstance(sampler, ResumableDistributedSampler) else None
