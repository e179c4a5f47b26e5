"""User-level TrainingJob scenario, through kubectl only (so it runs on a real cluster too):
apply the tiny sample, watch it checkpoint, force-delete a worker pod the way an admin or a
node drain would, see exactly one gang restart resume from the last committed step, finish,
then delete the job and see every child garbage-collected (nothing left holding GPUs). A watch
records every state the job passes through: none goes backward (issue 19)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import yaml
from llmops.kube.client import load_api_client
from llmops.sandbox.statewatch import StateWatch
from llmops.sandbox.testing import eventually

ROOT = Path(__file__).resolve().parents[1]


poll = partial(eventually, timeout=240.0, interval=0.5)


def true(tj: dict, type_: str) -> bool:
    return any(c["type"] == type_ and c["status"] == "True" for c in tj.get("status", {}).get("conditions", []))


def test_restart_resume_and_cleanup(cluster) -> None:  # noqa: ANN001
    body = yaml.safe_load((ROOT / "manifests/samples/trainingjob-tiny-cpu.yaml").read_text())
    body["metadata"]["name"] = "e2e-tiny"
    body["spec"]["totalSteps"] = 40
    body["spec"]["checkpoint"]["uri"] = f"{cluster.checkpoint_uri}/e2e-tiny"
    body["spec"]["template"] = {"env": [{"name": "TRAIN_STEP_DELAY", "value": "0.1"}]}
    states = StateWatch(load_api_client(cluster.kubeconfig), "llmops.dev", "v1alpha1", "trainingjobs", cluster.namespace)
    with states:
        _run_kill_and_finish(cluster, body)
        # Every state the job passed through, in order, as a `kubectl get tj -w` would show it.
        poll(lambda: states.of("e2e-tiny")[-1:] == ["Succeeded"])
    assert states.backward() == {}, states.of("e2e-tiny")
    assert "Restarting" in states.of("e2e-tiny"), states.of("e2e-tiny")

    cluster.kubectl("delete", "tj", "e2e-tiny")
    poll(lambda: not cluster.kubectl("get", "pods,services,leases", "-l", "llmops.dev/owner-name=e2e-tiny",
                                     "-o", "name").strip(), timeout=60)


def _run_kill_and_finish(cluster, body: dict) -> None:  # noqa: ANN001
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))
    get = lambda: json.loads(cluster.kubectl("get", "tj", "e2e-tiny", "-o", "json"))  # noqa: E731

    tj = poll(lambda: (t := get()) and (t.get("status", {}).get("checkpoint") or {}).get("step", 0) >= 10 and t)
    attempt = tj["status"]["attempt"]
    cluster.kubectl("delete", "pod", f"e2e-tiny-w0-a{attempt}", "--grace-period=0", "--force", "--wait=false")
    done = poll(lambda: (t := get()) and (true(t, "Succeeded") or true(t, "Failed")) and t)
    st = done["status"]
    assert true(done, "Succeeded"), st["conditions"]
    assert st["restarts"]["total"] == 1 and st["attempt"] == attempt + 1
    assert st["resumedFromStep"] >= 10
    assert st["progress"]["step"] == 40
    described = cluster.kubectl("describe", "tj", "e2e-tiny")
    assert "Events:" in described and "restarting the gang" in described
