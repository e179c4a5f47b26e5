"""A DeepSpeed TrainingJob end to end on the sandbox (emulated and real control plane).

The real operator renders the pods of a ``launcher: deepspeed`` job with ``zeroStage: 3``;
the process node agents run them: the project's launcher starts the ranks (no SSH), the
built-in trainer builds a ZeRO-3 engine (gloo on CPU), checkpoints go to the sandbox's S3
server. Worker 1 is SIGKILLed after a commit; the gang restarts once and resumes from the
newest committed step to Succeeded. Bitwise exactness of that resume is pinned by
tests/runtime/test_deepspeed.py; this test pins the operator -> pod -> engine wiring.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import yaml
from llmops.api import runtime_env as E
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane
from llmops.sandbox.testing import eventually as sandbox_eventually

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "manifests" / "samples" / "trainingjob-tiny-cpu.yaml"
STEPS, EVERY = 12, 4

eventually = partial(sandbox_eventually, timeout=300.0, interval=0.2)


@pytest.fixture(params=CLUSTERS)
def sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True,
                 control_plane=sandbox_control_plane(request.param)) as sb:
        yield sb


def deepspeed_job(name: str) -> dict:
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"].update({"name": name, "namespace": "default"})
    spec = body["spec"]
    spec.update({"launcher": "deepspeed", "deepspeed": {"zeroStage": 3}, "procsPerNode": 1, "totalSteps": STEPS})
    spec["checkpoint"].update({"uri": f"s3://llmops-sandbox/checkpoints/{name}", "everySteps": EVERY})
    spec.setdefault("template", {})["env"] = [{"name": "TRAIN_STEP_DELAY", "value": "1.0"}]
    return body


def is_true(tj: dict | None, type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in ((tj or {}).get("status") or {}).get("conditions", []))


@pytest.mark.timeout(900)
def test_deepspeed_zero3_job_resumes_after_a_killed_worker(sandbox: Sandbox) -> None:
    kube = Kube(load_api_client(sandbox.kubeconfig))
    kube.create(deepspeed_job("ds"))
    get = lambda: kube.get("llmops.dev/v1alpha1", "TrainingJob", "default", "ds")  # noqa: E731
    eventually(lambda: ((get().get("status") or {}).get("checkpoint") or {}).get("step", 0) >= EVERY)
    pod = kube.get("v1", "Pod", "default", "ds-w1-a0")
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (env[E.LAUNCHER], env[E.DEEPSPEED_ZERO_STAGE]) == ("deepspeed", "3")
    sandbox.fault("default", "ds-w1-a0", "kill")
    done = eventually(lambda: (t := get()) and (is_true(t, "Succeeded") or is_true(t, "Failed")) and t)
    status = done["status"]
    assert is_true(done, "Succeeded"), status["conditions"]
    assert status["restarts"]["total"] == 1 and status["attempt"] == 1, status["restarts"]
    assert EVERY <= status["resumedFromStep"] < STEPS
    assert status["progress"]["step"] == STEPS
