"""Capture and restore every process-wide random number generator.

A resumed run reproduces the uninterrupted one bitwise only if each generator continues
from exactly where it stopped: Python's ``random`` (user code, some augmentation
libraries), numpy's legacy global generator, torch's CPU generator (dropout, ``randperm``)
and every CUDA device's generator. Data-loader worker generators are not process-wide:
they live in the dataset and travel with the loader state (see ``llmops_runtime.data``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    """A snapshot of all process-wide generator states (plain values, tensors, arrays)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=True),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Put every generator back where :func:`capture` found it."""
    python = state["python"]
    # (version, tuple of 625 words, gauss_next): the middle part must be a tuple again.
    random.setstate((python[0], tuple(int(w) for w in python[1]), python[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.as_tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def seed_all(seed: int) -> None:
    """Seed every process-wide generator from one integer."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
