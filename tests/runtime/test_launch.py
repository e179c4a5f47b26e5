"""The launcher: env contract parsing, hosts-file resolution, worker environments, command
construction (torchrun-style, also for DeepSpeed jobs: no SSH), exit-code mapping, and real runs of
small worker gangs (failure propagation, SIGTERM forwarding)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llmops.api.runtime_env import ExitCode
from llmops_runtime import hosts, launch

# --- hosts file ----------------------------------------------------------------------------------
HOSTS = """
# written by the sandbox node agent
10.0.0.5   job-w-0.job-svc  job-w-0
10.0.0.6   job-w-1.job-svc
bogus      ignored-name
10.0.0.7   JOB-W-0.job-svc   # duplicate: the first line wins, as in /etc/hosts
::1        ip6-host
"""


@pytest.mark.parametrize(
    "name,expected",
    [
        ("job-w-0.job-svc", "10.0.0.5"),
        ("job-w-0", "10.0.0.5"),
        ("job-w-1.job-svc.", "10.0.0.6"),
        ("ip6-host", "::1"),
        ("ignored-name", "ignored-name"),
        ("elsewhere.example", "elsewhere.example"),
    ],
)
def test_hosts_resolution(name, expected):
    assert hosts.resolve(name, hosts.parse_hosts(HOSTS.splitlines())) == expected


def test_master_addr_resolved_only_when_hosts_file_configured(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    assert hosts.resolve_master_addr("job-w-1.job-svc", {}) == "job-w-1.job-svc"
    assert hosts.resolve_master_addr("job-w-1.job-svc", {hosts.HOSTS_FILE_ENV: str(path)}) == "10.0.0.6"
    assert hosts.resolve_master_addr("job-w-1.job-svc", {hosts.HOSTS_FILE_ENV: str(tmp_path / "none")}, wait_seconds=0) == "job-w-1.job-svc"
    assert hosts.resolve_master_addr("10.1.2.3", {hosts.HOSTS_FILE_ENV: str(tmp_path / "none")}) == "10.1.2.3"  # no wait


def test_master_addr_waits_for_the_agent_to_list_rank_0(tmp_path):
    """A worker can start before its node's agent has seen rank 0's IP: the launcher waits for
    the name (as a resolver retries) instead of handing torch a name no resolver knows."""
    path = tmp_path / "hosts"
    path.write_text("10.0.0.6 job-w-1.job-svc\n")
    now, naps = [0.0], []

    def sleep(seconds):
        naps.append(seconds)
        now[0] += seconds
        if len(naps) == 3:
            path.write_text(HOSTS)  # the agent rewrites the file once w0 has an IP

    env = {hosts.HOSTS_FILE_ENV: str(path)}
    assert hosts.resolve_master_addr("job-w-0.job-svc", env, clock=lambda: now[0], sleep=sleep) == "10.0.0.5"
    assert len(naps) == 3
    assert hosts.resolve_master_addr("job-w-9.job-svc", env, wait_seconds=2, clock=lambda: now[0], sleep=sleep) == "job-w-9.job-svc"


# --- env contract ----------------------------------------------------------------------------------
GOOD = {"MASTER_ADDR": "m", "MASTER_PORT": "1234", "LLMOPS_NNODES": "2", "LLMOPS_NODE_RANK": "1",
        "LLMOPS_NPROC_PER_NODE": "4", "LLMOPS_RUN_ID": "uid"}


@pytest.mark.parametrize(
    "change,error",
    [
        ({"LLMOPS_NODE_RANK": "2"}, "not below"),
        ({"LLMOPS_NPROC_PER_NODE": "0"}, "nproc_per_node"),
        ({"MASTER_PORT": "x"}, "not an integer"),
        ({"MASTER_PORT": "70000"}, "master_port"),
        ({"MASTER_ADDR": ""}, "required"),
        ({"LLMOPS_LAUNCHER": "mpirun"}, "launcher"),
    ],
)
def test_spec_rejects_bad_env(change, error):
    with pytest.raises(launch.ConfigError, match=error):
        launch.spec_from_env({**GOOD, **change})


def test_spec_defaults_for_a_single_local_node():
    spec = launch.spec_from_env({})
    assert (spec.nnodes, spec.node_rank, spec.nproc_per_node, spec.master_addr, spec.master_port) == (1, 0, 1, "127.0.0.1", 29500)


def test_worker_env_has_torchrun_variables():
    spec = launch.spec_from_env(GOOD)
    envs = [launch.worker_env(spec, local, {"KEEP": "1"}) for local in range(4)]
    assert [e["RANK"] for e in envs] == ["4", "5", "6", "7"]
    assert {e["WORLD_SIZE"] for e in envs} == {"8"}
    assert [e["LOCAL_RANK"] for e in envs] == ["0", "1", "2", "3"]
    assert all(e["LOCAL_WORLD_SIZE"] == "4" and e["GROUP_RANK"] == "1" and e["KEEP"] == "1" for e in envs)
    assert all(e["MASTER_ADDR"] == "m" and e["MASTER_PORT"] == "1234" and e["OMP_NUM_THREADS"] == "1" for e in envs)
    assert launch.worker_env(spec, 0, {"OMP_NUM_THREADS": "3"})["OMP_NUM_THREADS"] == "3"


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["-m", "pkg.mod", "--x", "1"], [sys.executable, "-u", "-m", "pkg.mod", "--x", "1"]),
        (["--", "train.py", "-a"], [sys.executable, "-u", "train.py", "-a"]),
        (["/bin/echo", "hi"], ["/bin/echo", "hi"]),
    ],
)
def test_user_command(argv, expected):
    assert launch.user_command(argv) == expected


def test_parse_args_keeps_the_commands_own_options():
    args = launch.parse_args(["--grace", "5", "--failure-grace=1", "-m", "x", "--grace", "9"])
    assert (args.grace, args.failure_grace, args.command) == (5.0, 1.0, ["-m", "x", "--grace", "9"])
    with pytest.raises(launch.ConfigError):
        launch.parse_args(["--bogus", "1", "x"])


def test_deepspeed_workers_get_the_same_contract_without_ssh():
    """DeepSpeed jobs start their ranks through this launcher too: torchrun's variables, which
    deepspeed.init_distributed reads; no ssh/pdsh runner and no `deepspeed` CLI in between."""
    spec = launch.spec_from_env({**GOOD, "LLMOPS_LAUNCHER": "deepspeed"})
    assert spec.launcher == "deepspeed"
    env = launch.worker_env(spec, 3, {"LLMOPS_DEEPSPEED_ZERO_STAGE": "3"})
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("7", "3", "8", "m")
    assert env["LLMOPS_DEEPSPEED_ZERO_STAGE"] == "3"
    assert not hasattr(launch, "deepspeed_command")


@pytest.mark.parametrize(
    "first,codes,terminated,expected",
    [
        (None, [0, 0], False, 0),
        (79, [79, -15], False, 79),  # NaN on one rank: the pod reports it, not the peer's SIGTERM
        (78, [78, 81], False, 78),
        (3, [3, 0], False, int(ExitCode.USER_ERROR)),  # undocumented code -> user error
        (-9, [-9, -15], False, 137),  # a worker OOM-killed
        (None, [81, 81], True, 81),
        (None, [0, 81], True, 81),
        (None, [0, 0], True, 0),  # finished anyway
        (None, [81, -9], True, 137),  # one worker missed the grace period
        (None, [-15, -15], True, 143),  # user code without the runtime: default SIGTERM action
    ],
)
def test_pod_exit_code(first, codes, terminated, expected):
    assert launch.pod_exit_code(first, codes, terminated) == expected


# --- real gangs ------------------------------------------------------------------------------------
def _launcher(tmp_path: Path, script: str, nproc: int = 2, *extra: str) -> subprocess.Popen:
    path = tmp_path / "worker.py"
    path.write_text(script)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env.update({"LLMOPS_NPROC_PER_NODE": str(nproc), "MASTER_PORT": "29999", "OUT": str(tmp_path)})
    return subprocess.Popen([sys.executable, "-m", "llmops_runtime.launch", *extra, str(path)], env=env, cwd=tmp_path,
                            start_new_session=True)


def _wait_files(tmp_path: Path, pattern: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(list(tmp_path.glob(pattern))) < count:
        assert time.monotonic() < deadline, f"{pattern} x{count} not seen"
        time.sleep(0.02)


def test_worker_failure_stops_the_gang_and_sets_the_pod_code(tmp_path):
    proc = _launcher(tmp_path, """
import os, pathlib, time
rank = int(os.environ["RANK"])
pathlib.Path(os.environ["OUT"], f"up{rank}").write_text(os.environ["WORLD_SIZE"])
if rank == 1:
    time.sleep(0.3)
    raise SystemExit(79)
time.sleep(120)  # rank 0 would wait forever in a collective with a dead peer
""", 2, "--failure-grace", "1")
    assert proc.wait(60) == ExitCode.NON_FINITE_LOSS
    assert (tmp_path / "up0").read_text() == "2"


def test_sigterm_is_forwarded_to_every_worker(tmp_path):
    proc = _launcher(tmp_path, """
import os, pathlib, signal, time
rank = os.environ["RANK"]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
pathlib.Path(os.environ["OUT"], f"up{rank}").touch()
deadline = time.monotonic() + 60
while not stop and time.monotonic() < deadline:
    time.sleep(0.01)
pathlib.Path(os.environ["OUT"], f"stopped{rank}").touch()
raise SystemExit(81 if stop else 1)
""")
    _wait_files(tmp_path, "up*", 2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == ExitCode.TERMINATED
    assert {p.name for p in tmp_path.glob("stopped*")} == {"stopped0", "stopped1"}


def test_workers_ignoring_sigterm_are_killed_after_the_grace(tmp_path):
    proc = _launcher(tmp_path, """
import os, pathlib, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(os.environ["OUT"], "up" + os.environ["RANK"]).touch()
time.sleep(120)
""", 1, "--grace", "0.5")
    _wait_files(tmp_path, "up*", 1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGKILL


def test_bad_environment_exits_config_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env["LLMOPS_NNODES"] = "2"
    env.pop("MASTER_ADDR", None)
    result = subprocess.run([sys.executable, "-m", "llmops_runtime.launch", "/bin/true"], env=env, capture_output=True)
    assert result.returncode == ExitCode.CONFIG_ERROR
    assert b"MASTER_ADDR" in result.stderr


def test_master_addr_is_resolved_through_the_sandbox_hosts_file(tmp_path):
    (tmp_path / "hosts").write_text("127.0.0.1 job-w-0.job-svc\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    env.update({"LLMOPS_SANDBOX_HOSTS_FILE": str(tmp_path / "hosts"), "MASTER_ADDR": "job-w-0.job-svc",
                "MASTER_PORT": "29998"})
    code = "import os; print(os.environ['MASTER_ADDR'], os.environ['RANK'], os.environ['WORLD_SIZE'])"
    result = subprocess.run([sys.executable, "-m", "llmops_runtime.launch", "--", sys.executable, "-c", code],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.split() == ["127.0.0.1", "0", "1"]


def test_two_pods_rendezvous_statically(tmp_path):
    """Two launchers ("pods", 2 workers each) form one gloo world of 4 through MASTER_ADDR/PORT."""
    script = tmp_path / "w.py"
    script.write_text("""
import os, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="env://")
t = torch.tensor([float(dist.get_rank())])
dist.all_reduce(t)
open(os.path.join(os.environ["OUT"], f"r{dist.get_rank()}"), "w").write(f"{dist.get_world_size()} {t.item()}")
dist.destroy_process_group()
""")
    from runtime_harness import free_port

    base = {k: v for k, v in os.environ.items() if not k.startswith("LLMOPS_")}
    base.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "LLMOPS_NNODES": "2",
                 "LLMOPS_NPROC_PER_NODE": "2", "OUT": str(tmp_path), "PYTHONWARNINGS": "ignore"})
    pods = [subprocess.Popen([sys.executable, "-m", "llmops_runtime.launch", str(script)],
                             env={**base, "LLMOPS_NODE_RANK": str(node)}, start_new_session=True) for node in (1, 0)]
    try:
        assert [pod.wait(120) for pod in pods] == [0, 0]
    finally:
        for pod in pods:
            if pod.poll() is None:
                os.killpg(pod.pid, signal.SIGKILL)
    assert sorted((p.name, p.read_text()) for p in tmp_path.glob("r*")) == [(f"r{r}", "4 6.0") for r in range(4)]
