"""Install manifests and image recipes: kustomizations list files that exist (recursively),
RBAC grants no Secret access and no wildcards, each rule carries a comment saying why, the
operator Deployment is single-replica/Recreate/peered/probed/non-root, the metrics Service
selects it, and every Dockerfile pins its base and copies only paths that exist."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def kustomize_files(directory: pathlib.Path) -> list[pathlib.Path]:
    """Files a kustomization pulls in, following directory resources."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    out = []
    for res in k["resources"]:
        path = (directory / res).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml lists missing {res}"
        out += kustomize_files(path) if path.is_dir() else [path]
    return out


def all_docs() -> list[dict[str, Any]]:
    return [d for f in kustomize_files(MANIFESTS) for d in yaml.safe_load_all(f.read_text()) if d]


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in all_docs() if d["kind"] == kind]


def test_kustomization_installs_crds_and_operator() -> None:
    kinds = sorted({(d["kind"], d["metadata"]["name"]) for d in all_docs()})
    crds = {n for k, n in kinds if k == "CustomResourceDefinition"}
    assert {"trainingjobs.llmops.dev", "finetunejobs.llmops.dev", "inferenceservices.llmops.dev"} <= crds
    assert {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"} <= crds
    for needed in ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"):
        assert any(k == needed for k, _ in kinds), needed
    # no object of a CRD installed in the same apply (a real server refuses it until the CRD is
    # established): the operator applies its peering object itself
    assert not any(k == "ClusterKopfPeering" for k, _ in kinds)


def test_rbac_least_privilege() -> None:
    (role,) = by_kind("ClusterRole")
    for rule in role["rules"]:
        assert "secrets" not in rule["resources"]
        assert "*" not in rule["resources"] and "*" not in rule["verbs"] and "*" not in rule["apiGroups"]
    text = (MANIFESTS / "operator" / "rbac.yaml").read_text()
    # every rule is preceded by a comment line saying why
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith("- apiGroups:"):
            assert lines[i - 1].strip().startswith("#"), f"rule at line {i + 1} has no comment"
    (binding,) = by_kind("ClusterRoleBinding")
    (sa,) = by_kind("ServiceAccount")
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def test_operator_deployment() -> None:
    (dep,) = by_kind("Deployment")
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["llmops"] and c["args"][0] == "operator"
    assert any(a.startswith("--peering=") for a in c["args"]) and "--standalone" not in c["args"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
    assert c["resources"]["requests"] and c["resources"]["limits"]
    (svc,) = by_kind("Service")
    assert svc["spec"]["selector"].items() <= spec["template"]["metadata"]["labels"].items()
    assert "--peering=llmops" in c["args"]


def test_argocd_application_points_at_manifests() -> None:
    app = yaml.safe_load((MANIFESTS / "argocd" / "application.yaml").read_text())
    assert app["kind"] == "Application"
    assert (ROOT / app["spec"]["source"]["path"] / "kustomization.yaml").exists()


DOCKERFILES = sorted((ROOT / "images").glob("*/Dockerfile"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=[p.parent.name for p in DOCKERFILES])
def test_dockerfile_pins_base_and_copies_existing_paths(path: pathlib.Path) -> None:
    text = path.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))
    for base in re.findall(r"^FROM (\S+)", text, re.M):
        image = args.get(base[2:-1], base) if base.startswith("${") else base
        assert ":" in image and not image.endswith(":latest"), f"{path}: unpinned base {image}"
    for src in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in src.split():
            assert (ROOT / item).exists(), f"{path}: COPY of missing {item}"
    assert re.search(r"^USER (?!root|0\b)", text, re.M), f"{path}: runs as root"


def test_images_cover_operator_trainer_server() -> None:
    assert {p.parent.name for p in DOCKERFILES} == {"operator", "trainer", "server"}
