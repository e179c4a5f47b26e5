"""The Session API in one process (world size 1) against the real local checkpoint store:
config parsing, resume-point choice and hint verification, state round trip (model,
optimizer, scheduler, RNG, loader), step/time-triggered saves, the non-finite-loss exit (no
commit), SIGTERM handling (final checkpoint, TERMINATED), storage failing past its max age,
and the progress reports a session emits."""

from __future__ import annotations

import json
import os
import random
import signal
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from llmops.api.runtime_env import ExitCode
from llmops_runtime import data, progress
from llmops_runtime.checkpoint import CheckpointManager, StorageError, open_store
from llmops_runtime.session import RuntimeExit, Session, SessionConfig, choose_resume_point
from torch.utils.data import Dataset

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


@dataclass(frozen=True)
class Info:
    id: str
    step: int
    world_size: int = 2


@pytest.mark.parametrize(
    "latest,hint,expected",
    [
        (None, None, None),
        (Info("step-00000010", 10), None, "step-00000010"),
        (Info("step-00000010", 10), "step-00000010", "step-00000010"),
        (Info("step-00000012", 12), "step-00000010", "step-00000012"),  # committed after the operator looked
        (Info("step-00000010", 10), "step-00000012", ExitCode.CHECKPOINT_UNRECOVERABLE),  # store lost a commit
        (None, "step-00000010", ExitCode.CHECKPOINT_UNRECOVERABLE),
        (Info("step-00000010", 10, world_size=4), None, ExitCode.CONFIG_ERROR),
    ],
)
def test_choose_resume_point(latest, hint, expected):
    if isinstance(expected, ExitCode):
        with pytest.raises(RuntimeExit) as caught:
            choose_resume_point(latest, hint, world_size=2)
        assert caught.value.exit_code == expected
    else:
        chosen = choose_resume_point(latest, hint, world_size=2)
        assert (chosen.id if chosen else None) == expected


def test_config_from_env():
    config = SessionConfig.from_env({
        "LLMOPS_RUN_ID": "uid", "LLMOPS_ATTEMPT": "3", "LLMOPS_CHECKPOINT_URI": "s3://b/p",
        "LLMOPS_CHECKPOINT_EVERY_STEPS": "100", "LLMOPS_CHECKPOINT_EVERY_SECONDS": "600", "LLMOPS_CHECKPOINT_KEEP": "2",
        "LLMOPS_CHECKPOINT_MAX_AGE_SECONDS": "3600", "LLMOPS_RESUME_FROM": "step-00000100", "LLMOPS_TOTAL_STEPS": "0",
    })
    assert (config.run_id, config.attempt, config.every_steps, config.every_seconds, config.keep) == ("uid", 3, 100, 600, 2)
    assert (config.max_age_seconds, config.resume_from, config.total_steps, config.omit) == (3600, "step-00000100", None, frozenset())
    with pytest.raises(ValueError):
        SessionConfig.from_env({"LLMOPS_TEST_OMIT_STATE": "model"})


class Numbers(data.WorkerRandom, Dataset):
    def __init__(self) -> None:
        data.WorkerRandom.__init__(self, seed=1, rank=0)

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int) -> dict:
        return {"id": i, "x": torch.full((3,), float(i)) + torch.rand(3, generator=self.worker_rng())}


class Harness:
    """A small model + optimizer + scheduler + loader wired to a Session on a local store."""

    def __init__(self, tmp_path, attempt: int = 0, every: int = 2, **config) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        self.model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.3), torch.nn.Linear(4, 1))
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=0.01)
        self.sched = torch.optim.lr_scheduler.StepLR(self.opt, step_size=3, gamma=0.5)
        self.loader = data.make_loader(Numbers(), batch_size=4, rank=0, world_size=1, seed=2)
        self.store_root = tmp_path / "ckpt"
        self.manager = CheckpointManager(open_store(str(self.store_root)), "run", attempt, 0, 1, keep_last=10,
                                         max_age_seconds=config.pop("max_age_seconds", None))
        self.sink = progress.StreamSink(str(tmp_path / "progress.jsonl"))
        self.reporter = progress.ProgressReporter(self.sink, interval=3600)
        cfg = SessionConfig(run_id="run", attempt=attempt, checkpoint_uri=str(self.store_root), every_steps=every, **config)
        self.session = Session(cfg, manager=self.manager, reporter=self.reporter)
        self.session.register(model=self.model, optimizer=self.opt, scheduler=self.sched, dataloader=self.loader)
        self.seen: list[list[int]] = []
        self.losses: list[float] = []

    def train(self, steps: int, poison_at: int | None = None, stop_at: int | None = None) -> None:
        for batch in self.session.batches(max_steps=steps):
            out = self.model(batch["x"]).mean()
            loss = (out - 1.0) ** 2
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.sched.step()
            self.seen.append(batch["id"].tolist())
            step = self.session.step + 1
            value = float("nan") if step == poison_at else loss
            self.losses.append(float(loss.detach()))
            if step == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)  # handled: sets the flag only
            self.session.step_done(value, tokens=12)
            random.random(), np.random.rand()  # user code drawing from the global generators

    def committed_steps(self) -> list[int]:
        return sorted(info.step for info in CheckpointManager(open_store(str(self.store_root)), "run", 9, 0, 1).candidates())

    def reports(self, tmp_path) -> list[dict]:
        path = tmp_path / "progress.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sigterm_restored():
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGTERM, previous[0])
    signal.signal(signal.SIGINT, previous[1])


def test_finish_resume_and_continue_matches_an_uninterrupted_run(tmp_path):
    straight = Harness(tmp_path / "a")
    assert straight.session.resume() == 0
    straight.train(10)
    assert straight.session.finish() == 0

    first = Harness(tmp_path / "b")
    first.session.resume()
    first.train(5)
    assert first.session.finish() == 0
    assert first.committed_steps() == [2, 4, 5]  # every 2 steps + the final one

    second = Harness(tmp_path / "b", attempt=1)
    torch.manual_seed(123)  # a fresh process would start from other RNG states
    assert second.session.resume() == 5
    second.train(10)
    second.session.finish()
    assert first.seen + second.seen == straight.seen
    assert first.losses + second.losses == straight.losses
    for a, b in zip(straight.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert second.sched.state_dict() == straight.sched.state_dict()
    assert second.session.samples_consumed == 40 and second.session.tokens_consumed == 120


def test_non_finite_loss_exits_79_and_commits_nothing_new(tmp_path):
    h = Harness(tmp_path, every=1)
    h.session.resume()
    with pytest.raises(RuntimeExit) as caught:
        h.train(10, poison_at=4)
    assert caught.value.exit_code == ExitCode.NON_FINITE_LOSS and caught.value.code == 79
    assert h.committed_steps() == [1, 2, 3]
    assert "loss" not in h.reports(tmp_path)[-1]


def test_sigterm_takes_a_final_checkpoint_and_exits_81(tmp_path, sigterm_restored):
    h = Harness(tmp_path, every=100)
    h.session.install_signal_handlers()
    h.session.resume()
    with pytest.raises(RuntimeExit) as caught:
        h.train(10, stop_at=3)
    assert caught.value.exit_code == ExitCode.TERMINATED
    assert h.committed_steps() == [3]
    last = h.reports(tmp_path)[-1]
    assert last["step"] == 3 and last["checkpoint"]["step"] == 3


def test_time_triggered_checkpoints(tmp_path):
    h = Harness(tmp_path, every=0, every_seconds=1e-9)
    h.session.resume()
    h.train(3)
    h.session.finish()
    assert h.committed_steps() == [1, 2, 3]


def test_storage_failing_past_max_age_exits_80(tmp_path):
    h = Harness(tmp_path, every=1, max_age_seconds=0)

    def full_disk(op, key):
        raise StorageError(f"ENOSPC writing {key}", errno=28)

    h.manager.store.fault_hook = full_disk
    h.session.resume()
    with pytest.raises(RuntimeExit) as caught:
        h.train(10)
    assert caught.value.exit_code == ExitCode.CHECKPOINT_UNRECOVERABLE
    assert any("checkpointFailingSince" in r for r in h.reports(tmp_path))


def test_storage_errors_are_tolerated_within_max_age(tmp_path):
    h = Harness(tmp_path, every=1, max_age_seconds=3600)
    h.manager.store.fault_hook = lambda op, key: (_ for _ in ()).throw(StorageError("503 SlowDown"))
    h.session.resume()
    h.train(4)
    h.manager.store.fault_hook = None
    h.session.finish()
    assert h.committed_steps() == [4]


def test_resume_hint_without_a_store_is_a_config_error():
    session = Session(SessionConfig(resume_from="step-00000001"))
    with pytest.raises(RuntimeExit) as caught:
        session.resume()
    assert caught.value.exit_code == ExitCode.CONFIG_ERROR


def test_hint_newer_than_the_store_is_unrecoverable(tmp_path):
    h = Harness(tmp_path, resume_from="step-00000009")
    with pytest.raises(RuntimeExit) as caught:
        h.session.resume()
    assert caught.value.exit_code == ExitCode.CHECKPOINT_UNRECOVERABLE


def test_register_rejects_a_stateless_loader():
    session = Session(SessionConfig())
    with pytest.raises(TypeError, match="stateful"):
        session.register(dataloader=torch.utils.data.DataLoader(list(range(4))))
