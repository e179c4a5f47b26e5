"""The node agent: a Node, its Lease heartbeat, and the pods bound to it (see ``pod``).

Three loops, each level-triggered: a watch on pods with ``spec.nodeName=<node>`` (the only
pods this agent runs, so it works unchanged beside a real scheduler), a watch on all pods
that keeps the hosts file of headless-Service names current, and a heartbeat that renews the
node's Lease in kube-node-lease and refreshes the Ready condition. Watches resume from the
last resourceVersion (bookmarks included); a 410 or any broken stream leads to a fresh
list, and the list is diffed against what the agent runs, so a missed event cannot strand a
pod.

Pod IPs come from ``pod_cidr`` (a /16 of 127.0.0.0/8 per node; the whole block routes to
loopback on Linux), so pods of one sandbox never collide and each can bind its own ports.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from llmops.sandbox.node import hosts as hostsfile
from llmops.sandbox.node.client import ApiException, Kube, WatchGone, is_status
from llmops.sandbox.node.pod import FAULT_ANNOTATION, Host, PodRunner, now_rfc3339
from llmops.sandbox.node.process import Reaper
from llmops.sandbox.node.runtimes import ImageRuntime
from llmops.sandbox.node.spec import decode_secret

log = logging.getLogger(__name__)

NODE_LEASE_NAMESPACE = "kube-node-lease"
AGENT_LABEL = "sandbox.llmops.dev/agent"  # node agent writes "true" on its Node; tests and docs read it
__all__ = ["AGENT_LABEL", "FAULT_ANNOTATION", "NodeAgent", "parse_capacity"]


def parse_capacity(text: str) -> dict[str, str]:
    """`cpu=4,memory=16Gi,nvidia.com/gpu=8` -> {"cpu": "4", ...}."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"capacity item {item!r} is not NAME=QUANTITY")
        out[key.strip()] = value.strip()
    return out


def micro_time(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1e6):06d}Z"


class IpPool:
    """Pod IPs from one network, handed out round-robin from a random start.

    .0 and .1 are kept back (.1 is the node's own address). Addresses are not reused until
    the pool wraps around, and the random start keeps consecutive runs apart: a listener
    closed a moment ago leaves its address:port in TIME_WAIT, and a new pod given the same
    address could not bind that port.
    """

    def __init__(self, cidr: str, seed: int | None = None) -> None:
        self.network = ipaddress.ip_network(cidr)
        self._size = self.network.num_addresses - 2  # hosts .2 ... broadcast-1
        if self._size < 1:
            raise ValueError(f"pod CIDR {cidr} is too small")
        self._next = random.Random(seed).randrange(self._size)
        self._used: set[str] = set()
        self._lock = threading.Lock()

    @property
    def node_ip(self) -> str:
        return str(self.network.network_address + 1)

    def take(self) -> str:
        with self._lock:
            for _ in range(self._size):
                ip = str(self.network.network_address + 2 + self._next)
                self._next = (self._next + 1) % self._size
                if ip not in self._used:
                    self._used.add(ip)
                    return ip
        raise RuntimeError(f"pod CIDR {self.network} exhausted")

    def give(self, ip: str) -> None:
        with self._lock:
            self._used.discard(ip)


def watch_loop(
    kube: Kube,
    path: str,
    stop: threading.Event,
    on_list: Callable[[list[dict[str, Any]]], None],
    on_event: Callable[[str, dict[str, Any]], None],
    timeout_seconds: int = 5,
    **query: Any,
) -> None:
    """List, then watch from the list's resourceVersion; re-list on 410 or any failure."""
    rv: str | None = None
    while not stop.is_set():
        try:
            if rv is None:
                listing = kube.get(path, **query)
                on_list(listing.get("items") or [])
                rv = (listing.get("metadata") or {}).get("resourceVersion", "0")
            for event in kube.watch(path, rv, timeout_seconds=timeout_seconds, **query):
                obj = event.get("object") or {}
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if event.get("type") != "BOOKMARK":
                    on_event(event["type"], obj)
                if stop.is_set():
                    return
        except WatchGone:
            rv = None
        except Exception as exc:  # noqa: BLE001 - a dropped stream or a server restart
            if stop.is_set():
                return
            log.debug("watch %s failed: %s; re-listing", path, exc)
            rv = None
            stop.wait(0.5)


class NodeAgent:
    """Registers Node `name` and runs its pods as process groups; `start()`/`stop()`."""

    def __init__(
        self,
        kube: Kube,
        name: str,
        capacity: Mapping[str, str],
        workdir: str | Path,
        *,
        pod_cidr: str = "127.1.0.0/16",
        pvc_root: str | Path | None = None,
        labels: Mapping[str, str] | None = None,
        taints: list[dict[str, Any]] | None = None,
        heartbeat_seconds: float = 2.0,
        pod_kubeconfig: str | None = None,
        stop_grace_seconds: float = 3.0,
        extra_env: Mapping[str, str] | None = None,
        runtimes: Mapping[str, ImageRuntime] | None = None,
    ) -> None:
        self.kube = kube
        self.runtimes = dict(runtimes or {})  # image -> how this node runs it (node.runtimes)
        self.name = name
        self.capacity = {"pods": "110", **capacity}
        self.workdir = Path(workdir).resolve()
        self.ips = IpPool(pod_cidr)
        self.node_ip = self.ips.node_ip
        self.labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine()),
            AGENT_LABEL: "true",
            **(labels or {}),
        }
        self.taints = taints or []
        self.heartbeat_seconds = heartbeat_seconds
        self.stop_grace_seconds = stop_grace_seconds
        self.hosts_path = self.workdir / "hosts"
        self.pods_dir = self.workdir / "pods"
        self.pvc_root = Path(pvc_root).resolve() if pvc_root else self.workdir / "pvc"
        base_env = dict(os.environ)  # stands in for the image's ENV (PATH, the venv, ...)
        # `python` in a pod's command means this interpreter (the one with llmops_runtime), even
        # when the sandbox was started as .venv/bin/llmops without activating the venv.
        bin_dir = os.path.dirname(sys.executable)
        base_env["PATH"] = os.pathsep.join([bin_dir, *(p for p in base_env.get("PATH", "").split(os.pathsep) if p and p != bin_dir)])
        base_env[hostsfile.HOSTS_FILE_ENV] = str(self.hosts_path)
        if pod_kubeconfig:
            base_env["KUBECONFIG"] = pod_kubeconfig  # pods reach the API with the sandbox kubeconfig
        base_env.update(extra_env or {})  # e.g. the sandbox's S3 endpoint and credentials
        self._base_env = base_env
        self._stop = threading.Event()
        self._ready = True
        self._annotated_not_ready = False
        self._runners: dict[str, PodRunner] = {}  # by pod uid
        self._finished: set[str] = set()  # uids run to the end here: never started again
        self._lock = threading.RLock()
        self._hosts: dict[str, tuple[str, list[str]]] = {}
        self._hosts_text = ""
        self._threads: list[threading.Thread] = []
        self.reaper: Reaper | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.node_uid: str | None = None

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> NodeAgent:
        for d in (self.workdir, self.pods_dir, self.pvc_root):
            d.mkdir(parents=True, exist_ok=True)
        self.hosts_path.write_text(hostsfile.render([]))
        self.reaper = Reaper()
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"probe-{self.name}")
        try:
            self._register()
        except BaseException:
            self.reaper.close()  # nothing may outlive a failed start
            self.executor.shutdown(wait=False)
            raise
        self._host = Host(
            kube=self.kube, node_name=self.name, node_ip=self.node_ip, reaper=self.reaper, executor=self.executor,
            pods_dir=self.pods_dir, pvc_root=self.pvc_root, base_env=self._base_env, lookup=self._lookup,
            runtimes=self.runtimes,
        )  # fmt: skip
        pods_query = {"fieldSelector": f"spec.nodeName={self.name}"}
        for target, name in (
            (lambda: watch_loop(self.kube, "/api/v1/pods", self._stop, self._on_pod_list, self._on_pod_event, **pods_query), "pods"),
            (lambda: watch_loop(self.kube, "/api/v1/pods", self._stop, self._on_hosts_list, self._on_hosts_event), "hosts"),
            (self._heartbeat_loop, "heartbeat"),
        ):
            thread = threading.Thread(target=target, name=f"node-{self.name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, deregister: bool = False) -> None:
        """Stop loops and kill every pod process: SIGTERM, a short grace, SIGKILL."""
        self._stop.set()
        with self._lock:
            runners = list(self._runners.values())
        for r in runners:
            r.stop()
        for r in runners:
            r.finished.wait(5)
        procs = [p for r in runners for p in r.all_procs()]
        for p in procs:
            p.signal(15)
            p.signal(18)  # SIGCONT: frozen processes must run to exit
        deadline = time.monotonic() + self.stop_grace_seconds
        while any(p.popen.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        for p in procs:
            if p.popen.poll() is None:
                p.kill_now()
            else:
                p.poll()
        if self.reaper is not None:
            self.reaper.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
        for thread in self._threads:
            thread.join(timeout=10)
        if deregister:
            with contextlib.suppress(Exception):  # best effort on the way out
                self.kube.request("DELETE", f"/api/v1/nodes/{self.name}")
        for r in runners:
            if r.dirs is not None:
                r.dirs.cleanup()

    def __enter__(self) -> NodeAgent:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the Node and its heartbeat ----------------------------------------------------------
    def _conditions(self, ready: bool) -> list[dict[str, Any]]:
        now = now_rfc3339()
        conds = [
            {"type": t, "status": "False", "reason": f"KubeletHas{r}", "message": f"kubelet has {m}",
             "lastHeartbeatTime": now, "lastTransitionTime": self._start_time}
            for t, r, m in (("MemoryPressure", "SufficientMemory", "sufficient memory available"),
                            ("DiskPressure", "NoDiskPressure", "no disk pressure"),
                            ("PIDPressure", "SufficientPID", "sufficient PID available"))
        ]  # fmt: skip
        ready_cond = (
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}
            if ready
            else {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status."}
        )
        if ready_cond["status"] != getattr(self, "_ready_status", None):
            self._ready_since = now
            self._ready_status = ready_cond["status"]
        ready_cond.update(lastHeartbeatTime=now, lastTransitionTime=self._ready_since)
        return [*conds, ready_cond]

    def _node_status(self, ready: bool) -> dict[str, Any]:
        return {
            "capacity": dict(self.capacity),
            "allocatable": dict(self.capacity),
            "conditions": self._conditions(ready),
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                "osImage": "llmops sandbox", "containerRuntimeVersion": "sandbox://process",
                "kubeletVersion": "v1.32.0-llmops-sandbox", "kubeProxyVersion": "", "operatingSystem": "linux",
                "architecture": self.labels["kubernetes.io/arch"],
            },
        }  # fmt: skip

    def _register(self) -> None:
        self._start_time = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "spec": {"taints": self.taints} if self.taints else {},
        }
        try:
            node = self.kube.request("POST", "/api/v1/nodes", body)
        except ApiException as exc:
            if not is_status(exc, 409):
                raise
            patch = {"metadata": {"labels": self.labels}, "spec": {"unschedulable": None}}
            node = self.kube.patch_merge(f"/api/v1/nodes/{self.name}", patch)
        self.node_uid = node["metadata"].get("uid")
        self.kube.patch_merge(f"/api/v1/nodes/{self.name}/status", {"status": self._node_status(True)})
        try:
            lease_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NODE_LEASE_NAMESPACE}}
            self.kube.request("POST", "/api/v1/namespaces", lease_ns)
        except ApiException as exc:
            if not is_status(exc, 409, 403):
                raise
        self._renew_lease()

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"
        spec = {"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": micro_time()}
        try:
            self.kube.patch_merge(f"{path}/{self.name}", {"spec": spec})
        except ApiException as exc:
            if not is_status(exc, 404):
                raise
            owner = [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": self.node_uid}] if self.node_uid else []
            self.kube.request("POST", path, {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.name, "namespace": NODE_LEASE_NAMESPACE, "ownerReferences": owner},
                "spec": spec,
            })  # fmt: skip

    def _heartbeat_loop(self) -> None:
        beats = 0
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._node_fault_annotation()
            except Exception as exc:  # noqa: BLE001 - retried next beat
                log.info("node %s: reading node annotations failed: %s", self.name, exc)
            if not self._ready:
                continue  # NotReady fault: silence, as a partitioned kubelet would be
            beats += 1
            try:
                self._renew_lease()
                if beats % 5 == 0:
                    self.kube.patch_merge(f"/api/v1/nodes/{self.name}/status", {"status": self._node_status(True)})
            except Exception as exc:  # noqa: BLE001 - retried next beat
                log.info("node %s: heartbeat failed: %s", self.name, exc)

    def _node_fault_annotation(self) -> None:
        """`kubectl annotate node N sandbox.llmops.dev/fault=not-ready` (remove it to recover)."""
        annotations = self.kube.get(f"/api/v1/nodes/{self.name}")["metadata"].get("annotations") or {}
        not_ready = annotations.get(FAULT_ANNOTATION) == "not-ready"
        if not_ready != self._annotated_not_ready:  # act on changes only: set_ready() may be used too
            self._annotated_not_ready = not_ready
            self.set_ready(not not_ready)

    def set_ready(self, ready: bool) -> None:
        """Fault: `False` stops heartbeats and marks the Node Ready=Unknown; `True` resumes."""
        self._ready = ready
        self.kube.patch_merge(f"/api/v1/nodes/{self.name}/status", {"status": {"conditions": self._conditions(ready)}})
        if ready:
            self._renew_lease()

    # --- pods ------------------------------------------------------------------------------
    def _lookup(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        resource = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
        try:
            obj = self.kube.get(f"/api/v1/namespaces/{namespace}/{resource}/{name}")
        except ApiException as exc:
            if is_status(exc, 404):
                return None
            raise
        if kind == "Secret":
            return decode_secret(obj)
        return {**(obj.get("data") or {}), **{k: v for k, v in (obj.get("binaryData") or {}).items()}}

    def _on_pod_list(self, items: list[dict[str, Any]]) -> None:
        seen = set()
        for pod in items:
            seen.add(pod["metadata"]["uid"])
            self._on_pod_event("MODIFIED", pod)
        with self._lock:
            vanished = [r for uid, r in self._runners.items() if uid not in seen]
        for r in vanished:
            r.server_deleted()

    def _on_pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        if (pod.get("spec") or {}).get("nodeName") != self.name:
            return
        uid = pod["metadata"]["uid"]
        with self._lock:
            runner = self._runners.get(uid)
            if kind == "DELETED":
                if runner is not None:
                    runner.server_deleted()
                return
            if runner is not None:
                runner.update(pod)
                return
            phase = (pod.get("status") or {}).get("phase")
            if self._stop.is_set():
                return
            if uid in self._finished:
                return  # a late event about a pod this agent already ran to the end
            if phase in ("Succeeded", "Failed"):
                # Not ours to run (finished before this agent started); finish a pending deletion.
                if pod["metadata"].get("deletionTimestamp"):
                    self._finalize_foreign(pod)
                return
            runner = PodRunner(self._host, pod, self.ips.take(), self._runner_exited)
            self._runners[uid] = runner
        runner.start()

    def _finalize_foreign(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with contextlib.suppress(ApiException):
            self.kube.request(
                "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )  # fmt: skip

    def _runner_exited(self, runner: PodRunner) -> None:
        if self._stop.is_set() or runner.crashed:
            return  # stop() still needs the runner; a crashed pod must not be started twice
        with self._lock:
            self._runners.pop(runner.uid, None)
            self._finished.add(runner.uid)
        self.ips.give(runner.pod_ip)

    def _runner(self, namespace: str, name: str) -> PodRunner | None:
        with self._lock:
            for r in self._runners.values():
                if r.namespace == namespace and r.name == name:
                    return r
        return None

    def fault(self, namespace: str, name: str, action: str) -> None:
        """kill | exit=N | freeze | thaw | stuck-terminating | unstick, for pod namespace/name."""
        runner = self._runner(namespace, name)
        if runner is None:
            raise KeyError(f"pod {namespace}/{name} does not run on node {self.name}")
        runner.fault(action)

    def pids(self, namespace: str, name: str) -> dict[str, int]:
        """Leader pid of every running container of the pod (for tests and debugging)."""
        runner = self._runner(namespace, name)
        return runner.pids() if runner else {}

    def read_log(self, namespace: str, pod: str, container: str | None = None, previous: bool = False) -> str | None:
        runner = self._runner(namespace, pod)
        if runner is None:
            return None
        if not container and runner.containers:
            container = runner.containers[0].name
        return runner.log_text(container or "", previous)

    # --- hosts file -------------------------------------------------------------------------
    def _on_hosts_list(self, items: list[dict[str, Any]]) -> None:
        with self._lock:
            self._hosts = {}
        for pod in items:
            self._on_hosts_event("MODIFIED", pod, write=False)
        self._write_hosts()

    def _on_hosts_event(self, kind: str, pod: dict[str, Any], write: bool = True) -> None:
        uid = pod["metadata"].get("uid", "")
        ip = (pod.get("status") or {}).get("podIP")
        names = hostsfile.pod_names(pod)
        with self._lock:
            if kind == "DELETED" or not ip or not names:
                changed = self._hosts.pop(uid, None) is not None
            else:
                changed = self._hosts.get(uid) != (ip, names)
                self._hosts[uid] = (ip, names)
        if changed and write:
            self._write_hosts()

    def _write_hosts(self) -> None:
        with self._lock:
            text = hostsfile.render(self._hosts.values())
            if text == self._hosts_text:
                return
            tmp = self.hosts_path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(self.hosts_path)  # atomic: readers never see half a file
            self._hosts_text = text
