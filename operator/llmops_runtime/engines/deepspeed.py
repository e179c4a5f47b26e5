"""DeepSpeed ZeRO as a training engine, checkpointed through the project's store.

A TrainingJob with ``launcher: deepspeed`` starts its workers exactly like a torchrun job
(``llmops_runtime.launch``: no SSH, no DeepSpeed launcher; rank, world size and master
address come from the operator) and gets ``LLMOPS_DEEPSPEED_ZERO_STAGE``. The training code
wraps its model, optimizer and LR scheduler with :func:`initialize` and registers the engine
with the session (``session.register(engine=engine, ...)``).

Checkpoints. DeepSpeed's ``save_checkpoint`` writes torch pickles; the project's store takes
only safetensors + JSON. :class:`EngineState` is the bridge: it turns one rank's ZeRO
optimizer ``state_dict`` into a portable tree and back.

* What a rank stores is what it owns: its fp32 master partition of every parameter group and
  the base optimizer's state over that partition (Adam moments, step), plus the loss scaler's
  numbers and the engine's counters. For ZeRO-3 the fp32 partitions *are* the parameter
  shards. Rank 0 of ZeRO-1/2 also stores the full module weights (identical on every rank),
  so a checkpoint can be exported without DeepSpeed.
* Restoring goes through DeepSpeed's own non-elastic load path, which reads only this rank's
  entry (``state_dict_list[dp_rank]``); :class:`_OnlyRank` makes any other access fail loudly
  instead of silently merging copies. The bit16/module weights are then rebuilt from the
  restored fp32 partitions the way DeepSpeed's step does (ZeRO-1/2 ``update_lp_params``:
  copy + all-gather; ZeRO-3's load copies into its own shards), so they are bitwise what the
  uninterrupted run holds.
* Resharding (another world size) is refused by the session before this code runs: the
  partitions are per rank.

Why a custom CPU accelerator: DeepSpeed's CPU communication backend JIT-compiles a
shared-memory all-reduce op on first use. That op serves only inference all-reduce with every
rank on one host, yet its build takes minutes on a small CPU and holds a file lock that a
SIGKILL leaves behind, after which every start waits on the lock forever; for a runtime whose
job is to survive SIGKILL that is not acceptable, so the CPU accelerator here does not offer
the op (gloo does the collectives). GPU accelerators are DeepSpeed's own, untouched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from llmops.api import runtime_env as E
from llmops.api.runtime_env import ExitCode

STAGES = (1, 2, 3)
_SCALER_KEY = "loss_scaler"
_SLICES_KEY = "param_slice_mappings"


def zero_stage_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """The ZeRO stage the operator asked for; None when the job does not run DeepSpeed."""
    env = os.environ if env is None else env
    if env.get(E.LAUNCHER) != "deepspeed":
        return None
    raw = env.get(E.DEEPSPEED_ZERO_STAGE) or "2"
    if raw not in {str(s) for s in STAGES}:
        # Admission keeps bad values out; a hand-made pod still exits CONFIG_ERROR, not a retry.
        from llmops_runtime.session import RuntimeExit

        raise RuntimeExit(ExitCode.CONFIG_ERROR, f"{E.DEEPSPEED_ZERO_STAGE}={raw!r} is not one of {STAGES}")
    return int(raw)


def config(stage: int, micro_batch: int, *, gradient_clipping: float = 0.0, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A DeepSpeed config for ``stage`` with one micro-batch per optimizer step (pure)."""
    if stage not in STAGES:
        raise ValueError(f"ZeRO stage {stage} is not one of {STAGES}")
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": gradient_clipping,
        "zero_optimization": {"stage": stage},
        # The client optimizer is a torch one (AdamW); ZeRO partitions it like its own.
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }
    cfg.update(extra or {})
    return cfg


def _install_cpu_accelerator() -> None:
    """On a machine without CUDA: DeepSpeed's CPU accelerator minus the shared-memory op."""
    if torch.cuda.is_available():
        return
    from deepspeed.accelerator import set_accelerator
    from deepspeed.accelerator.cpu_accelerator import CPU_Accelerator

    class TrainingCPUAccelerator(CPU_Accelerator):
        def create_op_builder(self, op_name: str) -> Any:
            if op_name == "ShareMemCommBuilder":  # see the module docstring
                return None
            return super().create_op_builder(op_name)

    set_accelerator(TrainingCPUAccelerator())


def initialize(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, *, stage: int,
               micro_batch: int, gradient_clipping: float = 0.0) -> Any:
    """Join DeepSpeed to the process group the session opened and build the ZeRO engine."""
    _install_cpu_accelerator()
    import deepspeed

    backend = "nccl" if torch.cuda.is_available() else "gloo"
    deepspeed.init_distributed(dist_backend=backend)  # reuses torch.distributed when already up
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler,
        config=config(stage, micro_batch, gradient_clipping=gradient_clipping),
    )
    return engine


class _OnlyRank(Sequence):
    """A ``state_dict_list`` holding only this rank's entry: DeepSpeed's rigid load path reads
    just that one; any other index means a code path that would merge ranks, refused loudly."""

    def __init__(self, state: dict[str, Any], rank: int, size: int) -> None:
        self._state, self._rank, self._size = state, rank, size

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: Any) -> Any:
        if index != self._rank:
            raise RuntimeError(f"DeepSpeed asked for rank {index}'s optimizer state; only rank {self._rank}'s is loaded")
        return self._state


def _scaler_numbers(scaler: Any) -> dict[str, Any]:
    """The loss scaler's plain state (scale, overflow counters, hysteresis...)."""
    keep = (bool, int, float, str, type(None), torch.dtype, torch.Tensor)
    return {k: v for k, v in vars(scaler).items() if isinstance(v, keep)}


class EngineState:
    """``state_dict``/``load_state_dict`` of a DeepSpeed engine, portable (see the module essay)."""

    COUNTERS = ("global_steps", "global_samples", "skipped_steps", "micro_steps")

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    @property
    def stage(self) -> int:
        return int(self.engine.zero_optimization_stage())

    def state_dict(self) -> dict[str, Any]:
        engine = self.engine
        optimizer = dict(engine.optimizer.state_dict())
        optimizer[_SCALER_KEY] = _scaler_numbers(optimizer[_SCALER_KEY])
        if _SLICES_KEY in optimizer:  # name -> fragment_address(numel, start), for exporters
            optimizer[_SLICES_KEY] = [{name: [a.numel, a.start] for name, a in group.items()} for group in optimizer[_SLICES_KEY]]
        state: dict[str, Any] = {
            "stage": self.stage,
            "dp_world_size": int(engine.dp_world_size),
            "counters": {name: int(getattr(engine, name)) for name in self.COUNTERS},
            "optimizer": optimizer,
        }
        if self.stage < 3 and engine.global_rank == 0:
            state["module"] = engine.module.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        engine = self.engine
        if int(state["stage"]) != self.stage or int(state["dp_world_size"]) != int(engine.dp_world_size):
            raise ValueError(
                f"checkpoint is ZeRO-{state['stage']} over {state['dp_world_size']} ranks; "
                f"this engine is ZeRO-{self.stage} over {engine.dp_world_size}"
            )
        optimizer = dict(state["optimizer"])
        scaler = engine.optimizer.loss_scaler
        for key, value in optimizer[_SCALER_KEY].items():
            setattr(scaler, key, value)
        optimizer[_SCALER_KEY] = scaler
        if _SLICES_KEY in optimizer:
            from deepspeed.utils import fragment_address

            optimizer[_SLICES_KEY] = [{n: fragment_address(numel=a[0], start=a[1]) for n, a in g.items()} for g in optimizer[_SLICES_KEY]]
        from deepspeed import comm

        rank = comm.get_rank(group=engine.optimizer.dp_process_group)
        engine.optimizer.load_state_dict(
            _OnlyRank(optimizer, rank, int(engine.dp_world_size)), load_optimizer_states=True, load_from_fp32_weights=True
        )
        if self.stage < 3:
            engine.optimizer.update_lp_params()  # module weights <- fp32 partitions (copy + all-gather)
        for name, value in state["counters"].items():
            setattr(engine, name, int(value))


def _digest_tree(digest: Any, value: Any, path: str) -> None:
    if isinstance(value, torch.Tensor):
        digest.update(path.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, Mapping):
        for key in sorted(value, key=str):
            _digest_tree(digest, value[key], f"{path}/{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _digest_tree(digest, item, f"{path}/{i}")
    else:
        digest.update(f"{path}={value!r}".encode())


def optimizer_digest(engine: Any) -> str:
    """sha256 of this rank's optimizer partition state (fp32 masters, moments, steps)."""
    digest = hashlib.sha256()
    state = EngineState(engine).state_dict()
    _digest_tree(digest, {"optimizer": state["optimizer"], "counters": state["counters"]}, "")
    return digest.hexdigest()


def full_weights(engine: Any) -> dict[str, torch.Tensor]:
    """The whole module's weights on every rank (ZeRO-3 gathers its shards; a collective)."""
    if int(engine.zero_optimization_stage()) < 3:
        return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    import deepspeed

    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
