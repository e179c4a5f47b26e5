"""A real Kubernetes control plane (kube-apiserver, controller manager, scheduler, etcd) for
tests and for `llmops sandbox --control-plane`.

The binaries come in the layout of the project's ``../shared/kube`` directory: a
``start.sh STATE_DIR`` that brings one independent cluster up on free 127.0.0.1 ports and
writes ``STATE_DIR/kubeconfig``, and a ``stop.sh STATE_DIR``. This module only wraps those two
scripts; it never downloads anything. Where this real server and the emulated one
(``llmops.sandbox.apiserver``) disagree, the emulator is wrong.

The directory is found, in order, from ``$LLMOPS_KUBE_DIR`` or ``<repo>/../shared/kube``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from llmops.sandbox.node.process import Reaper

#: Where the control plane's scripts live unless LLMOPS_KUBE_DIR says otherwise.
KUBE_DIR_ENV = "LLMOPS_KUBE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_KUBE_DIR = REPO_ROOT.parent / "shared" / "kube"
# start.sh unpacks the binaries into a per-user cache on first use, through one fixed temporary
# name: two processes starting their first cluster at once (parallel test workers) would write
# it together. Each process's first start holds this lock; later starts find the cache filled.
_FIRST_START_LOCK = Path(tempfile.gettempdir()) / f"llmops-kube-first-start-{os.getuid()}.lock"
_started_once = False


def find_kube_dir(explicit: str | Path | None = None) -> Path | None:
    """The control plane's directory (with start.sh and stop.sh), or None when absent."""
    for candidate in (explicit, os.environ.get(KUBE_DIR_ENV), DEFAULT_KUBE_DIR):
        if candidate and (Path(candidate) / "start.sh").is_file():
            return Path(candidate).resolve()
    return None


class ControlPlane:
    """`with ControlPlane() as cp: cp.kubeconfig` — one real cluster in its own state directory.

    ``audit=True`` writes the apiserver's audit log (``cp.audit_log``); ``gang=False`` leaves
    the alpha gang-scheduling API unserved.
    """

    def __init__(self, kube_dir: str | Path | None = None, state_dir: str | Path | None = None, *,
                 audit: bool = False, gang: bool = True, start_timeout: float = 180.0) -> None:
        found = find_kube_dir(kube_dir)
        if found is None:
            raise FileNotFoundError(f"no control plane found (start.sh in ${KUBE_DIR_ENV}, or {DEFAULT_KUBE_DIR})")
        self.kube_dir = found
        self._own_state = state_dir is None
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="llmops-kube-")).resolve()
        self.audit, self.gang, self.start_timeout = audit, gang, start_timeout
        self.started = False
        self._reaper: Reaper | None = None

    @property
    def kubeconfig(self) -> str:
        return str(self.state_dir / "kubeconfig")

    @property
    def operator_kubeconfig(self) -> str:
        """Same rights as admin, but user ``llmops-operator``: audit logs tell its requests apart."""
        return str(self.state_dir / "operator.kubeconfig")

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "logs" / "audit.log"

    def start(self) -> ControlPlane:
        env = {**os.environ, "KUBE_AUDIT": "1" if self.audit else "0", "KUBE_GANG": "1" if self.gang else "0"}
        env.pop("KUBE_API_PORT", None)
        global _started_once
        # start.sh leads a new process group that its daemons stay in; a reaper kills that group
        # if this process dies without stop() (a killed test run leaves no cluster behind).
        self._reaper = Reaper()
        with open(_FIRST_START_LOCK, "a") as lock:
            if not _started_once:
                fcntl.flock(lock, fcntl.LOCK_EX)
            proc = subprocess.Popen(["bash", str(self.kube_dir / "start.sh"), str(self.state_dir)], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            self._reaper.add(proc.pid)
            try:
                _, stderr = proc.communicate(timeout=self.start_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, stderr = proc.communicate()
            _started_once = _started_once or proc.returncode == 0
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"control plane did not start (rc={proc.returncode}):\n{stderr[-4000:]}")
        self.started = True
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(self.kube_dir / "stop.sh"), str(self.state_dir)], capture_output=True, timeout=60)
        self.started = False
        if self._reaper is not None:
            self._reaper.close()  # kills whatever stop.sh left of the group
            self._reaper = None
        if self._own_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
