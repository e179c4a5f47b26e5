"""Fixtures of the contract suite (helpers live in contract_helpers.py)."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

# Importable under any --import-mode (importlib mode does not put test dirs on sys.path).
sys.path.insert(0, str(pathlib.Path(__file__).parent))

from contract_helpers import WIDGET_CRD, WIDGETS, Failed, Kube  # noqa: E402


@pytest.fixture
def kube(kube_client: Any) -> Kube:
    return Kube(kube_client)


@pytest.fixture
def emulator(request: pytest.FixtureRequest, kubeconfig: pathlib.Path) -> Callable[[str], Any]:
    """`emulator(why)`: the emulated API server behind `kubeconfig`, for the few checks of the
    emulator's own test hooks (log sources, its watch window); on the real server the test is
    skipped with `why`, which must say what the real contract is and where it is tested."""

    def get(why: str) -> Any:
        if request.node.callspec.params.get("kubeconfig") == "real":
            pytest.skip(f"emulator test hook, not a real-server contract: {why}")
        return request.getfixturevalue("api_server")

    return get


@pytest.fixture
def widget_crd(kube: Kube, eventually: Any) -> dict[str, Any]:
    """Install the test CRD (kept if it already exists) and wait until it is served."""
    try:
        kube.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    except Failed as e:
        if e.status != 409:
            raise
    eventually(lambda: kube.get(WIDGETS), timeout=30)
    return WIDGET_CRD


@pytest.fixture
def kubectl(kubeconfig: pathlib.Path, tmp_path: pathlib.Path):
    def run(*args: str, input: str | None = None, timeout: float = 30, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["kubectl", "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "kubectl-cache"), *args],
                              input=input, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    return run

