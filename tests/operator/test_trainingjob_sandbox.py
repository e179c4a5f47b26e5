"""TrainingJob end to end on the sandbox: the real operator process (Kopf over HTTP), the
emulated API server, process node agents running real torch training (gloo, 2 nodes x 2
processes), checkpoints to the sandbox's S3 server, and kubectl for the user's side.

Covers: a job trains to Succeeded; a worker killed mid-run causes exactly one gang restart
that resumes from the last committed step (lost work <= the checkpoint interval); no rank
ever has two live pods; printer columns show the facts; a deleted and re-created job never
takes another run's checkpoints over unless resumePolicy says Continue (scenario 21).
"""

from __future__ import annotations

import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import yaml
from llmops.builders.training import TERMINATION_GRACE_SECONDS
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "trainingjob-tiny-cpu.yaml"


eventually = partial(sandbox_eventually, timeout=120.0, interval=0.2)


def condition(tj: dict, type_: str) -> dict | None:
    return next((c for c in (tj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def is_true(tj: dict | None, type_: str) -> bool:
    c = condition(tj or {}, type_)
    return bool(c and c["status"] == "True")


class RankWatch:
    """Polls pods and records any moment where one rank had two non-terminal pods."""

    def __init__(self, kube: Kube, namespace: str, job: str) -> None:
        self.kube, self.ns, self.job = kube, namespace, job
        self.violations: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            live: dict[str, list[str]] = {}
            for pod in self.kube.list("v1", "Pod", self.ns, f"llmops.dev/job-name={self.job}"):
                if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                rank = pod["metadata"]["labels"].get("llmops.dev/node-rank", "?")
                live.setdefault(rank, []).append(pod["metadata"]["name"])
            self.violations += [f"rank {r}: {names}" for r, names in live.items() if len(names) > 1]
            time.sleep(0.1)

    def __enter__(self) -> RankWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module", params=CLUSTERS)
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True,
                 control_plane=sandbox_control_plane(request.param)) as sb:
        yield sb


def kubectl(sb: Sandbox, *args: str, stdin: str | None = None) -> str:
    out = subprocess.run(["kubectl", "--kubeconfig", sb.kubeconfig, *args], input=stdin,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def sample(name: str, total_steps: int, step_delay: float) -> str:
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = name
    body["spec"]["totalSteps"] = total_steps
    body["spec"]["checkpoint"]["uri"] = f"s3://llmops-sandbox/checkpoints/{name}"
    body["spec"].setdefault("template", {})["env"] = [{"name": "TRAIN_STEP_DELAY", "value": str(step_delay)}]
    return yaml.safe_dump(body)


def test_worker_killed_mid_run_resumes_from_last_checkpoint(sandbox: Sandbox) -> None:
    kube = Kube(load_api_client(sandbox.kubeconfig))
    get = lambda: kube.get("llmops.dev/v1alpha1", "TrainingJob", "default", "resume")  # noqa: E731
    kubectl(sandbox, "apply", "-f", "-", stdin=sample("resume", total_steps=60, step_delay=0.1))
    with RankWatch(kube, "default", "resume") as watch:
        eventually(lambda: ((get().get("status") or {}).get("checkpoint") or {}).get("step", 0) >= 10)
        tj = get()
        assert is_true(tj, "Running") and not is_true(tj, "Queued")
        killed_at = tj["status"]["progress"]["step"]
        sandbox.fault("default", "resume-w1-a0", "kill")
        done = eventually(lambda: (t := get()) and (is_true(t, "Succeeded") or is_true(t, "Failed")) and t, timeout=240)
    status = done["status"]
    assert is_true(done, "Succeeded"), status["conditions"]
    assert status["restarts"]["total"] == 1, status["restarts"]
    assert sum(status["restarts"]["byCause"].values()) == 1
    assert status["attempt"] == 1
    resumed = status["resumedFromStep"]
    assert 10 <= resumed <= killed_at + 5  # the newest committed step at the kill
    assert killed_at - resumed <= 5  # lost work <= the checkpoint interval (everySteps: 5)
    assert status["progress"]["step"] == 60
    assert watch.violations == []
    table = kubectl(sandbox, "get", "tj", "resume")
    assert "resume" in table and "60" in table
    events = [e for e in kube.list("v1", "Event", "default") if e["involvedObject"].get("name") == "resume"]
    restarts = [e for e in events if "restarting the gang" in e["message"]]
    assert len(restarts) == 1, [(e["reason"], e["message"]) for e in events]  # one Event per transition


def pods_gone(kube: Kube, job: str) -> None:
    """Wait until the deleted job's pods are gone. The runtime takes a final checkpoint on SIGTERM,
    and a pod gets terminationGracePeriodSeconds for it, so that is the bound (plus GC latency);
    on a timeout the message shows where each pod is stuck."""
    def state() -> str:
        return "; ".join(
            f"{p['metadata']['name']} phase={(p.get('status') or {}).get('phase')} "
            f"deleting={p['metadata'].get('deletionTimestamp')} "
            f"containers={[(c['name'], c.get('state')) for c in (p.get('status') or {}).get('containerStatuses') or []]}"
            for p in kube.list("v1", "Pod", "default", f"llmops.dev/job-name={job}"))
    try:
        eventually(lambda: not state(), timeout=TERMINATION_GRACE_SECONDS + 60)
    except AssertionError as e:
        raise AssertionError(f"pods of the deleted job still there: {state()}") from e


def test_recreated_job_never_silently_takes_over_and_continues_when_asked(sandbox: Sandbox) -> None:
    """Reliability scenario 21: a job deleted mid-run (an Argo CD prune) and re-created with the
    same name and checkpoint uri. By default (resumePolicy SameRun) the new object fails at once
    with CheckpointOwnedByAnotherRun and the old checkpoints stay; with resumePolicy Continue it
    continues from the deleted job's newest checkpoint."""
    kube = Kube(load_api_client(sandbox.kubeconfig))
    get = lambda: kube.get("llmops.dev/v1alpha1", "TrainingJob", "default", "again")  # noqa: E731
    manifest = sample("again", total_steps=40, step_delay=0.1)
    kubectl(sandbox, "apply", "-f", "-", stdin=manifest)
    saved = eventually(lambda: ((get().get("status") or {}).get("checkpoint") or {}).get("step", 0) >= 10 and get()["status"]["checkpoint"])
    kubectl(sandbox, "delete", "tj", "again", "--wait=true")
    t0 = time.monotonic()
    pods_gone(kube, "again")
    print(f"pods of the deleted job gone after {time.monotonic() - t0:.1f}s")

    kubectl(sandbox, "apply", "-f", "-", stdin=manifest)  # the same manifest again
    failed = eventually(lambda: (t := get()) and is_true(t, "Failed") and t)
    cond = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert cond["reason"] == "ConfigError" and "CheckpointOwnedByAnotherRun" in cond["message"], cond
    assert "resumePolicy: Continue" in cond["message"]
    assert (failed["status"].get("restarts") or {}).get("total", 0) == 0

    kubectl(sandbox, "delete", "tj", "again", "--wait=true")
    body = yaml.safe_load(manifest)
    body["spec"]["checkpoint"]["resumePolicy"] = "Continue"
    kubectl(sandbox, "apply", "-f", "-", stdin=yaml.safe_dump(body))

    # rank 0 reports at once where it resumed: the new object's first progress is not step 0
    first = eventually(lambda: ((get() or {}).get("status") or {}).get("progress"), timeout=60)
    done = eventually(lambda: (t := get()) and (is_true(t, "Succeeded") or is_true(t, "Failed")) and t, timeout=240)
    assert is_true(done, "Succeeded"), done["status"]["conditions"]
    assert done["status"]["progress"]["step"] == 40
    assert first["step"] >= saved["step"], (first, saved)  # the deleted job's work is kept
