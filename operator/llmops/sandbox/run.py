"""`Sandbox`: the whole embedded cluster in one context manager, on one of two control planes.

Emulated (the default): the project's API server (``llmops.sandbox.apiserver``) in this
process, with the sandbox's stand-ins for what a real control plane runs besides the API: a
binder (the scheduler, gangs included) and a Deployment controller.

Real (``control_plane=...``): a real kube-apiserver, controller manager and scheduler
(``llmops.sandbox.controlplane``, the ``../shared/kube`` layout), started here or given by
kubeconfig. The real scheduler and controller manager place pods and run Deployments, so no
binder and no Deployment controller start; what a real cluster needs a driver for, storage,
comes from a local-directory provisioner (``llmops.sandbox.provisioner``). With
``fault_proxy=True`` the operator, and only it, talks to the API through a fault proxy
(``llmops.sandbox.faultproxy``), so the scenarios inject 409/429/5xx and 410 Gone on both sides
through ``sandbox.faults``; otherwise it talks to the real API server directly, as an
out-of-cluster operator does.

Either way the same parts follow: S3 server -> CRDs from crds/ (waited until served) -> node
agents (threads in this process; each registers its Node and Lease and runs the pods bound to
it as process groups) -> operator (a subprocess, only when asked for and when
``llmops.handlers`` exists). Stop runs the reverse order; every process started here is
registered with a reaper (see ``node.process``), so even a SIGKILLed sandbox leaves nothing
behind.

Container logs are files under the agents' workdirs. ``sandbox.logs(ns, pod)`` reads them on
both control planes; the emulated API server also serves them to ``kubectl logs`` through its
log-source hook. A real API server asks the node's kubelet for logs, and these nodes have
none, so ``kubectl logs`` does not work there: read ``sandbox.logs`` or the files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from llmops.sandbox.binder import Binder
from llmops.sandbox.controlplane import ControlPlane
from llmops.sandbox.node.agent import NodeAgent, parse_capacity
from llmops.sandbox.node.client import ApiException, Kube, is_status
from llmops.sandbox.node.process import Reaper
from llmops.sandbox.node.runtimes import serving_runtimes
from llmops.sandbox.provisioner import Provisioner
from llmops.sandbox.s3 import S3Server

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
CRD_DIR = REPO_ROOT / "crds"
DEFAULT_CAPACITY = "cpu=8,memory=32Gi"


def operator_available() -> bool:
    """The operator is written separately; the sandbox starts it only once it exists."""
    return importlib.util.find_spec("llmops.handlers") is not None


def node_capacity(capacity: str | Mapping[str, str], gpus_per_node: int) -> dict[str, str]:
    cap = parse_capacity(capacity) if isinstance(capacity, str) else dict(capacity)
    if gpus_per_node:
        cap["nvidia.com/gpu"] = str(gpus_per_node)
    return cap


#: Bucket created in the sandbox's S3 server; the samples checkpoint to s3://llmops-sandbox/...
DEFAULT_BUCKET = "llmops-sandbox"

#: What ``Sandbox(control_plane=...)`` takes: None or False (the emulated API server); True
#: (a real control plane found as ``ControlPlane`` finds it, started in the workdir); a
#: directory holding ``start.sh`` (the same, from there); a ``ControlPlane`` (started here if it
#: is not yet, stopped here only if started here); any other path: the kubeconfig of a running
#: cluster (its nodes are this sandbox's agents; they deregister on stop).
ControlPlaneArg = ControlPlane | str | os.PathLike[str] | bool | None


def resolve_control_plane(arg: ControlPlaneArg, state_dir: Path) -> ControlPlane | Path | None:
    """A ControlPlane to run, the kubeconfig of a running cluster, or None (emulated)."""
    if arg is None or arg is False:
        return None
    if isinstance(arg, ControlPlane):
        return arg
    if arg is True:
        return ControlPlane(state_dir=state_dir)
    path = Path(arg)
    if (path / "start.sh").is_file():
        return ControlPlane(kube_dir=path, state_dir=state_dir)
    if path.is_file():
        return path.resolve()
    raise FileNotFoundError(f"control plane {path}: neither a directory with start.sh nor a kubeconfig file")


class Sandbox:
    """`with Sandbox(nodes=2) as sb:` — see the module essay and docs/sandbox.md."""

    def __init__(
        self,
        nodes: int = 2,
        capacity: str | Mapping[str, str] = DEFAULT_CAPACITY,
        gpus_per_node: int = 0,
        workdir: str | Path | None = None,
        port: int = 0,
        *,
        operator: bool = False,
        operator_args: list[str] | None = None,
        s3: bool = True,
        binder: bool = True,
        crds: bool = True,
        heartbeat_seconds: float = 2.0,
        control_plane: ControlPlaneArg = None,
        serving: str = "vllm",
        fault_proxy: bool = False,
    ) -> None:
        self.node_count = nodes
        self.capacity = node_capacity(capacity, gpus_per_node)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmops-sandbox-")).resolve()
        self.port = port
        self.want_operator = operator
        self.operator_args = operator_args or []
        self.want_s3, self.want_binder, self.want_crds = s3, binder, crds
        self.heartbeat_seconds = heartbeat_seconds
        # What the nodes run for the server image: real vLLM (the vLLM venv) or the test double.
        self.runtimes = serving_runtimes(serving)
        self.control_plane = resolve_control_plane(control_plane, self.workdir / "kube")
        self._own_control_plane = False
        self.server: Any = None  # the emulated API server (None on a real control plane)
        self.want_fault_proxy = fault_proxy
        self.proxy: Any = None  # the operator's fault proxy (a real control plane, when asked for)
        self.provisioner: Provisioner | None = None
        self._upstream = self.kubeconfig  # the operator's kubeconfig when no proxy stands between
        self.s3: S3Server | None = None
        self.api: Kube | None = None
        self.agents: list[NodeAgent] = []
        self.binder: Binder | None = None
        self.deployments: Any = None  # the sandbox-only Deployment controller (llmops.sandbox.deployments)
        self.operator: subprocess.Popen[bytes] | None = None
        self._reaper: Reaper | None = None
        self.start_seconds: float | None = None

    # --- handles ----------------------------------------------------------------------------
    @property
    def kubeconfig(self) -> str:
        """Admin kubeconfig of this sandbox's cluster (a copy, on a real control plane)."""
        return str(self.workdir / "kubeconfig")

    @property
    def real(self) -> bool:
        """True on a real control plane, False on the emulated API server."""
        return self.control_plane is not None

    @property
    def api_url(self) -> str:
        config = yaml.safe_load(Path(self.kubeconfig).read_text())
        return str(config["clusters"][0]["cluster"]["server"])

    @property
    def operator_kubeconfig(self) -> str:
        """What the operator connects with: the fault proxy on a real control plane."""
        return self.proxy.kubeconfig if self.proxy is not None else self._upstream

    @property
    def faults(self) -> Any:
        """Fault injection on the operator's API requests (``apiserver.faults.Faults``): the
        emulated server's own, or the fault proxy's in front of a real API server."""
        if self.server is not None:
            return self.server.faults
        if self.proxy is not None:
            return self.proxy.faults
        raise RuntimeError("this sandbox has no fault injection (a real control plane without fault_proxy=True)")

    def logs(self, namespace: str, pod: str, container: str | None = None, previous: bool = False) -> str | None:
        """A container's log as its node agent keeps it (both control planes); None if no agent runs the pod."""
        for agent in self.agents:
            text = agent.read_log(namespace, pod, container, previous)
            if text is not None:
                return text
        return None

    @property
    def s3_endpoint(self) -> str | None:
        return self.s3.endpoint if self.s3 else None

    @property
    def s3_env(self) -> dict[str, str]:
        return self.s3.env() if self.s3 else {}

    def node(self, name: str) -> NodeAgent:
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise KeyError(name)

    def agent_for(self, namespace: str, pod: str) -> NodeAgent | None:
        """The agent running pod namespace/pod, if any."""
        for agent in self.agents:
            if agent.pids(namespace, pod) or agent._runner(namespace, pod) is not None:
                return agent
        return None

    def fault(self, namespace: str, pod: str, action: str) -> None:
        agent = self.agent_for(namespace, pod)
        if agent is None:
            raise KeyError(f"pod {namespace}/{pod} runs on no sandbox node")
        agent.fault(namespace, pod, action)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> Sandbox:
        t0 = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._reaper = Reaper()
        self._upstream = self._start_real() if self.real else self._start_emulated()
        self.api = Kube(self.kubeconfig)
        if self.want_s3:
            self.s3 = S3Server().start()
            self._reaper.add(self.s3.pid)
            self.s3.create_bucket(DEFAULT_BUCKET)
        if self.want_crds:
            install_crds(self.api, CRD_DIR)
        # Each node a /16 of 127.0.0.0/8 picked at random: sandboxes running at the same time
        # (parallel test workers) then almost never hand out the same pod address.
        networks = random.sample(range(1, 255), self.node_count)
        for i in range(self.node_count):
            agent = NodeAgent(
                Kube(self.kubeconfig),
                f"node-{i}",
                self.capacity,
                self.workdir / "nodes" / f"node-{i}",
                pod_cidr=f"127.{networks[i]}.0.0/16",
                pvc_root=self.workdir / "pvc",
                heartbeat_seconds=self.heartbeat_seconds,
                pod_kubeconfig=self.kubeconfig,
                extra_env=self.s3_env,
                runtimes=self.runtimes,
            )
            self.agents.append(agent.start())
        if self.real:
            self.provisioner = Provisioner(Kube(self.kubeconfig), self.workdir / "pvc").install().start()
            if self.want_fault_proxy:
                self.proxy = start_fault_proxy(self._upstream, self.workdir / "faultproxy")
        else:
            self.server.register_log_source(self.logs)
            if self.want_binder:
                self.binder = Binder(Kube(self.kubeconfig)).start()
                from llmops.sandbox.deployments import DeploymentController

                self.deployments = DeploymentController(Kube(self.kubeconfig)).start()
        if self.want_operator and operator_available():
            self._start_operator()

    def _start_emulated(self) -> str:
        from llmops.sandbox.apiserver import ApiServer

        self.server = ApiServer(host="127.0.0.1", port=self.port)
        self.server.start()
        self.server.write_kubeconfig(self.kubeconfig)
        return self.kubeconfig

    def _start_real(self) -> str:
        """Start (or join) the real control plane; returns the kubeconfig the operator's proxy forwards with."""
        cp = self.control_plane
        if isinstance(cp, ControlPlane):
            if not cp.started:
                cp.start()
                self._own_control_plane = True
            admin, operator = Path(cp.kubeconfig), Path(cp.operator_kubeconfig)
        else:
            assert isinstance(cp, Path)
            admin = operator = cp
        shutil.copyfile(admin, self.kubeconfig)
        return str(operator if operator.is_file() else admin)

    def _start_operator(self) -> None:
        """The hook for the operator: `llmops operator` against this sandbox's kubeconfig."""
        kubeconfig = self.operator_kubeconfig
        argv = [sys.executable, "-m", "llmops.cli", "operator", "--kubeconfig", kubeconfig,
                "--standalone", "--metrics-port", "0", "--liveness", "", *self.operator_args]  # fmt: skip
        env = {**os.environ, **self.s3_env, "KUBECONFIG": kubeconfig}
        with open(self.workdir / "operator.log", "ab") as out:
            self.operator = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        assert self._reaper is not None
        self._reaper.add(self.operator.pid)

    def restart_operator(self, *, kill: bool = False) -> None:
        """Stop the operator process (SIGTERM as in a rolling update, or SIGKILL as in a node
        loss) and start a fresh one on the same cluster state."""
        if kill and self.operator is not None:
            os.killpg(self.operator.pid, signal.SIGKILL)
            self.operator.wait(10)
            self.operator = None
        self._stop_operator()
        self._start_operator()

    def _stop_operator(self) -> None:
        if self.operator is not None:
            self.operator.send_signal(signal.SIGTERM)
            try:
                self.operator.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.operator.pid, signal.SIGKILL)
                self.operator.wait()
            self.operator = None

    def stop(self) -> None:
        self._stop_operator()
        if self.proxy is not None:
            self.proxy.stop()
            self.proxy = None
        if self.provisioner is not None:
            self.provisioner.stop()
            self.provisioner.kube.close()
            self.provisioner = None
        if self.deployments is not None:
            self.deployments.stop()
            self.deployments.kube.close()
            self.deployments = None
        if self.binder is not None:
            self.binder.stop()
            self.binder.kube.close()
            self.binder = None
        for agent in self.agents:
            agent.stop(deregister=isinstance(self.control_plane, Path))  # a cluster we did not start keeps no stale Nodes
            agent.kube.close()
        self.agents = []
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        if self.api is not None:
            self.api.close()
            self.api = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._own_control_plane and isinstance(self.control_plane, ControlPlane):
            self.control_plane.stop()
            self._own_control_plane = False
        if self._reaper is not None:
            self._reaper.close()
            self._reaper = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_fault_proxy(upstream_kubeconfig: str, workdir: Path) -> Any:
    """The operator's way to a real API server: through a fault proxy, so scenarios inject the
    same faults as on the emulated server."""
    from llmops.sandbox.faultproxy import FaultProxy

    proxy = FaultProxy(upstream_kubeconfig, workdir)
    proxy.start()
    return proxy


def install_project_crds(kubeconfig: str | Path) -> list[str]:
    """The project's CRDs (crds/) installed on the cluster of ``kubeconfig`` and served."""
    kube = Kube(str(kubeconfig))
    try:
        return install_crds(kube, CRD_DIR)
    finally:
        kube.close()


def install_crds(kube: Kube, directory: Path, timeout: float = 30.0) -> list[str]:
    """Create or replace every CRD in `directory`, then wait until each is served."""
    names = []
    path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
    for file in sorted(directory.glob("*.yaml")) if directory.is_dir() else []:
        for doc in yaml.safe_load_all(file.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            try:
                kube.request("POST", path, doc)
            except ApiException as exc:
                if not is_status(exc, 409):
                    raise
                current = kube.get(f"{path}/{name}")
                doc["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                kube.request("PUT", f"{path}/{name}", doc)
            names.append(name)
            wait_served(kube, doc, timeout)
    return names


def wait_served(kube: Kube, crd: Mapping[str, Any], timeout: float) -> None:
    group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("served", True))
    deadline = time.monotonic() + timeout
    while True:
        try:
            resources = kube.get(f"/apis/{group}/{version}").get("resources") or []
            if any(r.get("name") == plural for r in resources):
                # Discovery lists a new CRD before its watch cache is up: a real server then
                # answers a cached list or watch 429 "storage is (re)initializing" (a watcher
                # started now logs an error). A list from the cache (resourceVersion=0) waits.
                kube.get(f"/apis/{group}/{version}/{plural}?limit=1&resourceVersion=0")
                return
        except ApiException:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRD {plural}.{group} not served after {timeout}s")
        time.sleep(0.05)
