"""The state-sequence watch the scenario tests use to prove that no job goes backward: the
pure check, and the watch on both clusters (a status patched through states by hand)."""

from __future__ import annotations

import pytest
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import install_project_crds
from llmops.sandbox.statewatch import StateWatch, backward
from llmops.sandbox.testing import eventually


@pytest.mark.parametrize(
    ("states", "steps"),
    [
        (["Queued", "Running", "Succeeded"], []),
        (["Queued", "Running", "Restarting", "Queued", "Running", "Failed"], []),
        (["Running", "Suspended", "Queued", "Running"], []),
        (["Queued", "Succeeded"], []),
        (["Queued", "Running", "Queued", "Succeeded"], ["Running -> Queued: a running job went back to the queue"]),
        (["Running", "Succeeded", "Running"], ["Succeeded -> Running: a finished job came back"]),
        (["Failed", "Succeeded"], ["Failed -> Succeeded: a finished job came back"]),
    ],
)
def test_backward_steps(states: list[str], steps: list[str]) -> None:
    assert backward(states) == steps


def test_the_watch_sees_every_state_written(kubeconfig, fresh_namespace) -> None:  # noqa: ANN001
    install_project_crds(kubeconfig)
    api = load_api_client(str(kubeconfig))
    kube = Kube(api)
    body = {"apiVersion": "llmops.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "w", "namespace": fresh_namespace},
            "spec": {"image": "x", "command": ["python"], "nodes": 1, "resources": {"gpus": 0, "cpu": "100m", "memory": "64Mi"}}}
    kube.create(body)
    with StateWatch(api, "llmops.dev", "v1alpha1", "trainingjobs", fresh_namespace) as watch:
        for state in ("Queued", "Running", "Queued", "Running", "Running", "Succeeded"):
            kube.patch_status("llmops.dev/v1alpha1", "TrainingJob", fresh_namespace, "w", {"state": state})
        # Each state is held for one write only; the watch must still see all of them.
        eventually(lambda: watch.of("w") == ["Queued", "Running", "Queued", "Running", "Succeeded"], timeout=30)
        assert list(watch.backward().values()) == [["Running -> Queued: a running job went back to the queue"]]
