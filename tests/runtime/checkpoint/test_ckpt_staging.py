"""Background staging: ``save(defer=...)`` returns before the deferred tensors are copied,
``wait_staged()`` completes the copy, and what is committed is the state at ``save()``.

The copy-pool helpers are paused in most tests (``paused_helpers``), so the copy happens
exactly when the test says (in ``wait_staged``, or when it resumes the helpers) instead of
racing the test's updates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from llmops_runtime.checkpoint import CheckpointManager, codec, open_store, sharing_memory_with
from llmops_runtime.session import Session, SessionConfig


@pytest.fixture
def paused_helpers(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Stagings do not start their helpers; the returned function starts them."""
    start = codec.Staging.start
    paused: list[codec.Staging] = []
    monkeypatch.setattr(codec.Staging, "start", lambda self, helpers=None: paused.append(self))

    def resume() -> None:
        for staging in paused:
            start(staging)
        paused.clear()

    return resume


def manager(tmp_path: Any) -> CheckpointManager:
    return CheckpointManager(open_store(str(tmp_path / "store")), "run", 0, 0, 1)


def two_part_state() -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
    big = torch.randn(3 * codec.COPY_SLICE // 4 + 11)  # several copy slices
    small = torch.randn(7)
    return {"w": big, "small": small, "step": 5}, big, small


def test_save_returns_before_the_deferred_copy_and_commits_the_state_at_save(tmp_path, paused_helpers):
    state, big, small = two_part_state()
    at_save = {"w": big.clone(), "small": small.clone()}
    mgr = manager(tmp_path)
    handle = mgr.save(1, state, defer=sharing_memory_with([big]))
    assert not handle.staged() and not handle.done()  # nothing copied yet; the persist waits for it
    small.add_(1)  # not deferred: copied inside save(), so updating it now is fine
    assert mgr.wait_staged() > 0
    assert handle.staged() and handle.staging_wait_seconds > 0
    assert handle.stall_seconds >= handle.staging_wait_seconds
    big.add_(1)  # after the wait: the optimizer step
    info = handle.result()
    assert info is not None, mgr.last_error
    loaded = mgr.load(info)
    assert torch.equal(loaded["w"], at_save["w"]) and torch.equal(loaded["small"], at_save["small"])
    assert mgr.wait_staged() == 0.0  # nothing left: cheap
    mgr.close()


def test_an_update_before_the_wait_fails_the_save_instead_of_committing_it(tmp_path, paused_helpers):
    state, big, _ = two_part_state()
    mgr = manager(tmp_path)
    assert mgr.save(1, state).result() is not None  # a committed predecessor
    handle = mgr.save(2, state, defer=sharing_memory_with([big]))
    big.add_(1)  # the broken promise: updated before wait_staged
    mgr.wait_staged()
    assert handle.result() is None
    assert "updated in place while being staged" in (mgr.last_error or "")
    latest = mgr.latest()
    assert latest is not None and latest.step == 1  # the pointer never named the torn one
    mgr.close()


def test_helpers_finish_the_copy_without_a_wait(tmp_path):
    state, big, _ = two_part_state()
    at_save = big.clone()
    mgr = manager(tmp_path)
    handle = mgr.save(1, state, defer=sharing_memory_with([big]))
    info = handle.result()  # the persist waits for the helpers; nobody calls wait_staged
    assert info is not None, mgr.last_error
    assert handle.staged() and handle.staging_wait_seconds == 0.0
    assert torch.equal(mgr.load(info)["w"], at_save)
    mgr.close()


def test_sharing_memory_with_selects_views_not_copies():
    p = torch.nn.Parameter(torch.randn(4, 4))
    owned = sharing_memory_with([p])
    assert owned(p.detach()) and owned(p.detach()[1])
    assert not owned(p.detach().clone()) and not owned(torch.empty(0))


# --- through the runtime's session: the optimizer step pre-hook is the wait ---------------------


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1100, 1024)  # weight > one copy slice
        self.norm = torch.nn.BatchNorm1d(1024)  # buffers a forward pass updates: never deferred

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.lin(x))


def trained_session(tmp_path: Any) -> tuple[Session, Net, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    cfg = SessionConfig(checkpoint_uri=str(tmp_path / "store"), every_steps=1)
    session = Session(cfg, manager=CheckpointManager(open_store(cfg.checkpoint_uri), "run", 0, 0, 1))
    session.register(model=net, optimizer=opt)
    assert session.background_staging is False  # opt-in
    session.background_staging = True
    return session, net, opt


def train_step(net: Net, opt: torch.optim.Optimizer) -> torch.Tensor:
    loss = net(torch.randn(8, 1100)).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_session_waits_for_staging_in_the_optimizer_step(tmp_path, paused_helpers):
    session, net, opt = trained_session(tmp_path)
    session.step_done(train_step(net, opt))  # step 1: a save with the copy deferred
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    expected_moments = opt.state[net.lin.weight]["exp_avg"].clone()
    manager = session.manager
    assert manager is not None and manager._inflight is not None and not manager._inflight.staged()
    loss = net(torch.randn(8, 1100)).square().mean()  # the next forward/backward: may overlap the copy
    opt.zero_grad()
    loss.backward()
    opt.step()  # the pre-hook waits (and, helpers paused, copies) before AdamW touches anything
    paused_helpers()  # without that wait, the copy would start only now, after the update
    info = manager.wait()
    assert info is not None and info.step == 1, manager.last_error
    saved = manager.load(info)["objects"]
    assert all(torch.equal(saved["model"][k], v) for k, v in expected.items())
    assert torch.equal(saved["optimizer"]["state"][0]["exp_avg"], expected_moments)
    assert not torch.equal(net.lin.weight.detach(), expected["lin.weight"])  # the step did update it
    session.finish()


def test_session_defers_only_what_the_optimizer_owns(tmp_path):
    session, net, opt = trained_session(tmp_path)
    train_step(net, opt)
    owned = session._deferrable()
    assert owned is not None
    assert owned(net.state_dict()["lin.weight"]) and owned(opt.state[net.lin.weight]["exp_avg_sq"])
    assert not owned(net.state_dict()["norm.running_mean"])  # a forward pass updates it
    session.background_staging = False
    assert session._deferrable() is None
    session.finish()
