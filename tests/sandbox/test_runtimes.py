"""The node-level runtime mapping (llmops.sandbox.node.runtimes): image references, argv
rewrites, PATH, lookup order, the two serving runtimes; and a node agent running a pod
through its mapping (what runs is the node's choice, the pod spec stays the same)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from llmops.builders.inference import DEFAULT_SERVER_IMAGE
from llmops.sandbox.node import runtimes as R
from llmops.sandbox.node.agent import NodeAgent
from llmops.sandbox.node.client import Kube
from podkit import NODE, create, eventually, make_pod, phase_is


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("vllm", "vllm"),
        ("ghcr.io/llmops/llmops-server:0.1.0", "ghcr.io/llmops/llmops-server"),
        ("registry:5000/org/name", "registry:5000/org/name"),
        ("registry:5000/org/name:v1@sha256:abc", "registry:5000/org/name"),
        ("name@sha256:abc", "name"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert R.image_repository(image) == repository


def test_argv_rewrites_the_first_matching_prefix_only() -> None:
    rt = R.ImageRuntime(rewrites=(R.Rewrite(("vllm", "serve"), ("py", "-m", "x"), ("--host", "$(POD_IP)")),
                                  R.Rewrite(("vllm",), ("other",))))
    assert rt.argv(["vllm", "serve", "/m", "--port", "8000"], {"POD_IP": "127.1.0.9"}) == [
        "py", "-m", "x", "/m", "--port", "8000", "--host", "127.1.0.9"]
    assert rt.argv(["vllm", "bench"]) == ["other", "bench"]
    assert rt.argv(["python", "-m", "vllm"]) == ["python", "-m", "vllm"]


def test_root_paths_roots_only_arguments_under_a_mount() -> None:
    env = {"LLMOPS_SANDBOX_ROOT": "/pods/p1/root", "LLMOPS_SANDBOX_MOUNTS": '{"/var/cache/m": "/vol/c", "/dev/shm": "/vol/s"}'}
    rt = R.ImageRuntime(rewrites=(R.Rewrite(("srv",), ("srv",), root_paths=True),))
    assert rt.argv(["srv", "/var/cache/m/model", "--port", "8000", "/var/cache/mx", "/v1"], env) == [
        "srv", "/pods/p1/root/var/cache/m/model", "--port", "8000", "/var/cache/mx", "/v1"]
    # a program of the same image that follows the sandbox rule itself gets its paths as written
    own = ["python", "-m", "agent", "--cache-dir", "/var/cache/m"]
    assert rt.argv(own, env) == own
    assert rt.argv(["srv", "/var/cache/m/model"], {}) == ["srv", "/var/cache/m/model"]  # not a sandbox pod


def test_env_defaults_yield_to_the_pod_and_bin_dirs_go_first_once() -> None:
    rt = R.ImageRuntime(bin_dirs=("/img/bin",), env_defaults=(("A", "image"), ("B", "image")))
    assert rt.env({"PATH": "/usr/bin:/img/bin", "A": "pod"}) == {"PATH": "/img/bin:/usr/bin", "A": "pod", "B": "image"}
    assert R.ImageRuntime().env({"PATH": "/usr/bin"}) == {"PATH": "/usr/bin"}


def test_lookup_prefers_the_exact_reference_then_the_repository_then_any() -> None:
    exact, repo, anything = R.ImageRuntime(bin_dirs=("e",)), R.ImageRuntime(bin_dirs=("r",)), R.ImageRuntime(bin_dirs=("*",))
    table = {"img:1": exact, "img": repo, R.ANY_IMAGE: anything}
    assert R.lookup(table, "img:1") is exact
    assert R.lookup(table, "img:2") is repo
    assert R.lookup(table, "other") is anything
    assert R.lookup({"img": repo}, "other") is None


def test_serving_runtimes_map_the_server_image(tmp_path: Path) -> None:
    argv = ["vllm", "serve", "/cache/m", "--port", "8000"]
    real = R.lookup(R.serving_runtimes("vllm", venv=tmp_path), DEFAULT_SERVER_IMAGE)
    assert real is not None
    assert real.argv(argv, {"POD_IP": "127.1.0.7"}) == [
        str(tmp_path / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server", "--model", *argv[2:], "--host", "127.1.0.7"]
    assert real.env({})["VLLM_CPU_KVCACHE_SPACE"] == R.VLLM_KV_CACHE_GIB
    assert real.bin_dirs == (str(tmp_path / "bin"),)  # fetch and adapter agent run in the same venv
    double = R.lookup(R.serving_runtimes("standin"), DEFAULT_SERVER_IMAGE.replace("0.1.0", "9.9"))
    assert double is not None and double.argv(argv) == ["python", "-m", "llmops_runtime.serve.standin", *argv[2:]]
    assert double.argv(["python", "-m", "llmops_runtime.serve.fetch"]) == ["python", "-m", "llmops_runtime.serve.fetch"]
    with pytest.raises(ValueError, match="unknown serving runtime"):
        R.serving_runtimes("mock")


def test_the_agent_runs_an_image_through_its_mapping(server, kube, tmp_path: Path) -> None:
    """The same pod spec (`greet world` in image tool:2) runs the node's mapped program with the
    image's bin dir first on PATH; an image without an entry runs its command as written."""
    bin_dir = tmp_path / "img-bin"
    bin_dir.mkdir()
    code = "import os, sys; print('hello', *sys.argv[1:], os.environ['PATH'].split(os.pathsep)[0])"
    greet = R.Rewrite(("greet",), (sys.executable, "-c", code))
    mapping = {"example.org/tool": R.ImageRuntime(bin_dirs=(str(bin_dir),), rewrites=(greet,))}
    agent = NodeAgent(Kube(server[1]), NODE + "-rt", {"cpu": "2", "memory": "2Gi"}, tmp_path / "node", pod_cidr="127.78.0.0/16",
                      heartbeat_seconds=0.5, runtimes=mapping)  # fmt: skip
    ns = f"t-{uuid.uuid4().hex[:8]}"
    kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    with agent:
        mapped = make_pod("mapped", command=["greet", "world"], node=agent.name, image="example.org/tool:2")
        unmapped = make_pod("unmapped", command=["greet", "world"], node=agent.name, image="example.org/other:2")
        for pod in (mapped, unmapped):
            create(kube, ns, pod)
        done = eventually(lambda: phase_is(kube, ns, "mapped", "Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded"
        assert agent.read_log(ns, "mapped", "main").split() == ["hello", "world", str(bin_dir)]
        failed = eventually(lambda: phase_is(kube, ns, "unmapped", "Failed"))
        state = failed["status"]["containerStatuses"][0]["state"]["terminated"]
        assert state["reason"] == "StartError" and "greet" in state["message"]
