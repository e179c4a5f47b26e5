"""Fixtures for node-agent tests: one emulated API server and one node agent per module,
and a fresh namespace per test (helpers live in podkit.py)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from llmops.sandbox.node.agent import NodeAgent
from llmops.sandbox.node.client import ApiException, Kube
from podkit import NODE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    from llmops.sandbox.apiserver import ApiServer

    srv = ApiServer(host="127.0.0.1", port=0)
    srv.start()
    kubeconfig = str(tmp_path_factory.mktemp("kube") / "kubeconfig")
    srv.write_kubeconfig(kubeconfig)
    yield srv, kubeconfig
    srv.stop()


@pytest.fixture(scope="module")
def kube(server: tuple[Any, str]) -> Iterator[Kube]:
    k = Kube(server[1])
    yield k
    k.close()


@pytest.fixture(scope="module")
def agent(server: tuple[Any, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeAgent]:
    srv, kubeconfig = server
    a = NodeAgent(
        Kube(kubeconfig),
        NODE,
        {"cpu": "4", "memory": "8Gi", "nvidia.com/gpu": "8", "rdma/hca": "4"},
        tmp_path_factory.mktemp("node"),
        pod_cidr="127.77.0.0/16",
        heartbeat_seconds=0.2,
        pod_kubeconfig=kubeconfig,
    )
    a.start()
    srv.register_log_source(lambda ns, pod, c: a.read_log(ns, pod, c))
    yield a
    a.stop()
    a.kube.close()


@pytest.fixture
def ns(kube: Kube, agent: NodeAgent) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    for pod in kube.get(f"/api/v1/namespaces/{name}/pods").get("items") or []:
        with contextlib.suppress(ApiException):
            kube.request("DELETE", f"/api/v1/namespaces/{name}/pods/{pod['metadata']['name']}", {"gracePeriodSeconds": 0})
