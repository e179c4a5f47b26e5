"""GitOps and kubectl experience on the sandbox (real operator subprocess, emulated API server,
process node agents running the tiny CPU TrainingJob).

One job is applied the way Argo CD does it (client-side `kubectl apply`, then `kubectl apply
--server-side`), carrying Argo CD's app-instance label. While the operator runs it through a worker
kill, a gang restart and completion, a watcher polls the live object and records any moment where
the spec differs from the applied manifest (plus the CRD's scalar schema defaults, which the API
server fills in at create time and Argo CD's diff ignores), an operator annotation appears, or a
child carries the app-instance label. The kubectl tests then read the same job: `kubectl get llmops`, the `tj`
printer columns against the status, and `kubectl describe` events, one line per transition.
"""

from __future__ import annotations

import copy

import pytest
import yaml
from admin_gitops import API, INSTANCE, ROOT, DriftWatch, argo_resync, argo_sync, crd_defaulted, eventually, is_true, kubectl
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.run import Sandbox, operator_available
from llmops.sandbox.testing import CLUSTERS, sandbox_control_plane

SAMPLE = ROOT / "manifests" / "samples" / "trainingjob-tiny-cpu.yaml"
NAME = "gitops"

pytestmark = pytest.mark.skipif(not operator_available(), reason="operator dependencies (kopf) not installed")


def manifest() -> dict:
    body = yaml.safe_load(SAMPLE.read_text())
    body["metadata"]["name"] = NAME
    body["metadata"]["namespace"] = "default"
    body["metadata"]["labels"] = {INSTANCE: "llmops-demo"}  # Argo CD's default tracking label
    body["spec"]["totalSteps"] = 40
    body["spec"]["checkpoint"]["uri"] = f"s3://llmops-sandbox/checkpoints/{NAME}"
    body["spec"].setdefault("template", {})["env"] = [{"name": "TRAIN_STEP_DELAY", "value": "0.1"}]
    return body


@pytest.fixture(scope="module", params=CLUSTERS)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, argo_health):  # noqa: ANN001, ANN201
    """Apply like Argo CD, kill a worker once a checkpoint exists, wait for the end."""
    with Sandbox(nodes=2, workdir=tmp_path_factory.mktemp("sbx"), operator=True,
                 control_plane=sandbox_control_plane(request.param)) as sb:
        kube = Kube(load_api_client(sb.kubeconfig))
        applied = manifest()
        get = lambda: kube.get(API, "TrainingJob", "default", NAME)  # noqa: E731
        children = [("v1", kind, f"llmops.dev/job-name={NAME}") for kind in ("Pod", "Service", "ConfigMap")]
        with DriftWatch(kube, copy.deepcopy(applied), argo_health, children) as watch:
            argo_sync(sb, applied)
            eventually(lambda: (((get() or {}).get("status") or {}).get("checkpoint") or {}).get("step", 0) >= 5)
            sb.fault("default", f"{NAME}-w1-a0", "kill")
            final = eventually(lambda: (t := get()) and (is_true(t, "Succeeded") or is_true(t, "Failed")) and t, timeout=240)
            argo_resync(sb, applied)  # a re-sync after the run
            watch.settle()
        yield {"sb": sb, "kube": kube, "applied": applied, "final": final, "watch": watch}


def test_live_spec_never_diverges_from_the_applied_manifest(run) -> None:  # noqa: ANN001
    watch, final = run["watch"], run["final"]
    assert is_true(final, "Succeeded"), final["status"]["conditions"]
    assert final["status"]["restarts"]["total"] >= 1, final["status"]["restarts"]  # the kill restarted the gang
    assert watch.polls > 20 and any(c.startswith("Pod/") for c in watch.children_seen)
    assert watch.problems == []
    expected = crd_defaulted("TrainingJob", run["applied"]["spec"])
    assert final["spec"] == expected
    added = {k for k in expected if k not in run["applied"]["spec"]}
    assert added <= {"launcher"}, added  # the only top-level default a minimal manifest picks up
    assert final["metadata"]["labels"] == {INSTANCE: "llmops-demo"}
    assert final["metadata"]["generation"] == 1  # nothing ever wrote spec


def test_argo_health_follows_the_run(run, argo_health) -> None:  # noqa: ANN001
    """The Lua health check on the live object: Progressing while it runs (a restart included),
    Healthy at the end, never Degraded for a job that recovers."""
    healths = run["watch"].healths
    assert healths[0] == "Progressing" and healths[-1] == "Healthy", healths
    assert "Degraded" not in healths, healths
    assert argo_health(run["final"])["status"] == "Healthy"


def test_kubectl_get_llmops_lists_the_kinds(run) -> None:  # noqa: ANN001
    out = kubectl(run["sb"], "get", "llmops", "-A")
    assert f"trainingjob.llmops.dev/{NAME}" in out
    assert "STATE" in out.splitlines()[0].split()  # the one column every kind has
    resources = kubectl(run["sb"], "api-resources", "--categories=llmops", "-o", "name").split()
    assert sorted(resources) == ["finetunejobs.llmops.dev", "inferenceservices.llmops.dev", "trainingjobs.llmops.dev"]


def test_kubectl_get_tj_columns_show_the_status(run) -> None:  # noqa: ANN001
    lines = kubectl(run["sb"], "get", "tj", NAME).splitlines()
    header, row = lines[0].split(), lines[1].split()
    assert header[:8] == ["NAME", "STATE", "NODES", "GPUS/NODE", "STEP", "TOTAL", "CKPT", "RESTARTS"]
    st = run["kube"].get(API, "TrainingJob", "default", NAME)["status"]
    facts = dict(zip(header, row, strict=True))
    assert facts["NAME"] == NAME and facts["NODES"] == "2" and facts["GPUS/NODE"] == "0"
    assert facts["STEP"] == str(st["progress"]["step"]) == "40"
    assert facts["TOTAL"] == "40"
    assert facts["CKPT"] == str(st["checkpoint"]["step"])
    assert facts["RESTARTS"] == str(st["restarts"]["total"]) and st["restarts"]["total"] >= 1, st["restarts"]
    assert facts["STATE"] == st["state"] == "Succeeded"
    wide = kubectl(run["sb"], "get", "tj", NAME, "-o", "wide").splitlines()
    assert dict(zip(wide[0].split(), wide[1].split(), strict=True))["REASON"] == st["stateReason"] == "Completed"


def test_kubectl_describe_shows_one_line_per_transition(run) -> None:  # noqa: ANN001
    out = kubectl(run["sb"], "describe", "tj", NAME)
    print(out)  # shown with -rP
    assert "Events:" in out
    events_block = out.split("Events:", 1)[1].splitlines()
    rows = [line for line in events_block if line.strip() and not line.strip().startswith(("Type", "----"))]
    assert rows, out
    events = [e for e in run["kube"].list("v1", "Event", "default") if e["involvedObject"].get("name") == NAME]
    assert events and all("\n" not in e["message"] for e in events)
    for e in events:  # every Event is one row naming its reason and message
        assert any(e["reason"] in r and e["message"][:40] in r for r in rows), (e["reason"], e["message"], rows)
    reasons = {e["reason"] for e in events}
    assert len([e for e in events if "restart" in e["message"].lower()]) >= 1, reasons
