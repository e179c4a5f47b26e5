"""Issue 15 on the sandbox: a TrainingJob SIGKILLed at random steps ends bitwise where the
same job left alone ends.

Two copies of the sample TrainingJob (2 nodes x 2 processes, gloo, checkpoints every 5
steps to the sandbox's S3) run side by side under the real operator: one is left alone,
the other loses every process of worker pod w1 to SIGKILL 2-3 times at seeded random steps,
one of them while a checkpoint persist is in flight (the test-only entry
``tests/runtime/drill_train.py`` holds rank 0's manifest write until the test has killed the gang). The
operator restarts the gang each time from the last committed checkpoint.

Compared bitwise: every rank's per-step loss and sample ids (the trainer's ``--log-file``;
latest attempt wins for redone steps) and every rank's final state in the final committed
checkpoint (weights, optimizer, LR scheduler, loader position, RNG streams). ``-s`` prints
the recovery figures: kill to the first step of the next attempt over the job's own cold
start (apply to first step), and steps lost per kill. The sandbox comes from a fixture
parametrized over ``CLUSTERS`` (emulated API server, and the real control plane in
``../shared/kube`` where present). ``LLMOPS_TEST_DRILL_SEEDS=3,4`` replays other seeds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import yaml
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox
from llmops.sandbox.testing import CLUSTERS, eventually, sandbox_control_plane

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))
from llmops_runtime.checkpoint import open_store
from llmops_runtime.checkpoint.compare import final_state
from resume_drill import Kill, Recovery, divergence, figures, plan
from runtime_harness import read_timeline

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "trainingjob-tiny-cpu.yaml"
DRILL_TRAIN = ROOT / "tests" / "runtime" / "drill_train.py"
STEPS, EVERY, WORLD = 40, 5, 4
HOLD_SECONDS = 4.0  # the reference job's hold (timing only: it never changes numbers)
SEEDS = [int(s) for s in os.environ.get("LLMOPS_TEST_DRILL_SEEDS", "1").split(",")]

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module", params=CLUSTERS)
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True,
                 control_plane=sandbox_control_plane(request.param)) as sb:
        yield sb


def manifest(name: str, log: Path, hold: str) -> str:
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = name
    spec = body["spec"]
    spec["command"] = ["python", str(DRILL_TRAIN)]
    spec["totalSteps"] = STEPS
    spec["checkpoint"].update(uri=f"s3://llmops-sandbox/checkpoints/{name}", everySteps=EVERY)
    spec["failurePolicy"]["maxRestarts"] = 5
    # Hang detection off: on a loaded machine a restarted gang's first heartbeat can come later
    # than the sample's 120 s, and the drill counts restarts (only its kills may cause them).
    spec["failurePolicy"].pop("hangTimeoutSeconds", None)
    spec.setdefault("template", {})["env"] = [
        {"name": "TRAIN_STEP_DELAY", "value": "0.1"},
        {"name": "TRAIN_LOG_FILE", "value": str(log)},
        # Both jobs hold the same checkpoint: the hold changes timing, never numbers.
        {"name": "DRILL_SLOW_PERSIST", "value": hold},
    ]
    return yaml.safe_dump(body)


def entries(log: Path) -> list[dict]:
    """Rank 0's step entries, all attempts."""
    path = Path(f"{log}.rank0")
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by SIGKILL
        if "final" not in entry:
            out.append(entry)
    return out


def logged(log: Path, attempt: int) -> list[int]:
    """Steps rank 0 logged in ``attempt``."""
    return [int(e["step"]) for e in entries(log) if e["attempt"] == attempt]


class Job:
    """One TrainingJob of the drill: apply, watch its log, kill its w1 pod, read its end state."""

    def __init__(self, sb: Sandbox, kube: Kube, name: str, log: Path) -> None:
        self.sb, self.kube, self.name, self.log = sb, kube, name, log
        self.applied = 0.0
        self.release = Path(f"{log}.release")  # the held persist goes on once this file exists

    def apply(self, held: int, until_released: bool = False) -> None:
        """Rank 0 holds checkpoint ``held``'s commit: until ``release`` exists, or a few seconds."""
        self.applied = time.monotonic()
        hold = f"{held}:@{self.release}" if until_released else f"{held}:{HOLD_SECONDS}"
        body = yaml.safe_load(manifest(self.name, self.log, hold))
        body["metadata"]["namespace"] = "default"
        self.kube.apply(body)

    def get(self) -> dict:
        return self.kube.get("llmops.dev/v1alpha1", "TrainingJob", "default", self.name)

    def wait_step(self, attempt: int, step: int, timeout: float = 600) -> float:
        def reached() -> bool:
            return max(logged(self.log, attempt), default=0) >= step or self.newest_attempt() > attempt

        eventually(reached, timeout=timeout, interval=0.05)
        assert self.newest_attempt() == attempt, f"restarted without a kill: {self.why(attempt)}"
        return time.monotonic()

    def why(self, attempt: int) -> str:
        """The job's Events and the tails of attempt ``attempt``'s pod logs (what a failure says)."""
        events = [f"{e.get('reason')}: {e.get('message')}" for e in self.kube.list("v1", "Event", "default")
                  if (e.get("involvedObject") or {}).get("name") == self.name]
        logs = {pod: (self.sb.logs("default", pod) or "")[-1500:] for pod in (f"{self.name}-w0-a{attempt}", f"{self.name}-w1-a{attempt}")}
        return f"status={self.get().get('status')}\nevents={events}\nlogs={logs}"

    def newest_attempt(self) -> int:
        return max((e["attempt"] for e in entries(self.log)), default=0)

    def pointer_step(self) -> int:
        store = open_store(f"s3://llmops-sandbox/checkpoints/{self.name}")
        try:
            return int(json.loads(store.read("latest.json"))["step"])
        except Exception:  # noqa: BLE001 - no pointer yet
            return 0

    def kill_w1(self, attempt: int) -> tuple[float, int]:
        self.sb.fault("default", f"{self.name}-w1-a{attempt}", "kill")
        return time.monotonic(), max(logged(self.log, attempt))

    def succeeded(self) -> dict:
        def finished() -> dict | None:
            tj = self.get()
            conditions = {c["type"]: c["status"] for c in (tj.get("status") or {}).get("conditions", [])}
            return tj if "True" in (conditions.get("Succeeded"), conditions.get("Failed")) else None

        tj = eventually(finished, timeout=900, interval=0.5)
        assert any(c["type"] == "Succeeded" and c["status"] == "True" for c in tj["status"]["conditions"]), tj["status"]
        return tj

    def final(self) -> list:
        uid = self.get()["metadata"]["uid"]
        states = [final_state(f"s3://llmops-sandbox/checkpoints/{self.name}", uid, r, WORLD) for r in range(WORLD)]
        assert [s for s, _ in states] == [STEPS] * WORLD
        return [state for _, state in states]


def kill_drill(job: Job, kills: list[Kill]) -> tuple[float, list[Recovery]]:
    """SIGKILL w1 at each planned step of successive attempts; (cold start, recoveries)."""
    cold_start = job.wait_step(0, 1) - job.applied
    recoveries = []
    for attempt, kill in enumerate(kills):
        job.wait_step(attempt, kill.step)
        if kill.persist:
            assert job.pointer_step() < kill.step - 1, "the held checkpoint committed before the kill"
        killed_at, last = job.kill_w1(attempt)
        job.release.touch()  # the next attempt commits that step normally
        first = job.wait_step(attempt + 1, 1)  # any step of the next attempt
        resumed_from = min(logged(job.log, attempt + 1)) - 1
        recoveries.append(Recovery(first - killed_at, last - resumed_from))
    return cold_start, recoveries


@pytest.mark.parametrize("seed", SEEDS)
def test_killed_job_ends_bitwise_like_the_job_left_alone(sandbox: Sandbox, tmp_path: Path, monkeypatch, seed: int):
    for key, value in sandbox.s3_env.items():
        monkeypatch.setenv(key, value)
    kube = Kube(load_api_client(sandbox.kubeconfig))
    kills = plan(seed, STEPS, EVERY)
    held = next(k.step - 1 for k in kills if k.persist)
    ref, got = Job(sandbox, kube, f"drill{seed}-ref", tmp_path / "ref"), Job(sandbox, kube, f"drill{seed}-kill", tmp_path / "kill")
    ref.apply(held)
    got.apply(held, until_released=True)  # no machine is too slow for the kill's window
    cold_start, recoveries = kill_drill(got, kills)
    done = got.succeeded()
    ref.succeeded()
    print("\n" + figures(f"sandbox {'real' if sandbox.real else 'emulated'} seed {seed}", kills, recoveries, cold_start))
    assert done["status"]["restarts"]["total"] == len(kills), done["status"]["restarts"]
    ref_lines = [read_timeline(ref.log, r) for r in range(WORLD)]
    got_lines = [read_timeline(got.log, r) for r in range(WORLD)]
    found = divergence(ref_lines, got_lines, ref.final(), got.final(), STEPS)
    assert found == [], f"seed {seed}, kills {kills}"
