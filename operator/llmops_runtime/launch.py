"""Pod entrypoint: start the local workers of one gang member with torchrun semantics.

``python -m llmops_runtime.launch [--] CMD ARGS...`` or ``... launch -m MODULE ARGS...``.

The operator runs one pod per node and gives each the rendezvous facts in its environment
(``llmops.api.runtime_env``). This launcher turns them into ``LLMOPS_NPROC_PER_NODE``
worker processes with the variables torchrun sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``LOCAL_WORLD_SIZE``, ``GROUP_RANK``, ``MASTER_ADDR``/``MASTER_PORT`` ...); the workers
rendezvous through torch's env:// store on the master address (static membership:
``node_rank * nproc + local_rank``).

Why not torchrun's elastic agent as a library: the agent restarts or re-rendezvouses on
its own, turns SIGTERM into an exception and then loses the workers' exit codes. Here
restarts belong to the operator (it restarts the whole gang from the last committed
checkpoint), and the pod's exit code is the operator's only reliable fact about *why* a
gang member stopped. So the launcher keeps torchrun's environment contract but owns three
things itself:

* *Signals.* SIGTERM/SIGINT are forwarded to every worker; the runtime then takes a final
  checkpoint at the next step boundary and exits ``TERMINATED``. Workers still alive after
  ``--grace`` seconds are killed.
* *Failure propagation.* The first worker that exits non-zero is the cause; the others get
  SIGTERM and, after ``--failure-grace`` seconds, SIGKILL (a dead peer would block them in
  the next collective forever).
* *Exit-code mapping* (:func:`pod_exit_code`): the cause's documented ``ExitCode`` becomes
  the pod's, a death by signal N becomes ``128 + N``, any other non-zero code
  ``USER_ERROR``.

``LLMOPS_LAUNCHER=deepspeed`` starts the workers the same way: DeepSpeed's
``init_distributed`` reads exactly these variables, so neither its SSH/pdsh runner nor its
``--no_ssh`` launcher is needed, and the workers keep this launcher's signal handling and
exit codes (DeepSpeed's launcher would sit between the pod and its workers). The engine and
its ZeRO stage are chosen inside the workers (``llmops_runtime.engines.deepspeed``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Literal

from llmops.api import runtime_env as E
from llmops.api.runtime_env import ExitCode
from pydantic import BaseModel, Field, ValidationError

from llmops_runtime.hosts import resolve_master_addr

DEFAULT_PORT = 29500


class LaunchSpec(BaseModel):
    """This pod's place in the gang, read from the operator's environment contract."""

    nnodes: int = Field(ge=1, le=4096, description="Worker pods in the gang.")
    node_rank: int = Field(ge=0, description="This pod's index, 0..nnodes-1.")
    nproc_per_node: int = Field(ge=1, le=64, description="Local worker processes (one per GPU).")
    master_addr: str = Field(min_length=1, description="Rank 0's address, after hosts-file resolution.")
    master_port: int = Field(ge=1, le=65535, description="TCP port of the c10d store on rank 0.")
    launcher: Literal["torchrun", "deepspeed"] = "torchrun"
    run_id: str = Field(default="local", description="Run id, passed on as TORCHELASTIC_RUN_ID.")

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


class ConfigError(ValueError):
    """The environment contract is incomplete or inconsistent (pod exits CONFIG_ERROR)."""


def spec_from_env(env: Mapping[str, str]) -> LaunchSpec:
    """Parse and validate the contract; the master address is resolved through the hosts file."""

    def integer(name: str, default: int | None) -> int:
        raw = env.get(name)
        if raw is None or raw == "":
            if default is None:
                raise ConfigError(f"{name} is required")
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None

    nnodes = integer(E.NNODES, 1)
    addr = env.get(E.MASTER_ADDR) or ""
    if not addr:
        if nnodes > 1:
            raise ConfigError(f"{E.MASTER_ADDR} is required when {E.NNODES} > 1")
        addr = "127.0.0.1"
    try:
        spec = LaunchSpec(
            nnodes=nnodes,
            node_rank=integer(E.NODE_RANK, 0),
            nproc_per_node=integer(E.NPROC_PER_NODE, 1),
            master_addr=resolve_master_addr(addr, env),
            master_port=integer(E.MASTER_PORT, DEFAULT_PORT),
            launcher=(env.get(E.LAUNCHER) or "torchrun"),
            run_id=env.get(E.RUN_ID) or "local",
        )
    except ValidationError as error:
        raise ConfigError(str(error)) from None
    if spec.node_rank >= spec.nnodes:
        raise ConfigError(f"{E.NODE_RANK}={spec.node_rank} is not below {E.NNODES}={spec.nnodes}")
    return spec


def worker_env(spec: LaunchSpec, local_rank: int, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of one local worker: ``base`` plus torchrun's variables (pure)."""
    rank = spec.node_rank * spec.nproc_per_node + local_rank
    env = dict(base)
    env.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(spec.world_size),
            "LOCAL_WORLD_SIZE": str(spec.nproc_per_node),
            "GROUP_RANK": str(spec.node_rank),
            "GROUP_WORLD_SIZE": str(spec.nnodes),
            "ROLE_RANK": str(rank),
            "ROLE_WORLD_SIZE": str(spec.world_size),
            "ROLE_NAME": "default",
            "MASTER_ADDR": spec.master_addr,
            "MASTER_PORT": str(spec.master_port),
            "TORCHELASTIC_RUN_ID": spec.run_id,
            "TORCHELASTIC_RESTART_COUNT": "0",
            "TORCHELASTIC_MAX_RESTARTS": "0",
        }
    )
    # torchrun's rule: several workers on one node must not each spawn one thread per core.
    if spec.nproc_per_node > 1 and "OMP_NUM_THREADS" not in base:
        env["OMP_NUM_THREADS"] = "1"
    return env


def user_command(argv: Sequence[str], python: str = sys.executable) -> list[str]:
    """``-m mod args`` / ``script.py args`` / ``binary args`` -> an argv to exec (pure)."""
    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise ConfigError("no command to run")
    if args[0] == "-m":
        if len(args) < 2:
            raise ConfigError("-m needs a module name")
        return [python, "-u", "-m", *args[1:]]
    if args[0].endswith(".py"):
        return [python, "-u", *args]
    return args


def _documented(code: int) -> bool:
    return code in ExitCode._value2member_map_


def pod_exit_code(first_failure: int | None, codes: Sequence[int], terminated: bool) -> int:
    """The pod's exit code from its workers' (pure).

    ``first_failure``: return code of the first worker that exited non-zero on its own (before
    the launcher stopped anyone), ``None`` if none did. ``codes``: every worker's final return
    code (negative = killed by that signal, as ``subprocess`` reports). ``terminated``: the
    launcher itself received SIGTERM/SIGINT.
    """

    def one(code: int) -> int:
        if code < 0:
            return 128 + (-code)
        return code if _documented(code) else int(ExitCode.USER_ERROR)

    if first_failure is not None and first_failure != 0:
        return one(first_failure)
    if terminated:
        if all(code in (0, ExitCode.TERMINATED) for code in codes):
            return int(ExitCode.TERMINATED) if any(code == ExitCode.TERMINATED for code in codes) else 0
        # Some worker did not stop cleanly (default SIGTERM handler, or killed at the grace limit).
        worst = [code for code in codes if code not in (0, ExitCode.TERMINATED)]
        return one(worst[0])
    failing = [code for code in codes if code != 0]
    return one(failing[0]) if failing else 0


class _Gang:
    """The local worker processes and the rules for stopping them."""

    def __init__(self, commands: list[tuple[list[str], dict[str, str]]]) -> None:
        self.procs = [subprocess.Popen(cmd, env=env) for cmd, env in commands]
        self.terminated = False
        self.first_failure: int | None = None
        self._stop_deadline: float | None = None

    def signal_all(self, sig: int) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)

    def on_signal(self, sig: int, grace: float) -> None:
        self.terminated = True
        self.signal_all(sig)
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + grace

    def wait(self, failure_grace: float, poll: float = 0.05) -> list[int]:
        while True:
            codes = [proc.poll() for proc in self.procs]
            if all(code is not None for code in codes):
                return [int(code) for code in codes]  # type: ignore[arg-type]
            if self.first_failure is None and not self.terminated:
                failed = [code for code in codes if code not in (None, 0)]
                if failed:
                    self.first_failure = failed[0]
                    self.signal_all(signal.SIGTERM)
                    self._stop_deadline = time.monotonic() + failure_grace
            if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
                self.signal_all(signal.SIGKILL)
                self._stop_deadline = float("inf")
            time.sleep(poll)


def run(commands: list[tuple[list[str], dict[str, str]]], grace: float, failure_grace: float) -> int:
    """Start the workers, forward SIGTERM/SIGINT, wait, and return the pod exit code."""
    gang = _Gang(commands)
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, lambda signum, _frame: gang.on_signal(signum, grace))
    try:
        codes = gang.wait(failure_grace)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return pod_exit_code(gang.first_failure, codes, gang.terminated)


class LaunchArgs(BaseModel):
    grace: float = Field(default=60.0, ge=0, description="Seconds workers get after SIGTERM before SIGKILL.")
    failure_grace: float = Field(default=5.0, ge=0, description="Seconds surviving workers get after a peer failed.")
    command: list[str] = Field(default_factory=list, description="CMD ARGS... or -m MODULE ARGS...")


def parse_args(argv: Sequence[str]) -> LaunchArgs:
    """Launcher options first (``--grace S``, ``--failure-grace S``), then the command.

    Hand-parsed because the command itself may start with ``-m`` and carry its own options,
    which argparse would try to interpret.
    """
    args = list(argv)
    values: dict[str, float] = {}
    while args and args[0].startswith("--") and args[0] != "--":
        flag, _, inline = args.pop(0).partition("=")
        key = {"--grace": "grace", "--failure-grace": "failure_grace"}.get(flag)
        if key is None:
            raise ConfigError(f"unknown launcher option {flag}")
        raw = inline or (args.pop(0) if args else "")
        try:
            values[key] = float(raw)
        except ValueError:
            raise ConfigError(f"{flag} needs a number of seconds, got {raw!r}") from None
    if args and args[0] == "--":
        args = args[1:]
    return LaunchArgs(command=args, **values)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
        spec = spec_from_env(os.environ)
        cmd = user_command(args.command)
        commands = [(cmd, worker_env(spec, local, os.environ)) for local in range(spec.nproc_per_node)]
    except ConfigError as error:
        print(f"llmops launch: configuration error: {error}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)
    try:
        return run(commands, args.grace, args.failure_grace)
    except FileNotFoundError as error:
        print(f"llmops launch: {error}", file=sys.stderr)
        return int(ExitCode.CONFIG_ERROR)


if __name__ == "__main__":
    sys.exit(main())
