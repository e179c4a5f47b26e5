"""One pod's life on the sandbox node, and the kubelet-shaped status it reports.

A ``PodRunner`` owns one thread that ticks every ``TICK`` seconds: it starts init containers
one by one, then the containers; reaps exits; enforces memory limits; folds probe results;
applies faults; restarts containers per ``restartPolicy`` with a short exponential back-off
(0.5 s doubling to 8 s: a sandbox favours fast tests over a kubelet's 10 s..5 min); and on
deletion sends SIGTERM, waits the grace period, sends SIGKILL, writes the final status and
deletes the pod with grace 0 as the kubelet does. After each tick it computes the whole
status (``pod_status``, pure) and patches it only if it changed, so an idle pod costs no
writes.

Phases: Pending until every init container succeeded and every container has started;
Running while any container runs or will be restarted; Succeeded when all ended with 0 and
none will restart; Failed when all ended, one failed, and none will restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llmops_runtime.localenv import POD_IP

from llmops.api import labels as L
from llmops.api import runtime_env as E
from llmops.sandbox.node import probes, spec, volumes
from llmops.sandbox.node.client import ApiException, Kube, is_status
from llmops.sandbox.node.process import Proc, Reaper, group_rss
from llmops.sandbox.node.runtimes import ImageRuntime
from llmops.sandbox.node.runtimes import lookup as image_runtime

log = logging.getLogger(__name__)

TICK = 0.1
BACKOFF_BASE = 0.5
BACKOFF_MAX = 8.0
FAULT_ANNOTATION = "sandbox.llmops.dev/fault"  # tests write; the node agent reads and acts once per value
MAX_TERMINATION_MESSAGE = 4096


def now_rfc3339(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rendezvous_port(pod: Mapping[str, Any], port: str) -> int:
    """The c10d store port a sandbox pod really uses. On a cluster every pod has its own network
    namespace, so every job can use the same port; here all pods are processes of one host and
    torch's store listens on all addresses, so two jobs (or two attempts) on one port would meet
    each other. Each (job, attempt) gets its own port, the same on all its pods. The job is
    known by its uid (the pods' controller): two sandboxes side by side (a test run on both
    control planes at once) run jobs of the same name, and one port for both meant
    EADDRINUSE on the second rank 0."""
    meta = pod.get("metadata") or {}
    job = (meta.get("labels") or {}).get(L.JOB_NAME)
    if not job:
        return int(port)
    owner = next((r.get("uid") for r in meta.get("ownerReferences") or [] if r.get("controller")), None)
    key = f"{owner or meta.get('namespace') + '/' + job}/{(meta.get('labels') or {}).get(L.ATTEMPT, '0')}/{port}"
    return 10000 + int(hashlib.sha256(key.encode()).hexdigest(), 16) % 18000  # below the ephemeral range

@dataclass
class Host:
    """What a pod runner needs from its agent."""

    kube: Kube
    node_name: str
    node_ip: str
    reaper: Reaper
    executor: ThreadPoolExecutor
    pods_dir: Path
    pvc_root: Path
    base_env: Mapping[str, str]
    lookup: spec.Lookup
    runtimes: Mapping[str, ImageRuntime] = field(default_factory=dict)  # image -> how this node runs it


@dataclass
class Container:
    """Runtime state of one (init) container of the pod."""

    spec: dict[str, Any]
    init: bool
    proc: Proc | None = None
    restart_count: int = 0
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    started: bool = False
    probes: dict[str, probes.ProbeTracker] = field(default_factory=dict)
    inflight: dict[str, Future[tuple[bool, str]]] = field(default_factory=dict)
    backoff_until: float = 0.0
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = Path(".")
    kill_reason: str | None = None  # why the agent killed it: OOMKilled, a fault, liveness
    fault_exit: int | None = None  # exit code a fault asked to report
    done: bool = False  # terminated and will not be restarted
    recorded: bool = True  # the current process's exit has been folded into `state`

    @property
    def name(self) -> str:
        return self.spec["name"]

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.exit is None

    @property
    def unreaped(self) -> bool:
        """A process exists whose exit is not yet recorded (running, or just killed)."""
        return self.proc is not None and not self.recorded


def will_restart(policy: str, exit_code: int) -> bool:
    return policy == "Always" or (policy == "OnFailure" and exit_code != 0)


def pod_phase(policy: str, init_done: bool, init_failed: bool, containers: list[Container]) -> str:
    if init_failed:
        return "Failed"
    if not init_done:
        return "Pending"
    if any(c.proc is None and not c.done and c.restart_count == 0 for c in containers):
        return "Pending"
    if all(c.done for c in containers):
        codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in containers]
        return "Succeeded" if all(code == 0 for code in codes) else "Failed"
    return "Running"


def container_status(c: Container, node: str) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": c.name,
        "image": c.spec.get("image", ""),
        "imageID": "",
        "ready": c.ready,
        "started": c.running and (c.started or c.init),
        "restartCount": c.restart_count,
        "state": c.state,
        "lastState": c.last_state,
    }
    if c.proc is not None:
        status["containerID"] = f"sandbox://{node}/{c.proc.pid}"
    return status


def condition(conds: dict[str, dict[str, Any]], kind: str, ok: bool, reason: str | None = None,
              message: str | None = None) -> dict[str, Any]:
    """A pod condition whose lastTransitionTime moves only when its status flips."""
    status = "True" if ok else "False"
    old = conds.get(kind)
    cond: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None}
    cond["lastTransitionTime"] = old["lastTransitionTime"] if old and old["status"] == status else now_rfc3339()
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


class PodRunner:
    """Runs one pod (see the module essay)."""

    def __init__(self, host: Host, pod: dict[str, Any], pod_ip: str, on_exit: Callable[[PodRunner], None]) -> None:
        self.host = host
        self.pod = pod
        self.pod_ip = pod_ip
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"].get("namespace", "default")
        self.name: str = pod["metadata"]["name"]
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._gone = False  # the server no longer has the pod
        self._stop = threading.Event()
        self._faults: list[str] = []
        self._applied_fault: str | None = None
        self.stuck_terminating = False
        self.crashed = False
        pod_spec = pod.get("spec") or {}
        self.policy: str = pod_spec.get("restartPolicy", "Always")
        self.init = [Container(dict(c), True) for c in pod_spec.get("initContainers") or []]
        self.containers = [Container(dict(c), False) for c in pod_spec.get("containers") or []]
        self.init_index = 0
        self.init_failed = False
        self.dirs: volumes.PodDirs | None = None
        self.config_error: str | None = None
        self._prepare_after = 0.0
        self.start_time = now_rfc3339()
        self._conds: dict[str, dict[str, Any]] = {}
        self._last_status: dict[str, Any] | None = None
        self._terminating_since: float | None = None
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.namespace}/{self.name}", daemon=True)

    # --- inputs from the agent ------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def update(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self.pod = pod

    def server_deleted(self) -> None:
        with self._lock:
            self._gone = True

    def fault(self, action: str) -> None:
        with self._lock:
            self._faults.append(action)

    def stop(self) -> None:
        """Agent shutdown: end the loop; the agent kills what is left."""
        self._stop.set()

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.init + self.containers if c.proc is not None and c.running}

    def all_procs(self) -> list[Proc]:
        return [c.proc for c in self.init + self.containers if c.proc is not None and c.running]

    def log_text(self, container: str, previous: bool = False) -> str | None:
        if self.dirs is None:
            return None
        for c in self.init + self.containers:
            if c.name == container:
                index = c.restart_count - (1 if previous else 0)
                path = self.dirs.logs / f"{container}-{index}.log"
                return path.read_text(errors="replace") if path.exists() else ""
        return None

    # --- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    pod, gone, faults = self.pod, self._gone, self._faults
                    self._faults = []
                if self._tick(pod, gone, faults):
                    break
                self._stop.wait(TICK)
        except Exception:  # noqa: BLE001 - a runner must never take the agent down
            log.exception("pod %s/%s: runner crashed", self.namespace, self.name)
            self.crashed = True  # the agent keeps it registered, so the pod is not started twice
        finally:
            self.finished.set()
            self._on_exit(self)

    def _tick(self, pod: dict[str, Any], gone: bool, faults: list[str]) -> bool:
        """One step; True when the pod is finished here (deleted and cleaned up)."""
        now = time.time()
        annotated = ((pod.get("metadata") or {}).get("annotations") or {}).get(FAULT_ANNOTATION)
        if annotated and annotated != self._applied_fault:
            self._applied_fault = annotated
            faults = [*faults, annotated]
        for action in faults:
            self._apply_fault(action)
        deleting = gone or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
        if deleting and not self.stuck_terminating:
            return self._terminate(pod, gone, now)
        if self.dirs is None and not deleting and now >= self._prepare_after:
            self._prepare_after = now + 1.0  # a missing ConfigMap is re-read once a second, not every tick
            self._prepare(pod)
        if self.dirs is not None and not deleting:
            self._drive(now)
        if not gone:
            self._publish(pod)
        return False

    def _prepare(self, pod: dict[str, Any]) -> None:
        h = self.host
        try:
            pod_dir = h.pods_dir / f"{self.namespace}_{self.name}_{self.uid[:8]}"
            self.dirs = volumes.prepare(pod, pod_dir, h.pvc_root, h.lookup, self.pod_ip)
            (self.dirs.root / "dev").mkdir(exist_ok=True)
            self.config_error = None
        except (spec.ConfigError, OSError, ApiException) as exc:
            self.config_error = str(exc)
            for c in self.init + self.containers:
                c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}

    def _start(self, c: Container, now: float) -> None:
        assert self.dirs is not None
        h = self.host
        try:
            image = image_runtime(h.runtimes, c.spec.get("image", "")) or ImageRuntime()
            base = {**image.env(h.base_env), POD_IP: self.pod_ip, "HOSTNAME": (self.pod.get("spec") or {}).get("hostname") or self.name}
            base.update(volumes.mount(self.dirs, c.spec))
            c.env = spec.container_env(self.pod, c.spec, self.pod_ip, h.lookup, base)
            if E.MASTER_PORT in c.env:
                c.env[E.MASTER_PORT] = str(rendezvous_port(self.pod, c.env[E.MASTER_PORT]))
            argv = image.argv(spec.command_line(c.spec, c.env), c.env)
            c.cwd = volumes.working_dir(self.dirs, c.spec)
            self._termination_path(c).unlink(missing_ok=True)
            c.proc = Proc(argv, c.env, c.cwd, self.dirs.logs / f"{c.name}-{c.restart_count}.log", h.reaper)
        except (spec.ConfigError, ValueError, ApiException) as exc:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}}
            c.backoff_until = now + 1.0
            return
        except OSError as exc:  # command not found, not executable: kubelet reports StartError 128
            self._terminated(c, 128, None, "StartError", str(exc), now, now)
            return
        c.kill_reason, c.fault_exit, c.recorded = None, None, False
        c.state = {"running": {"startedAt": now_rfc3339(c.proc.started_at)}}
        c.probes = {}
        for kind, initial in (("startupProbe", False), ("readinessProbe", False), ("livenessProbe", True)):
            if c.spec.get(kind) and not c.init:
                c.probes[kind] = probes.ProbeTracker(c.spec[kind], c.proc.started_at, initial=initial)
        c.started = "startupProbe" not in c.probes
        c.ready = not c.init and "readinessProbe" not in c.probes and c.started

    def _termination_path(self, c: Container) -> Path:
        assert self.dirs is not None
        return self.dirs.root / c.spec.get("terminationMessagePath", "/dev/termination-log").lstrip("/")

    def _terminated(self, c: Container, code: int, sig: int | None, reason: str, message: str, started: float, now: float) -> None:
        state: dict[str, Any] = {"exitCode": code, "reason": reason, "startedAt": now_rfc3339(started), "finishedAt": now_rfc3339(now)}
        if sig:
            state["signal"] = sig
        if message:
            state["message"] = message[-MAX_TERMINATION_MESSAGE:]
        c.state = {"terminated": state}
        c.ready = False
        restart = (not self.init_failed) and will_restart(self.policy, code) and self._terminating_since is None
        if c.init:
            restart = restart and code != 0  # init containers never re-run after success
        if restart:
            c.backoff_until = now + min(BACKOFF_BASE * (2 ** c.restart_count), BACKOFF_MAX)
        else:
            c.done = True

    def _reap(self, c: Container, now: float) -> None:
        assert c.proc is not None
        exit = c.proc.poll()
        if exit is None or c.recorded:
            return
        c.recorded = True
        code, sig = exit.exit_code, exit.signal
        if c.fault_exit is not None:
            code, sig = c.fault_exit, None
        reason = c.kill_reason or ("Completed" if code == 0 else "Error")
        message = ""
        with contextlib.suppress(OSError):
            message = self._termination_path(c).read_text(errors="replace").strip()
        if not message and code != 0 and c.spec.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            try:
                tail = c.proc.log_path.read_text(errors="replace").splitlines()[-80:]
                message = "\n".join(tail)[-2048:]
            except OSError:
                pass
        self._terminated(c, code, sig, reason, message, c.proc.started_at, now)

    def _maybe_restart(self, c: Container, now: float) -> None:
        if c.done or c.unreaped:
            return
        if c.proc is None:  # never started (or config error being retried)
            if now >= c.backoff_until:
                self._start(c, now)
            return
        if now < c.backoff_until:
            if "terminated" in c.state:
                c.last_state = {"terminated": c.state["terminated"]}
                message = f"back-off restarting failed container {c.name} in pod {self.name}"
                c.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
            return
        if "terminated" in c.state:
            c.last_state = {"terminated": c.state["terminated"]}
        c.restart_count += 1
        self._start(c, now)

    def _drive(self, now: float) -> None:
        # init containers, strictly in order
        while self.init_index < len(self.init):
            c = self.init[self.init_index]
            if c.unreaped:
                self._reap(c, now)
            if c.done:
                if c.state.get("terminated", {}).get("exitCode") == 0:
                    self.init_index += 1
                    continue
                self.init_failed = True
                return
            self._maybe_restart(c, now)
            return
        if self.init_failed:
            return
        running = [c for c in self.containers if c.running]
        limits = {c.proc.pgid: spec.memory_limit_bytes(c.spec) for c in running if c.proc is not None}
        limits = {pgid: limit for pgid, limit in limits.items() if limit}
        rss = group_rss(limits) if limits else {}
        for c in self.containers:
            if c.running:
                assert c.proc is not None
                if c.proc.pgid in limits and rss.get(c.proc.pgid, 0) > limits[c.proc.pgid]:
                    c.kill_reason = "OOMKilled"
                    c.proc.kill_now()
                else:
                    self._probe(c, now)
            if c.unreaped:
                self._reap(c, now)
            self._maybe_restart(c, now)

    def _probe(self, c: Container, now: float) -> None:
        assert c.proc is not None
        for kind, tracker in c.probes.items():
            if kind != "startupProbe" and not c.started:
                continue
            if kind == "startupProbe" and c.started:
                continue
            future = c.inflight.get(kind)
            if future is not None:
                if not future.done():
                    continue
                del c.inflight[kind]
                ok, message = future.result()
                tracker.record(ok, message, now)
                if kind == "startupProbe" and tracker.passing:
                    c.started = True
                elif kind == "livenessProbe" and not tracker.passing:
                    c.kill_reason = "Error"
                    log.info("pod %s/%s: liveness probe failed, killing %s", self.namespace, self.name, c.name)
                    c.proc.kill_now()
                    return
                elif kind == "startupProbe" and tracker.failures >= int(tracker.spec.get("failureThreshold", 3)):
                    c.kill_reason = "Error"
                    c.proc.kill_now()
                    return
            elif tracker.due(now):
                tracker.last_run = now
                c.inflight[kind] = self.host.executor.submit(probes.run_check, tracker.spec, c.spec, self.pod_ip, c.env, c.cwd)
        readiness = c.probes.get("readinessProbe")
        c.ready = c.started and (readiness is None or readiness.passing)

    def _apply_fault(self, action: str) -> None:
        """kill | exit=N | freeze | thaw | stuck-terminating (see docs/sandbox.md)."""
        action = action.split("#", 1)[0].strip()  # "kill#2" re-triggers a fault with the same verb
        targets = [c for c in self.containers if c.running] or [c for c in self.init if c.running]
        if action == "kill":
            for c in targets:
                c.proc.signal(signal.SIGKILL)  # type: ignore[union-attr]
        elif action.startswith("exit="):
            code = int(action.split("=", 1)[1])
            for c in targets:
                c.fault_exit = code
                c.proc.kill_now()  # type: ignore[union-attr]
        elif action == "freeze":
            for c in targets:
                c.proc.signal(signal.SIGSTOP)  # type: ignore[union-attr]
        elif action == "thaw":
            for c in targets:
                c.proc.signal(signal.SIGCONT)  # type: ignore[union-attr]
        elif action == "stuck-terminating":
            self.stuck_terminating = True
        elif action == "unstick":
            self.stuck_terminating = False
        else:
            log.warning("pod %s/%s: unknown fault %r", self.namespace, self.name, action)

    def _terminate(self, pod: dict[str, Any], gone: bool, now: float) -> bool:
        meta = pod.get("metadata") or {}
        if self._terminating_since is None:
            self._terminating_since = now
            grace = meta.get("deletionGracePeriodSeconds")
            if grace is None:
                grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            self._kill_deadline = now + float(grace)
            for proc in self.all_procs():
                proc.signal(signal.SIGTERM)
                proc.signal(signal.SIGCONT)  # a frozen process must run to handle SIGTERM
        if now >= self._kill_deadline:
            for proc in self.all_procs():
                proc.signal(signal.SIGKILL)
        for c in self.init + self.containers:
            if c.unreaped:
                self._reap(c, now)
        if self.all_procs():
            return False
        for c in self.init + self.containers:
            c.done = True
        if not gone:
            self._publish(pod, final=True)
            try:
                self.host.kube.request(
                    "DELETE",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.name}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
            except ApiException as exc:
                if not is_status(exc, 404, 409):
                    log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)
                    return False
        if self.dirs is not None:
            self.dirs.cleanup()
        return True

    # --- status -----------------------------------------------------------------------------
    def status(self, final: bool = False) -> dict[str, Any]:
        init_done = self.init_index >= len(self.init)
        phase = pod_phase(self.policy, init_done, self.init_failed, self.containers)
        if final and phase in ("Running", "Pending"):
            failed = any(c.state.get("terminated", {}).get("exitCode", 0) != 0 for c in self.containers)
            phase = "Failed" if failed or any("terminated" not in c.state for c in self.containers) else "Succeeded"
        containers_ready = init_done and not self.init_failed and all(c.ready for c in self.containers)
        if phase in ("Succeeded", "Failed"):
            containers_ready = False
        not_ready = [c.name for c in self.containers if not c.ready]
        reason = None if containers_ready else ("PodCompleted" if phase in ("Succeeded", "Failed") else "ContainersNotReady")
        message = None if containers_ready or reason == "PodCompleted" else f"containers with unready status: [{' '.join(not_ready)}]"
        pending_init = [c.name for c in self.init[self.init_index :]]
        conds = [
            condition(self._conds, "PodReadyToStartContainers", self.dirs is not None),
            condition(self._conds, "Initialized", init_done, None if init_done else "ContainersNotInitialized",
                      None if init_done else f"containers with incomplete status: [{' '.join(pending_init)}]"),
            condition(self._conds, "Ready", containers_ready, reason, message),
            condition(self._conds, "ContainersReady", containers_ready, reason, message),
            condition(self._conds, "PodScheduled", True),
        ]  # fmt: skip
        self._conds = {c["type"]: c for c in conds}
        status: dict[str, Any] = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.host.node_ip,
            "hostIPs": [{"ip": self.host.node_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.start_time,
            "containerStatuses": [container_status(c, self.host.node_name) for c in self.containers],
            "qosClass": spec.qos_class(self.pod),
        }
        if self.init:
            status["initContainerStatuses"] = [container_status(c, self.host.node_name) for c in self.init]
        if self.config_error:
            status["message"] = self.config_error
        return status

    def _publish(self, pod: dict[str, Any], final: bool = False) -> None:
        status = self.status(final)
        # A merge patch replaces the whole conditions list: keep, as a kubelet does, the
        # conditions others own (DisruptionTarget from the scheduler or an eviction, readiness
        # gates), or a preempted pod would lose the very condition that says so.
        ours = {c["type"] for c in status["conditions"]}
        status["conditions"] += [c for c in (pod.get("status") or {}).get("conditions") or [] if c.get("type") not in ours]
        if status == self._last_status:
            return
        try:
            self.host.kube.patch_merge(f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status", {"status": status})
            self._last_status = status
        except ApiException as exc:
            if is_status(exc, 404):
                self.server_deleted()
            else:
                log.info("pod %s/%s: status patch failed (%s), will retry", self.namespace, self.name, exc.status)
        except Exception as exc:  # noqa: BLE001 - network errors: retry next tick
            log.info("pod %s/%s: status patch failed (%s), will retry", self.namespace, self.name, exc)
