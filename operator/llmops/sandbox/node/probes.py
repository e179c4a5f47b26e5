"""Readiness, startup and liveness probes: how to run one check, and when a probe flips.

A probe is checked every ``periodSeconds`` after ``initialDelaySeconds`` from container
start; ``failureThreshold`` consecutive failures flip it to failed and ``successThreshold``
consecutive successes flip it back, as the kubelet does. Until a startup probe succeeds the
other two are not run. Checks run on a worker pool so a slow endpoint never blocks the pod's
loop; the tracker below is pure (times are passed in).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class ProbeTracker:
    """Counts consecutive results of one probe of one container run."""

    spec: Mapping[str, Any]
    started_at: float
    initial: bool = False  # result before the first flip (readiness: False, liveness: True)
    passing: bool = field(init=False)
    successes: int = 0
    failures: int = 0
    last_run: float | None = None
    last_message: str = ""

    def __post_init__(self) -> None:
        self.passing = self.initial

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    def due(self, now: float) -> bool:
        if now < self.started_at + float(self.spec.get("initialDelaySeconds", 0)):
            return False
        return self.last_run is None or now >= self.last_run + self.period

    def record(self, ok: bool, message: str, now: float) -> bool:
        """Fold one result in; returns True when `passing` flipped."""
        self.last_run = now
        self.last_message = message
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            flip = not self.passing and self.successes >= int(self.spec.get("successThreshold", 1))
        else:
            self.successes, self.failures = 0, self.failures + 1
            flip = self.passing and self.failures >= int(self.spec.get("failureThreshold", 3))
            # a probe that starts "not passing" (readiness) has nothing to flip on failure
        if flip:
            self.passing = not self.passing
        return flip


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"named port {port!r} not found in container")


def run_check(
    spec: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, env: Mapping[str, str], cwd: Path
) -> tuple[bool, str]:
    """One probe execution -> (success, message). Never raises."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            get = spec["httpGet"]
            host = get.get("host") or pod_ip
            conn_cls = http.client.HTTPSConnection if get.get("scheme") == "HTTPS" else http.client.HTTPConnection
            conn = conn_cls(host, resolve_port(get["port"], container), timeout=timeout)
            try:
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                conn.request("GET", get.get("path", "/"), headers=headers)
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400, f"HTTP probe failed with statuscode: {status}"
        if "tcpSocket" in spec:
            port = resolve_port(spec["tcpSocket"]["port"], container)
            with socket.create_connection((spec["tcpSocket"].get("host") or pod_ip, port), timeout=timeout):
                return True, ""
        if "exec" in spec:
            done = subprocess.run(
                spec["exec"]["command"], env=dict(env), cwd=str(cwd), capture_output=True, timeout=timeout
            )
            out = (done.stdout + done.stderr).decode(errors="replace").strip()
            return done.returncode == 0, out or f"command exited with {done.returncode}"
        if "grpc" in spec:
            return False, "grpc probes are not supported by the sandbox agent"
        return False, "probe has no handler"
    except subprocess.TimeoutExpired:
        return False, f"command timed out after {timeout}s"
    except (OSError, ValueError, http.client.HTTPException) as exc:
        return False, f"probe error: {exc}"
