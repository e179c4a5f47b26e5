"""Bitwise state comparison (``llmops_runtime.checkpoint.compare``): what the resume drills
rely on to call two runs identical, and reading a run's final state back from its store."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from llmops_runtime.checkpoint import CheckpointManager, open_store
from llmops_runtime.checkpoint.compare import differences, final_state


def _state() -> dict:
    return {
        "objects": {"model": {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)},
                    "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]}},
        "rng": {"numpy": ("MT19937", np.arange(4, dtype=np.uint32), 2, 0, 0.0)},
        "step": 7,
    }


def test_identical_states_have_no_differences():
    assert differences(_state(), _state()) == []


@pytest.mark.parametrize(
    "change,where",
    [
        (lambda s: s["objects"]["model"]["w"].view(-1).__setitem__(0, -0.0), "objects/model/w"),  # 0.0 -> -0.0
        (lambda s: s["objects"]["model"]["w"].view(-1).__setitem__(5, 5.0000005), "objects/model/w"),  # last bit
        (lambda s: s["objects"]["model"].__setitem__("w", s["objects"]["model"]["w"].double()), "objects/model/w"),
        (lambda s: s["objects"]["optimizer"]["param_groups"][0].__setitem__("lr", math.nextafter(0.1, 1)), "param_groups/0/lr"),
        (lambda s: s["objects"]["optimizer"]["state"].pop(0), "objects/optimizer/state/0"),
        (lambda s: s["rng"]["numpy"][1].__setitem__(3, 9), "rng/numpy/1"),
        (lambda s: s.__setitem__("step", 8), "step"),
        (lambda s: s["objects"].__setitem__("scheduler", {"last_epoch": 1}), "objects/scheduler"),
    ],
)
def test_any_one_change_is_reported_where_it_is(change, where):
    changed = _state()
    change(changed)
    found = differences(_state(), changed)
    assert len(found) == 1 and where in found[0], found


def test_final_state_reads_the_newest_committed_checkpoint(tmp_path):
    with CheckpointManager(open_store(str(tmp_path)), "run-x", 0, 0, 1) as manager:
        manager.save(4, {"w": torch.zeros(2)}, blocking=True)
        manager.save(8, _state(), blocking=True)
    step, state = final_state(str(tmp_path), "run-x", 0, 1)
    assert step == 8 and differences(_state(), state) == []
