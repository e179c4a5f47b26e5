"""The public API for training code: bookkeeping without taking over the loop.

::

    import llmops_runtime as rt

    s = rt.Session.from_env()                  # reads the contract, joins the process group
    s.register(model=m, optimizer=o, scheduler=sch, dataloader=loader)
    start = s.resume()                         # 0, or the step of the newest committed checkpoint
    for batch in s.batches(max_steps=1000):    # the registered loader, across epochs, resumable
        loss = train_step(batch)
        s.step_done(loss, tokens=n_tokens)     # checkpoint / progress / NaN / SIGTERM handling
    raise SystemExit(s.finish())               # final checkpoint, then exit code 0

What a step boundary does (``step_done``), and why in this order:

1. *One agreement collective.* Every rank contributes ``[loss not finite, SIGTERM seen,
   checkpoint time due (rank 0's clock), tokens, samples]`` to a single all-reduce (sum).
   Ranks must agree: a NaN on one rank has already poisoned every rank's weights through the
   gradient all-reduce, a SIGTERM may reach ranks at different steps, and time-based saves
   would otherwise be decided by clocks that differ. One small collective per step is the
   price of never deadlocking in a half-taken checkpoint.
2. *Non-finite loss:* exit ``NON_FINITE_LOSS`` (79) on every rank without saving. The weights
   after this step are not trustworthy; the operator resumes from the last committed
   checkpoint (taken at a step whose loss was finite on every rank) or fails.
3. *SIGTERM:* take a final checkpoint (blocking) unless this step is already saved, then
   exit ``TERMINATED`` (81), well inside the pod's grace period because it happens at the
   first step boundary after the signal.
4. *Due checkpoint* (every N steps and/or every S seconds): snapshot and hand it to the
   checkpoint engine, which persists it in the background.

Background staging (opt-in: ``session.background_staging = True``): the registered
optimizer's parameters and state (the bulk of a checkpoint) change only inside
``optimizer.step()``. The session can therefore let the engine copy them after
``step_done`` returned, while the next forward/backward runs, and
registers a step pre-hook on the optimizer that waits for that copy
(``CheckpointManager.wait_staged``) before the step updates anything. Everything else
(buffers such as batch-norm statistics, which a forward pass updates, RNG, positions) is
copied before ``step_done`` returns. Code that updates parameters in place outside
``optimizer.step()`` (an EMA, weight surgery, ``p.data`` writes) must call
:meth:`Session.wait_staged` first, or leave background staging off; a save whose deferred tensors changed before their copy
ended fails (``TornSnapshot``) rather than commit a torn state, as far as the tensors'
version counters can tell (writes through ``.data`` bypass them). It is off by default: on
a CPU host the background copy competes with the forward/backward for the same cores, and
with 4 ranks on 2 cores the step that contained a save ran 2.40x an idle step against
1.68x with the copy inside ``save()`` (bench/checkpoint.py).

Checkpoint content, per rank: model, optimizer, scheduler and grad-scaler ``state_dict``s,
the step and consumed samples/tokens, every process-wide RNG (``llmops_runtime.rng``) and the
data-loader position (``llmops_runtime.data``: sampler epoch/offset, per-worker state and
per-worker augmentation RNG). The engine writes it without pickle.

Resume: the operator passes ``LLMOPS_RESUME_FROM``, the checkpoint it saw committed. That is
a hint; the store's pointer and manifest are the truth. The runtime resumes from the store's
newest committed checkpoint of this run; the hint only guards against a store that lost
data: if the hint names a step newer than anything the store can prove, the pod exits
``CHECKPOINT_UNRECOVERABLE`` instead of silently training from an older point. All ranks
must agree on the checkpoint (checked with a collective).
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from llmops.api import runtime_env as E
from llmops.api.checkpoint import Checkpoint
from llmops.api.conditions import parse_time
from llmops.api.progress import CommittedCheckpoint, FinetuneReport
from llmops.api.runtime_env import ExitCode
from pydantic import BaseModel, Field

from llmops_runtime import data as rdata
from llmops_runtime import localenv as L
from llmops_runtime import progress as rprogress
from llmops_runtime import rng as rrng

KEEP_LAST: int = Checkpoint.model_fields["keep_last"].default  # spec.checkpoint.keepLast's default, declared once

log = logging.getLogger("llmops_runtime.session")

#: Test-only switch: comma-separated parts of the state NOT to save/restore ("loader", "rng").
#: It exists to prove that the exactness tests fail without those parts; the ``LLMOPS_``
#: prefix is reserved, so a user's TrainingJob cannot set it.
OMIT_STATE_ENV = L.TEST_OMIT_STATE
_OMITTABLE = frozenset({"loader", "rng"})


class SessionConfig(BaseModel):
    """The part of the operator's environment contract the session uses."""

    run_id: str = Field(default="local", description="Checkpoints of another run are never resumed.")
    attempt: int = Field(default=0, ge=0, description="Gang restart attempt.")
    checkpoint_uri: str | None = Field(default=None, description="Store URI; None disables checkpoints.")
    every_steps: int = Field(default=0, ge=0, description="Checkpoint every N steps (0 = never by steps).")
    every_seconds: float = Field(default=0.0, ge=0, description="Checkpoint every S seconds (0 = never by time).")
    keep: int = Field(default=KEEP_LAST, ge=1, description="Committed checkpoints retained.")
    max_age_seconds: float | None = Field(default=None, ge=0, description="Storage failures tolerated this long.")
    resume_from: str | None = Field(default=None, description="Operator's hint: the checkpoint it saw committed.")
    continue_other_runs: bool = Field(default=False, description="resumePolicy Continue: another run's checkpoints may be resumed.")
    total_steps: int | None = Field(default=None, ge=0, description="Declared total, for ETA.")
    progress_interval: float = Field(default=5.0, gt=0, description="Seconds between progress publications.")
    omit: frozenset[str] = Field(default=frozenset(), description="Test-only: state parts not saved.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SessionConfig:
        def num(name: str, kind: type, default: Any) -> Any:
            raw = env.get(name)
            return default if raw in (None, "") else kind(raw)

        omit = frozenset(p.strip() for p in env.get(OMIT_STATE_ENV, "").split(",") if p.strip())
        if not omit <= _OMITTABLE:
            raise ValueError(f"{OMIT_STATE_ENV} may name only {sorted(_OMITTABLE)}")
        return cls(
            run_id=env.get(E.RUN_ID) or "local",
            attempt=num(E.ATTEMPT, int, 0),
            checkpoint_uri=env.get(E.CHECKPOINT_URI) or None,
            every_steps=num(E.CHECKPOINT_EVERY_STEPS, int, 0),
            every_seconds=num(E.CHECKPOINT_EVERY_SECONDS, float, 0.0),
            keep=num(E.CHECKPOINT_KEEP, int, KEEP_LAST),
            max_age_seconds=num(E.CHECKPOINT_MAX_AGE_SECONDS, float, None),
            resume_from=env.get(E.RESUME_FROM) or None,
            continue_other_runs=env.get(E.RESUME_POLICY) == "Continue",
            total_steps=num(E.TOTAL_STEPS, int, None) or None,
            progress_interval=num(L.PROGRESS_INTERVAL_SECONDS, float, 5.0),
            omit=omit,
        )


class RuntimeExit(SystemExit):
    """Raised to end the process with a documented ``ExitCode``."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(int(code))
        self.exit_code = code
        self.message = message


def _step_of(checkpoint_id: str) -> int | None:
    match = re.search(r"(\d+)$", checkpoint_id)
    return int(match.group(1)) if match else None


def choose_resume_point(latest: Any | None, hint: str | None, world_size: int) -> Any | None:
    """The checkpoint to resume from (pure): the store's newest, verified against the hint.

    ``latest`` is the store's newest committed checkpoint (``CheckpointInfo`` or None).
    Raises :class:`RuntimeExit` when the hint proves the store lost a commit, or when the
    checkpoint was written by a gang of a different size (positions are per rank).
    """
    if hint:
        hinted = _step_of(hint)
        if latest is None:
            raise RuntimeExit(ExitCode.CHECKPOINT_UNRECOVERABLE, f"operator saw checkpoint {hint} committed; the store has none")
        if latest.id != hint and hinted is not None and hinted > latest.step:
            raise RuntimeExit(
                ExitCode.CHECKPOINT_UNRECOVERABLE,
                f"operator saw checkpoint {hint} committed; the store's newest is {latest.id}",
            )
    if latest is not None and latest.world_size != world_size:
        raise RuntimeExit(
            ExitCode.CONFIG_ERROR,
            f"checkpoint {latest.id} was written by {latest.world_size} ranks, this gang has {world_size}",
        )
    return latest


def _batch_len(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        for value in batch.values():
            return _batch_len(value)
    if isinstance(batch, (list, tuple)) and batch:
        return _batch_len(batch[0])
    return 0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _as_datetime(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, (int, float)):
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    if isinstance(value, str):
        return parse_time(value)
    return None


class Session:
    """One training process's view of the job: rank, state, checkpoints, progress."""

    def __init__(
        self,
        config: SessionConfig,
        *,
        rank: int = 0,
        world_size: int = 1,
        local_rank: int = 0,
        manager: Any | None = None,
        reporter: rprogress.ProgressReporter | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.config = config
        self.rank, self.world_size, self.local_rank = rank, world_size, local_rank
        self.device = device or torch.device("cpu")
        self.manager = manager
        self.reporter = reporter
        self.step = 0
        self.samples_consumed = 0
        self.tokens_consumed = 0
        self._objects: dict[str, Any] = {}
        self._loader: Any | None = None
        self._last_batch_samples = 0
        self._stop = threading.Event()
        self._saved_step: int | None = None
        self._last_save_time = time.monotonic()
        self._first_step_time: dt.datetime | None = None
        self._last_loss: float | None = None
        self._rate_window: collections.deque[tuple[float, int]] = collections.deque(maxlen=32)
        self._committed: CommittedCheckpoint | None = None
        self._finetune: FinetuneReport | None = None
        self._finished = False
        #: copy the guarded optimizers' parameters and state behind the loop (module doc; opt-in)
        self.background_staging = False
        self._guarded: list[torch.optim.Optimizer] = []
        self._hooks: list[Any] = []

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, init_distributed: bool = True) -> Session:
        """Read the contract, join the process group (gloo on CPU, nccl on GPU), open the store."""
        env = os.environ if env is None else env
        try:
            config = SessionConfig.from_env(env)
        except ValueError as error:
            _die(RuntimeExit(ExitCode.CONFIG_ERROR, f"bad runtime environment: {error}"))
        rank = int(env.get("RANK", "0"))
        world_size = int(env.get("WORLD_SIZE", "1"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device = torch.device("cuda", local_rank)
        else:
            device = torch.device("cpu")
        if init_distributed and world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://",
                                    rank=rank, world_size=world_size)
        manager = None
        if config.checkpoint_uri:
            from llmops_runtime.checkpoint import CheckpointManager, open_store

            manager = CheckpointManager(
                open_store(config.checkpoint_uri), config.run_id, config.attempt, rank, world_size,
                keep_last=config.keep, max_age_seconds=config.max_age_seconds,
                continue_other_runs=config.continue_other_runs,
            )
        reporter = None
        if rank == 0:
            reporter = rprogress.ProgressReporter(rprogress.sink_from_env(env), interval=config.progress_interval)
        session = cls(config, rank=rank, world_size=world_size, local_rank=local_rank, manager=manager,
                      reporter=reporter, device=device)
        session.install_signal_handlers()
        return session

    def install_signal_handlers(self) -> None:
        """SIGTERM (and SIGINT) only set a flag; the next step boundary acts on it."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: self._stop.set())

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    # --- registration -------------------------------------------------------------------------
    def register(self, *, model: Any = None, optimizer: Any = None, scheduler: Any = None, dataloader: Any = None,
                 scaler: Any = None, engine: Any = None, **extra: Any) -> None:
        """Objects whose ``state_dict``/``load_state_dict`` make up the checkpoint.

        ``engine``: a DeepSpeed engine; its ZeRO partitions (per rank), counters and LR
        scheduler are saved like the plain objects, through a portable adapter
        (``llmops_runtime.engines.deepspeed.EngineState``). ``extra``: any other object with
        ``state_dict``/``load_state_dict``.
        """
        if engine is not None:
            from llmops_runtime.engines.deepspeed import EngineState  # DeepSpeed jobs only

            extra = {"engine": EngineState(engine), **extra}
            scheduler = scheduler or getattr(engine, "lr_scheduler", None)
        for name, obj in {"model": model, "optimizer": optimizer, "scheduler": scheduler, "scaler": scaler, **extra}.items():
            if obj is None:
                continue
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"{name} has no state_dict/load_state_dict")
            self._objects[name] = obj
        # DeepSpeed: its optimizer is the torch one (no ZeRO) or wraps it (ZeRO: the torch
        # optimizer's parameters are the fp32 partitions, which only its step() updates)
        wrapper = getattr(engine, "optimizer", None)
        for opt in (optimizer, wrapper, getattr(wrapper, "optimizer", None)):
            if isinstance(opt, torch.optim.Optimizer) and opt not in self._guarded:
                self._guarded.append(opt)
                self._hooks.append(opt.register_step_pre_hook(self._before_optimizer_step))
        if dataloader is not None:
            if not (hasattr(dataloader, "state_dict") and hasattr(dataloader, "load_state_dict")):
                raise TypeError("dataloader must be stateful (use llmops_runtime.data.make_loader or StatefulDataLoader)")
            self._loader = dataloader

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "samples": self.samples_consumed,
            "tokens": self.tokens_consumed,
            "objects": {name: obj.state_dict() for name, obj in self._objects.items()},
        }
        if self._loader is not None and "loader" not in self.config.omit:
            state["loader"] = rdata.loader_state(self._loader)
        if "rng" not in self.config.omit:
            state["rng"] = rrng.capture()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, obj in self._objects.items():
            if name not in state["objects"]:
                raise KeyError(f"checkpoint has no state for {name!r}")
            obj.load_state_dict(state["objects"][name])
        if self._loader is not None and "loader" in state and "loader" not in self.config.omit:
            self._loader.load_state_dict(state["loader"])
        self.step = int(state["step"])
        self.samples_consumed = int(state["samples"])
        self.tokens_consumed = int(state["tokens"])
        # Last: nothing after this point may draw random numbers before training continues.
        if "rng" in state and "rng" not in self.config.omit:
            rrng.restore(state["rng"])

    # --- resume ------------------------------------------------------------------------------
    def resume(self) -> int:
        """Restore the newest committed checkpoint of this run; return the step to continue from.

        Candidates are tried newest first. Every rank must load the same one, and corruption
        may hit one rank's shard only, so each candidate is accepted only when all ranks
        agree on its step and all could load their shard (two small collectives each).
        """
        if self.manager is None:
            if self.config.resume_from:
                _die(RuntimeExit(ExitCode.CONFIG_ERROR, f"{E.RESUME_FROM} is set but {E.CHECKPOINT_URI} is not"))
            self._report(urgent=True)
            return 0
        from llmops_runtime.checkpoint import CheckpointError
        from llmops_runtime.checkpoint.manager import OwnedByAnotherRun

        try:
            candidates = [info for info in self.manager.candidates() if self.manager.verify(info)]
        except OwnedByAnotherRun as error:  # never resume, overwrite or collect someone else's run
            _die(RuntimeExit(ExitCode.CONFIG_ERROR, f"CheckpointOwnedByAnotherRun: {error}"))
        try:
            choose_resume_point(candidates[0] if candidates else None, self.config.resume_from, self.world_size)
        except RuntimeExit as error:
            _die(error)
        chosen, state = None, None
        for info in [*candidates, None]:
            mine = -1 if info is None else int(info.step)
            low, high = self._agree_min_max(mine)
            if low != high:
                _die(RuntimeExit(ExitCode.CHECKPOINT_UNRECOVERABLE, f"ranks disagree on the resume point (steps {low}..{high})"))
            if info is None:
                break
            try:
                state, loaded = self.manager.load(info, self.rank), 1
            except CheckpointError as error:
                log.warning("rank %d cannot load %s: %s", self.rank, info.id, error)
                state, loaded = None, 0
            if self._agree_min_max(loaded)[0] == 1:
                chosen = info
                break
        if chosen is not None and state is not None:
            if chosen.world_size != self.world_size:
                _die(RuntimeExit(ExitCode.CONFIG_ERROR, f"{chosen.id} was written by {chosen.world_size} ranks, not {self.world_size}"))
            self.load_state_dict(state)
            if self.step != chosen.step:
                _die(RuntimeExit(ExitCode.CHECKPOINT_UNRECOVERABLE, f"checkpoint {chosen.id} holds step {self.step}"))
            self._saved_step = self.step
            self._committed = _committed(chosen)
            log.info("rank %d resumed from %s (step %d)", self.rank, chosen.id, self.step)
        elif candidates:
            _die(RuntimeExit(ExitCode.CHECKPOINT_UNRECOVERABLE, "no committed checkpoint could be loaded by every rank"))
        self._last_save_time = time.monotonic()
        self._report(urgent=True)
        return self.step

    # --- the loop --------------------------------------------------------------------------------
    def batches(self, max_steps: int | None = None) -> Iterator[Any]:
        """Batches of the registered loader, epoch after epoch, from the restored position.

        Stops before fetching a batch once ``max_steps`` steps are done (``None``: never).
        """
        if self._loader is None:
            raise RuntimeError("register(dataloader=...) first")
        sampler = rdata.sampler_of(self._loader)
        while max_steps is None or self.step < max_steps:
            produced = False
            for batch in self._loader:
                produced = True
                self._last_batch_samples = _batch_len(batch)
                yield batch
                if max_steps is not None and self.step >= max_steps:
                    return
            if sampler is not None:
                sampler.set_epoch(sampler.epoch + 1)
            elif not produced:
                return  # a loader that yields nothing and has no epochs would spin forever

    def step_done(self, loss: Any, tokens: int = 0, samples: int | None = None) -> None:
        """Call once per optimizer step, after ``optimizer.step()``, on every rank."""
        value = float(loss.detach().float().item()) if isinstance(loss, torch.Tensor) else float(loss)
        self.step += 1
        samples = self._last_batch_samples if samples is None else samples
        now = time.monotonic()
        time_due = (
            self.rank == 0 and self.config.every_seconds > 0 and now - self._last_save_time >= self.config.every_seconds
        )
        flags = torch.tensor(
            [0.0 if math.isfinite(value) else 1.0, 1.0 if self._stop.is_set() else 0.0, 1.0 if time_due else 0.0,
             float(tokens), float(samples),
             1.0 if self.manager is not None and getattr(self.manager, "superseded", False) else 0.0],
            dtype=torch.float64,
            device=self.device,
        )
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(flags)
        nonfinite, stop, due_by_time, all_tokens, all_samples, superseded = flags.tolist()
        if nonfinite:
            self._last_loss = None
            self._report(urgent=True)
            self._shutdown(wait=True)
            _die(RuntimeExit(ExitCode.NON_FINITE_LOSS, f"non-finite loss at step {self.step} on {int(nonfinite)} rank(s); nothing saved"))
        self.tokens_consumed += int(all_tokens)
        self.samples_consumed += int(all_samples)
        self._last_loss = value
        if self._first_step_time is None:
            self._first_step_time = _utcnow()
        self._rate_window.append((now, self.tokens_consumed))
        if superseded:
            # A newer attempt of this job owns the checkpoint pointer: this gang is a zombie.
            self._shutdown(wait=False)
            _die(RuntimeExit(ExitCode.TERMINATED, "a newer attempt owns the checkpoints; stopping"))
        if stop:
            if self.manager is not None and self._saved_step != self.step:
                self._save(blocking=True)
            self._report(urgent=True)
            self._shutdown(wait=True)
            _die(RuntimeExit(ExitCode.TERMINATED, f"stopped by SIGTERM after step {self.step}"))
        by_steps = self.config.every_steps > 0 and self.step % self.config.every_steps == 0
        if self.manager is not None and (by_steps or due_by_time):
            self._save(blocking=False)
        self._report()

    def finish(self, *, keep_reporting: bool = False) -> int:
        """Final checkpoint (blocking, unless this step is saved), flush progress; returns 0.

        ``keep_reporting``: the progress reporter stays open for facts that come after the
        final checkpoint (the finetune runtime's published output); end it with
        :meth:`close_reporting`."""
        if self._finished:
            return int(ExitCode.OK)
        if self.manager is not None and self._saved_step != self.step and self.step > 0:
            self._save(blocking=True)
        self._report(urgent=True)
        self._shutdown(wait=True, keep_reporter=keep_reporting)
        self._finished = True
        return int(ExitCode.OK)

    def report_finetune(self, section: FinetuneReport, *, urgent: bool = False) -> None:
        """Set the ``finetune`` section of the progress report (rank 0 of the finetune
        runtime); every later report carries it. A no-op on ranks without a reporter."""
        self._finetune = section
        if self.reporter is not None and urgent:
            self._report(urgent=True)

    def close_reporting(self, timeout: float = 60.0) -> bool:
        """Deliver every report submitted so far (retrying for up to ``timeout`` seconds),
        then stop the reporter. True when delivered (or there is no reporter)."""
        if self.reporter is None:
            return True
        delivered = self.reporter.flush(timeout)
        self.reporter.close()
        self.reporter = None
        return delivered

    def wait_staged(self) -> float:
        """Block until the last checkpoint's background copy is complete (seconds blocked);
        called by the optimizer step pre-hook, and needed before any other in-place update
        of the optimizer's parameters or state."""
        wait = getattr(self.manager, "wait_staged", None)
        return float(wait()) if wait is not None else 0.0

    # --- internals ---------------------------------------------------------------------------
    def _before_optimizer_step(self, _optimizer: Any, _args: Any, _kwargs: Any) -> None:
        self.wait_staged()

    def _deferrable(self) -> Any | None:
        """The ``defer`` predicate of a background-staged save: memory of the guarded
        optimizers' parameters and state, which only their (hooked) ``step()`` changes."""
        if not self.background_staging or not self._guarded:
            return None
        from llmops_runtime.checkpoint import sharing_memory_with

        owned = [p for opt in self._guarded for group in opt.param_groups for p in group["params"]]
        owned += [v for opt in self._guarded for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]
        return sharing_memory_with(owned)

    def _save(self, blocking: bool) -> None:
        from llmops_runtime.checkpoint import CheckpointError

        assert self.manager is not None
        try:
            if blocking:
                self.manager.save(self.step, self.state_dict(), blocking=True)
            else:
                self.manager.save(self.step, self.state_dict(), blocking=False, defer=self._deferrable())
        except CheckpointError as error:
            # The engine raises only when storage has failed for longer than the allowed age.
            self._shutdown(wait=False)
            _die(RuntimeExit(ExitCode.CHECKPOINT_UNRECOVERABLE, f"checkpointing failed past its max age: {error}"))
        self._saved_step = self.step
        self._last_save_time = time.monotonic()

    def _agree_min_max(self, value: int) -> tuple[int, int]:
        if self.world_size <= 1 or not dist.is_initialized():
            return value, value
        both = torch.tensor([value, -value], dtype=torch.int64, device=self.device)
        dist.all_reduce(both, op=dist.ReduceOp.MAX)
        return -int(both[1]), int(both[0])

    def _tokens_per_second(self) -> float | None:
        if len(self._rate_window) < 2:
            return None
        (t0, n0), (t1, n1) = self._rate_window[0], self._rate_window[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None

    def _report(self, urgent: bool = False) -> None:
        if self.reporter is None:
            return
        committed, failing_since, error = self._committed, None, None
        if self.manager is not None:
            info = _manager_committed(self.manager)
            if info is not None:
                committed = _committed(info)
            failing_since = _as_datetime(getattr(self.manager, "failing_since", None))
            error = getattr(self.manager, "last_error", None)
            urgent = urgent or (committed is not None and committed != self._committed)
        self._committed = committed
        report = rprogress.build_report(
            attempt=self.config.attempt,
            step=self.step,
            now=_utcnow(),
            total_steps=self.config.total_steps,
            loss=self._last_loss,
            tokens_per_second=self._tokens_per_second(),
            samples_consumed=self.samples_consumed,
            first_step_time=self._first_step_time,
            checkpoint=committed,
            checkpoint_failing_since=failing_since,
            checkpoint_error=str(error) if error else None,
            finetune=self._finetune,
        )
        self.reporter.submit(report, urgent=urgent)

    def _shutdown(self, wait: bool, keep_reporter: bool = False) -> None:
        """Drain the engine (when ``wait``), publish a last report, stop the threads (the
        reporter too, unless ``keep_reporter``)."""
        if self.manager is not None:
            try:
                if wait:
                    self.manager.wait()
            except Exception as error:  # noqa: BLE001 - exiting anyway; the last commit stands
                log.warning("final checkpoint did not commit: %s", error)
            self._report(urgent=True)
            try:
                self.manager.close(wait=wait)
            except Exception as error:  # noqa: BLE001
                log.warning("checkpoint engine did not close cleanly: %s", error)
            self.manager = None
        if self.reporter is not None and not keep_reporter:
            self.reporter.close()
            self.reporter = None
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()


def _committed(info: Any) -> CommittedCheckpoint:
    moment = _as_datetime(info.time) or _utcnow()
    return CommittedCheckpoint(id=info.id, step=int(info.step), uri=str(info.uri), time=rprogress.rfc3339(moment))


def _manager_committed(manager: Any) -> Any | None:
    """The engine's newest commit of this attempt, if it tracks one (no store round trip)."""
    return getattr(manager, "last_committed", None)


def _die(error: RuntimeExit) -> None:
    print(f"llmops runtime: {error.exit_code.name}: {error.message}", file=sys.stderr, flush=True)
    raise error
