"""Argo CD health checks (manifests/argocd/health/<group>_<Kind>/health.lua), run offline with lupa.

Each kind's health_test.yaml lists fixtures in Argo CD's own test format (inputPath ->
healthStatus.status/message); every fixture is run through the real Lua the way Argo CD runs it
(the object bound to the global ``obj``, the script's return value is the health). The argocd-cm
snippet must carry the very same Lua text.
"""

from __future__ import annotations

import pathlib

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEALTH = ROOT / "manifests" / "argocd" / "health"
KINDS = ("TrainingJob", "FinetuneJob", "InferenceService")


def cases():
    for kind in KINDS:
        spec = yaml.safe_load((HEALTH / f"llmops.dev_{kind}" / "health_test.yaml").read_text())
        for t in spec["tests"]:
            yield pytest.param(kind, t, id=f"{kind}-{pathlib.Path(t['inputPath']).stem}")


@pytest.mark.parametrize("kind,test", list(cases()))
def test_health_fixture(kind, test, argo_health):  # noqa: ANN001
    obj = yaml.safe_load((HEALTH / f"llmops.dev_{kind}" / test["inputPath"]).read_text())
    assert obj["kind"] == kind
    assert argo_health(obj) == test["healthStatus"]


def test_every_kind_covers_every_argo_status_it_can_return():
    for kind in KINDS:
        spec = yaml.safe_load((HEALTH / f"llmops.dev_{kind}" / "health_test.yaml").read_text())
        seen = {t["healthStatus"]["status"] for t in spec["tests"]}
        assert {"Healthy", "Progressing", "Degraded"} <= seen, kind
        if kind != "InferenceService":
            assert "Suspended" in seen, kind


def test_argocd_cm_snippet_carries_the_same_lua():
    cm = yaml.safe_load((ROOT / "manifests" / "argocd" / "argocd-cm-health.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    for kind in KINDS:
        key = f"resource.customizations.health.llmops.dev_{kind}"
        assert cm["data"][key] == (HEALTH / f"llmops.dev_{kind}" / "health.lua").read_text(), key
