"""Bitwise comparison of training states, and the final state of a run as its store holds it.

Exact resume is a claim about *all* of a rank's state, not only its loss: weights,
optimizer moments and step counts, the LR scheduler, the data-loader position, every RNG.
The final committed checkpoint of a run is that state, written without pickle (safetensors
+ JSON), so two runs can be compared by loading their final checkpoints and walking both
trees together. Tensors and arrays are equal only when dtype, shape and every byte agree
(``-0.0 != 0.0`` and NaN payloads count), floats only when their bits agree.

``python -m llmops_runtime.checkpoint.compare URI_A RUN_A URI_B RUN_B WORLD_SIZE`` prints the
differences of every rank's final state and exits 1 when there are any.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from .manager import CheckpointManager
from .store import open_store


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Paths (``objects/optimizer/state/3/exp_avg``) where ``a`` and ``b`` differ bitwise."""
    where = path or "<root>"
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return [] if _same_tensor(a, b) else [f"{where}: tensors differ"]
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        same = isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        return [] if same and a.tobytes() == b.tobytes() else [f"{where}: arrays differ"]
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = [f"{path}/{k}: only in one" for k in sorted(set(a) ^ set(b), key=str)]
        for key in sorted(set(a) & set(b), key=str):
            out += differences(a[key], b[key], f"{path}/{key}" if path else str(key))
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        if len(a) != len(b):
            return [f"{where}: lengths {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{path}/{i}")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if struct.pack("<d", a) == struct.pack("<d", b) else [f"{where}: {a!r} != {b!r}"]
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r} != {b!r}"]


def _same_tensor(a: Any, b: Any) -> bool:
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    x, y = a.detach().cpu().contiguous().reshape(-1), b.detach().cpu().contiguous().reshape(-1)
    return bool(torch.equal(x.view(torch.uint8), y.view(torch.uint8))) if x.numel() else True


def final_state(uri: str, run_id: str, rank: int, world_size: int) -> tuple[int, dict[str, Any]]:
    """(step, state) of ``rank`` in the newest committed checkpoint of ``run_id`` at ``uri``."""
    manager = CheckpointManager(open_store(uri), run_id, 0, rank, world_size)
    try:
        info = manager.latest(deep=True)
        if info is None:
            raise LookupError(f"{uri}: no committed checkpoint of run {run_id}")
        return info.step, manager.load(info, rank)
    finally:
        manager.close()


def main(argv: list[str]) -> int:
    uri_a, run_a, uri_b, run_b, world = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    found = False
    for rank in range(world):
        (step_a, a), (step_b, b) = final_state(uri_a, run_a, rank, world), final_state(uri_b, run_b, rank, world)
        for line in ([f"steps {step_a} != {step_b}"] if step_a != step_b else []) + differences(a, b):
            print(f"rank {rank}: {line}")
            found = True
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
