"""DeepSpeed ZeRO training resumes bitwise-exactly from the project's pickle-free checkpoints.

Each case runs the built-in trainer under ``launcher: deepspeed`` as two "pods" (two
launchers with node ranks 0 and 1, one or two workers each, gloo on CPU) with checkpoints
every two steps into a local store:

* an uninterrupted reference run;
* a run whose whole gang is SIGKILLed at a random step after a commit (node 1 first, as when
  a node is lost, then node 0, as the operator tears the gang down), then resumed by a fresh
  gang with the next attempt number.

The resumed history (latest attempt wins for redone steps) must equal the reference bitwise
on every rank: per-step loss (hex float) and sample ids, the sha256 of the final module
weights (ZeRO-3 gathers its shards) and of the rank's optimizer partition (fp32 masters,
Adam moments and steps, engine counters). The store must hold no pickle. A run that omits
the RNG state from its checkpoints must differ, which proves the comparison can fail. The
kill step is random; its seed is in the assertion messages (LLMOPS_TEST_KILL_SEED replays).

deepspeed is a pinned runtime dependency installed by ``make install``: a missing or
different deepspeed fails here, it is never skipped.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import re
from pathlib import Path

import pytest
from llmops.api.runtime_env import ExitCode
from llmops_runtime.engines import deepspeed as ds
from llmops_runtime.session import RuntimeExit
from runtime_harness import REPO, Gang, Timeline, free_port, read_timeline, start_gang

STEPS = 8
EVERY = 2
TRAIN_ARGS = ["--steps", str(STEPS), "--dataset-size", "32", "--batch-size", "4", "--aug-prob", "0.2",
              "--dropout", "0.1", "--seed", "7"]
KILL_SEED = int(os.environ.get("LLMOPS_TEST_KILL_SEED", random.SystemRandom().randrange(1 << 30)))

pytestmark = pytest.mark.timeout(600)


def test_deepspeed_is_the_pinned_runtime_dependency():
    pyproject = (REPO / "pyproject.toml").read_text()
    pinned = re.search(r'"deepspeed==([^"]+)"', pyproject)
    assert pinned, "pyproject.toml's runtime extra must pin deepspeed"
    assert importlib.metadata.version("deepspeed") == pinned.group(1), "run `make install`"


@pytest.mark.parametrize(("env", "stage"), [
    ({}, None),
    ({"LLMOPS_LAUNCHER": "torchrun", "LLMOPS_DEEPSPEED_ZERO_STAGE": "3"}, None),
    ({"LLMOPS_LAUNCHER": "deepspeed"}, 2),
    ({"LLMOPS_LAUNCHER": "deepspeed", "LLMOPS_DEEPSPEED_ZERO_STAGE": "1"}, 1),
    ({"LLMOPS_LAUNCHER": "deepspeed", "LLMOPS_DEEPSPEED_ZERO_STAGE": "3"}, 3),
])
def test_zero_stage_from_the_contract(env, stage):
    assert ds.zero_stage_from_env(env) == stage


def test_bad_zero_stage_is_a_config_error():
    with pytest.raises(RuntimeExit) as exc:
        ds.zero_stage_from_env({"LLMOPS_LAUNCHER": "deepspeed", "LLMOPS_DEEPSPEED_ZERO_STAGE": "4"})
    assert exc.value.exit_code == ExitCode.CONFIG_ERROR


def test_config_partitions_by_stage_with_one_micro_batch_per_step():
    cfg = ds.config(3, 4)
    assert cfg["zero_optimization"] == {"stage": 3}
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"]) == (4, 1)
    with pytest.raises(ValueError):
        ds.config(0, 4)


def _start(tmp: Path, stage: int, nproc: int, attempt: int, port: int, delay: float, env: dict[str, str]) -> list[Gang]:
    """Both pods of one attempt; node r logs to ``log<r>`` (rank files carry global ranks)."""
    tmp.mkdir(exist_ok=True)
    nodes = []
    for node in (0, 1):
        node_env = {"LLMOPS_NNODES": "2", "LLMOPS_NODE_RANK": str(node), "MASTER_PORT": str(port),
                    "LLMOPS_LAUNCHER": "deepspeed", "LLMOPS_DEEPSPEED_ZERO_STAGE": str(stage),
                    "LLMOPS_CHECKPOINT_EVERY_STEPS": str(EVERY), **env}
        nodes.append(start_gang(tmp, attempt=attempt, nproc=nproc, log_name=f"log{node}", env=node_env,
                                train_args=[*TRAIN_ARGS, "--step-delay", str(delay)]))
    return nodes


def _finish(tmp: Path, nodes: list[Gang], attempt: int) -> None:
    for node, gang in enumerate(nodes):
        assert gang.wait(timeout=300) == 0, (tmp / f"log{node}.a{attempt}.out").read_text()[-4000:]


def _timelines(tmp: Path, nproc: int) -> list[Timeline]:
    return [read_timeline(tmp / f"log{rank // nproc}", rank) for rank in range(2 * nproc)]


def _optimizer_digests(tmp: Path, nproc: int) -> list[str | None]:
    digests = []
    for rank in range(2 * nproc):
        finals = [json.loads(line) for line in Path(f"{tmp / f'log{rank // nproc}'}.rank{rank}").read_text().splitlines()
                  if line.startswith('{"final"')]
        digests.append(finals[-1]["optimizer"] if finals else None)
    return digests


def _reference(tmp: Path, stage: int, nproc: int) -> tuple[list[Timeline], list[str | None]]:
    _finish(tmp, _start(tmp, stage, nproc, attempt=0, port=free_port(), delay=0.0, env={}), attempt=0)
    return _timelines(tmp, nproc), _optimizer_digests(tmp, nproc)


def _interrupted(tmp: Path, stage: int, nproc: int, omit: str = "") -> tuple[list[Timeline], list[str | None], str]:
    env = {"LLMOPS_TEST_OMIT_STATE": omit} if omit else {}
    kill_at = random.Random(f"{KILL_SEED}-{stage}-{nproc}-{omit}").randint(EVERY + 1, STEPS - 2)
    first = _start(tmp, stage, nproc, attempt=0, port=free_port(), delay=0.4, env=env)
    first[0].wait_for_step(kill_at, timeout=300)
    for gang in reversed(first):  # node 1 is lost, then the operator deletes the rest of the gang
        gang.kill_pod()
    for gang in first:
        assert gang.wait(timeout=60) == -9
    stopped = first[0].last_step()
    _finish(tmp, _start(tmp, stage, nproc, attempt=1, port=free_port(), delay=0.0, env=env), attempt=1)
    where = f"kill seed {KILL_SEED}: ZeRO-{stage} 2x{nproc} SIGKILL at step {kill_at} (rank 0 logged {stopped})"
    assert 0 < stopped < STEPS, f"the kill did not interrupt the run; {where}"
    return _timelines(tmp, nproc), _optimizer_digests(tmp, nproc), where


def _assert_no_pickle(store: Path) -> None:
    # Besides data: the local store's pointer lock (an empty flock(2) file) and, after the
    # SIGKILL, a writer's unfinished temp file (".<name>.tmp-<hex>", never renamed into place).
    files = [p for p in store.rglob("*") if p.is_file() and not (p.suffix == ".lock" and p.stat().st_size == 0)]
    kinds = {Path(re.sub(r"\.tmp-[0-9a-f]+$", "", p.name)).suffix for p in files}
    assert files and kinds <= {".json", ".safetensors"}, sorted(kinds)
    for path in files:
        assert path.read_bytes()[:1] != b"\x80", f"{path} starts like a pickle"


CASES = [
    pytest.param(2, 1, id="zero2-2x1"),
    pytest.param(3, 1, id="zero3-2x1"),
    pytest.param(1, 1, id="zero1-2x1", marks=pytest.mark.slow),
    pytest.param(2, 2, id="zero2-2x2", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("stage,nproc", CASES)
def test_deepspeed_zero_resume_is_exact(tmp_path, stage, nproc):
    ref, ref_optim = _reference(tmp_path / "ref", stage, nproc)
    assert all(len(t.steps) == STEPS and t.final for t in ref) and all(ref_optim)
    got, got_optim, where = _interrupted(tmp_path / "cut", stage, nproc)
    for rank in range(2 * nproc):
        assert sorted(got[rank].steps) == list(range(1, STEPS + 1)), where
        assert got[rank].losses() == ref[rank].losses(), f"rank {rank} losses differ; {where}"
        assert got[rank].ids() == ref[rank].ids(), f"rank {rank} sample order differs; {where}"
        assert got[rank].final == ref[rank].final, f"rank {rank} final weights differ; {where}"
        assert got_optim[rank] == ref_optim[rank], f"rank {rank} optimizer partition differs; {where}"
    assert {t.steps[STEPS]["attempt"] for t in got} == {1}, where
    _assert_no_pickle(tmp_path / "cut" / "ckpt")


@pytest.mark.slow
def test_omitting_rng_state_breaks_deepspeed_exactness(tmp_path):
    """The same comparison must fail when part of the state is not checkpointed."""
    ref, _ = _reference(tmp_path / "ref", 2, 1)
    got, _, where = _interrupted(tmp_path / "cut", 2, 1, omit="rng")
    assert any(g.losses() != r.losses() for g, r in zip(got, ref, strict=True)), f"omitting the RNG state went unnoticed; {where}"
