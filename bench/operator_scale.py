"""Operator scale: N TrainingJobs of 4 workers on M fake GPU nodes, one operator process.

```
python -m bench.operator_scale [--jobs 100] [--workers 4] [--nodes auto] [--gpus-per-node 8]
                               [--gpus-per-worker 1] [--real | --kubeconfig PATH [--audit-log PATH]]
                               [--operator-workers N]
```

What it measures, from the moment the first TrainingJob is created (the operator is already
running and idle):

* jobs/min until every job's worker pods exist (the operator's work) and until every pod is
  bound, ``spec.nodeName`` set (the operator, then the scheduler: the emulator's sandbox binder
  or the real kube-scheduler with native gang scheduling); overall and per 10 % of the jobs;
* the operator's API requests by verb and resource: on the emulated API server from its
  request counters (``ApiServer.requests``; the operator connects with its own token), on a
  real control plane from the apiserver's audit log (user ``llmops-operator`` of
  ``operator.kubeconfig``; with a plain ``--kubeconfig`` the operator's user agents ``kopf/``
  and ``OpenAPI-Generator/``, the bench's own client calls itself ``llmops-bench``); then
  writes per child object and reads per job;
* the operator process's peak RSS (VmHWM) and CPU seconds, from /proc.

Nodes are Node objects with 8 GPUs (``nvidia.com/gpu``) and a Ready condition, created
through the API; nothing runs the pods. ``--nodes auto`` makes enough of them for every pod.

Goals (issue 17): >= 1000 jobs/min to all pods bound, <= 1.5 writes per child object,
<= 3 reads per job, operator peak RSS <= 300 MiB. Misses are printed as MISS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPERATOR_TOKEN = "llmops-operator"  # the operator's user on the emulator (its bearer token)
OPERATOR_USER = "llmops-operator"  # the user of the real control plane's operator.kubeconfig
OPERATOR_AGENTS = ("kopf/", "OpenAPI-Generator/")  # Kopf's aiohttp session, the kubernetes client
BENCH_AGENT = "llmops-bench"
SCHEDULER_USER = "system:kube-scheduler"  # its client QPS (default 50) paces binding on a real cluster
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
READ_VERBS = ("get", "list")
MANAGED = "app.kubernetes.io/managed-by=llmops-operator"
OWNER_LABEL = "llmops.dev/owner-name"
GOALS = {"jobs_per_min_bound": 1000.0, "writes_per_child": 1.5, "reads_per_job": 3.0, "peak_rss_mib": 300.0}
#: Where the operator's children may live (namespaced collection paths, %s = namespace).
CHILD_PATHS = (
    "/api/v1/namespaces/%s/pods", "/api/v1/namespaces/%s/services", "/api/v1/namespaces/%s/configmaps",
    "/api/v1/namespaces/%s/secrets", "/api/v1/namespaces/%s/serviceaccounts",
    "/apis/coordination.k8s.io/v1/namespaces/%s/leases", "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/roles",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/rolebindings",
    "/apis/scheduling.k8s.io/v1alpha2/namespaces/%s/podgroups", "/apis/policy/v1/namespaces/%s/poddisruptionbudgets",
    "/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies",
)


# --- pure helpers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One tenth of the run: jobs `done` by `elapsed` seconds; `rate` is jobs/min within the step."""

    fraction: float
    done: int
    elapsed: float
    rate: float


def decile_rates(done_times: Iterable[float], t0: float, total: int, steps: int = 10) -> list[Step]:
    """jobs/min per tenth of `total` jobs, from each job's completion time (absolute seconds).

    Step k ends when ceil(k*total/steps) jobs are done; its rate is the jobs of the step over the
    time since the previous step ended (the rate as the count grows). Steps no job reached are
    left out.
    """
    times = sorted(done_times)
    out: list[Step] = []
    prev_done, prev_t = 0, t0
    for k in range(1, steps + 1):
        need = math.ceil(k * total / steps)
        if need == 0 or need > len(times) or need == prev_done:
            continue
        t = times[need - 1]
        span = max(t - prev_t, 1e-9)
        out.append(Step(k / steps, need, t - t0, (need - prev_done) / span * 60.0))
        prev_done, prev_t = need, t
    return out


def audit_counts(lines: Iterable[str], user: str | None = None,
                 agents: Sequence[str] = OPERATOR_AGENTS) -> Counter[tuple[str, str]]:
    """(verb, resource) -> requests from kube-apiserver JSON audit lines, once per auditID.

    Requests are the operator's when made by `user`, or, without a user, when the user agent
    starts with one of `agents`. resource is "pods" or "pods/status"; non-resource requests
    (discovery) count as "(non-resource)".
    """
    seen: set[str] = set()
    counts: Counter[tuple[str, str]] = Counter()
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if user is not None:
            if (ev.get("user") or {}).get("username") != user:
                continue
        elif not str(ev.get("userAgent", "")).startswith(tuple(agents)):
            continue
        audit_id = ev.get("auditID", "")
        if audit_id in seen:
            continue
        seen.add(audit_id)
        ref = ev.get("objectRef") or {}
        resource = ref.get("resource")
        resource = f"{resource}/{ref['subresource']}" if resource and ref.get("subresource") else resource
        counts[(str(ev.get("verb", "")), resource or "(non-resource)")] += 1
    return counts


def per_unit(counts: Counter[tuple[str, str]], children: int, jobs: int) -> dict[str, float]:
    writes = sum(n for (verb, _), n in counts.items() if verb in WRITE_VERBS)
    reads = sum(n for (verb, _), n in counts.items() if verb in READ_VERBS)
    return {"writes": writes, "reads": reads, "watches": sum(n for (v, _), n in counts.items() if v == "watch"),
            "writes_per_child": writes / children if children else math.inf,
            "reads_per_job": reads / jobs if jobs else math.inf}


def proc_usage(pid: int) -> tuple[float, float]:
    """(peak RSS MiB, CPU seconds user+system) of a live process, from /proc."""
    peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return peak, (int(fields[11]) + int(fields[12])) / ticks


def control_plane_pids(state_dir: Path) -> dict[str, int]:
    """component -> pid of a ../shared/kube cluster (start.sh writes DIR/run/NAME.pid)."""
    return {f.stem: int(f.read_text().split()[0]) for f in sorted((state_dir / "run").glob("*.pid"))
            if f.read_text().strip().isdigit()}


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """component -> CPU seconds so far (components that have exited are left out)."""
    out = {}
    for name, pid in pids.items():
        try:
            out[name] = proc_usage(pid)[1]
        except OSError:
            continue
    return out


# --- the run --------------------------------------------------------------------------------------

def job_body(name: str, workers: int, gpus: int) -> dict[str, Any]:
    """manifests/samples/trainingjob-minimal.yaml, with `workers` nodes of `gpus` GPUs each."""
    import yaml

    body = yaml.safe_load((ROOT / "manifests/samples/trainingjob-minimal.yaml").read_text())
    body["metadata"] = {"name": name}
    body["spec"]["nodes"] = workers
    body["spec"]["resources"] = {"gpus": gpus}
    return body


def node_body(name: str, gpus: int) -> dict[str, Any]:
    cap = {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                                  "kubernetes.io/arch": "amd64", "llmops.dev/bench": "fake"}},
            "status": {"capacity": cap, "allocatable": cap,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "fake node (bench)", "lastHeartbeatTime": _now(),
                                       "lastTransitionTime": _now()}]}}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PodTracker:
    """Watches the bench namespace's operator-made pods: when each was first seen and bound."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.seen: dict[str, float] = {}
        self.bound: dict[str, float] = {}
        self.job_of: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pod-tracker", daemon=True)

    def _note(self, pod: dict[str, Any], now: float) -> None:
        name = pod["metadata"]["name"]
        self.job_of.setdefault(name, (pod["metadata"].get("labels") or {}).get(OWNER_LABEL, ""))
        self.seen.setdefault(name, now)
        if (pod.get("spec") or {}).get("nodeName"):
            self.bound.setdefault(name, now)

    def _run(self) -> None:
        from llmops.sandbox.node.client import WatchGone

        path = f"/api/v1/namespaces/{self.namespace}/pods"
        while not self.stop.is_set():
            try:
                listing = self.kube.get(path, labelSelector=MANAGED)
                now = time.monotonic()
                for pod in listing.get("items") or []:
                    self._note(pod, now)
                rv = listing["metadata"]["resourceVersion"]
                while not self.stop.is_set():
                    for ev in self.kube.watch(path, rv, timeout_seconds=10, labelSelector=MANAGED):
                        obj = ev.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if ev.get("type") in ("ADDED", "MODIFIED"):
                            self._note(obj, time.monotonic())
                        if self.stop.is_set():
                            return
            except WatchGone:
                continue
            except Exception as exc:  # noqa: BLE001 - a blip must not end the measurement
                print(f"  (pod watch: {type(exc).__name__}: {exc}; relisting)", file=sys.stderr)
                time.sleep(0.5)

    def job_times(self, which: dict[str, float], workers: int) -> dict[str, float]:
        """job -> when its last of `workers` pods reached `which` (only complete jobs)."""
        per_job: dict[str, list[float]] = {}
        for pod, t in list(which.items()):
            per_job.setdefault(self.job_of.get(pod, ""), []).append(t)
        return {job: max(ts) for job, ts in per_job.items() if job and len(ts) >= workers}


def count_children(kube: Any, namespace: str) -> Counter[str]:
    from llmops.sandbox.node.client import ApiException

    out: Counter[str] = Counter()
    for template in CHILD_PATHS:
        path = template % namespace
        try:
            items = kube.get(path, labelSelector=MANAGED).get("items") or []
        except ApiException:
            continue
        if items:
            out[path.rsplit("/", 1)[1]] = len(items)
    return out


def bench_kube(kubeconfig: str) -> Any:
    from llmops.sandbox.node.client import Kube

    kube = Kube(kubeconfig)
    kube.api_client.user_agent = BENCH_AGENT
    return kube


def create_all(kube: Any, path: str, bodies: list[dict[str, Any]], threads: int = 8) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda b: kube.request("POST", path, b), bodies))


def start_operator(kubeconfig: str, log_path: Path, workers: int | None = None) -> subprocess.Popen[bytes]:
    """`llmops operator` with default settings (standalone, as the sandbox runs it; no metrics
    port or liveness endpoint, so runs side by side never clash on ports); `workers` overrides
    its reconcile worker count."""
    env = {**os.environ, "KUBECONFIG": kubeconfig,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "operator"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    argv = [sys.executable, "-m", "llmops.cli", "operator", "--kubeconfig", kubeconfig, "--standalone",
            "--metrics-port", "0", "--liveness", ""] + ([] if workers is None else ["--workers", str(workers)])
    with open(log_path, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_operator_ready(proc: subprocess.Popen[bytes], watching: Any, settle: float, log: Path,
                        timeout: float = 120.0) -> None:
    """Until the operator has started: its watches open (`watching()`, where the server can say),
    else at least `settle` seconds, >= 0.8 s of CPU (the imports) and then 1.5 s without CPU use."""
    start = time.monotonic()
    last_cpu, idle_since = -1.0, time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"operator exited: {log.read_text()[-3000:]}")
        if watching is not None:
            if watching():
                time.sleep(0.5)  # the watches' initial lists
                return
        else:
            cpu = proc_usage(proc.pid)[1]
            if cpu - last_cpu > 0.02:
                last_cpu, idle_since = cpu, time.monotonic()
            elif cpu >= 0.8 and time.monotonic() - start >= settle and time.monotonic() - idle_since >= 1.5:
                return
        time.sleep(0.25)
    raise RuntimeError("operator did not start")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from llmops.sandbox.run import install_project_crds

    workdir = Path(tempfile.mkdtemp(prefix="llmops-scale-"))
    pods_total = args.jobs * args.workers
    nodes = args.nodes or max(1, math.ceil(pods_total * args.gpus_per_worker / args.gpus_per_node))
    cleanup: list[Any] = []
    result: dict[str, Any] = {"jobs": args.jobs, "workers": args.workers, "nodes": nodes,
                              "gpus_per_node": args.gpus_per_node, "gpus_per_worker": args.gpus_per_worker}
    try:
        sandbox = control_plane = None
        if args.real:
            from llmops.sandbox.controlplane import ControlPlane

            control_plane = ControlPlane(state_dir=workdir / "kube", audit=True)
            t = time.monotonic()
            control_plane.start()
            cleanup.append(control_plane.stop)
            print(f"control plane up in {time.monotonic() - t:.1f}s ({control_plane.state_dir})")
            admin, operator_kc = control_plane.kubeconfig, control_plane.operator_kubeconfig
            result["cluster"] = "real (kube v1.36.2, audit log)"
        elif args.kubeconfig:
            admin = operator_kc = args.kubeconfig
            result["cluster"] = f"kubeconfig {args.kubeconfig}"
        else:
            from llmops.sandbox.run import Sandbox

            sandbox = Sandbox(nodes=0, s3=False, workdir=workdir / "sandbox")
            sandbox.start()
            cleanup.append(sandbox.stop)
            operator_kc = str(sandbox.server.write_kubeconfig(workdir / "operator.kubeconfig", token=OPERATOR_TOKEN))
            admin = sandbox.kubeconfig
            result["cluster"] = "emulated API server + sandbox binder"
        if control_plane is not None or args.kubeconfig:
            install_project_crds(admin)
        kube = bench_kube(admin)
        cleanup.append(kube.close)
        ns = args.namespace
        kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a real controller manager adds the ServiceAccount a moment later
            if any(sa["metadata"]["name"] == "default" for sa in kube.get(f"/api/v1/namespaces/{ns}/serviceaccounts")["items"]):
                break
            time.sleep(0.2)
        node_names = [f"bench-node-{i}" for i in range(nodes)]
        create_all(kube, "/api/v1/nodes", [node_body(n, args.gpus_per_node) for n in node_names])
        if args.kubeconfig:  # a cluster we did not start keeps neither our nodes nor our jobs
            cleanup.append(lambda: kube.request("DELETE", f"/api/v1/namespaces/{ns}"))
            cleanup.append(lambda: [kube.request("DELETE", f"/api/v1/nodes/{n}") for n in node_names])
        for n in node_names[:1]:  # status on create is kept for Nodes; set it where a server drops it
            if not (kube.get(f"/api/v1/nodes/{n}").get("status") or {}).get("allocatable"):
                for m in node_names:
                    kube.request("PATCH", f"/api/v1/nodes/{m}/status", {"status": node_body(m, args.gpus_per_node)["status"]},
                                 content_type="application/merge-patch+json")

        tracker = PodTracker(kube, ns)
        tracker.thread.start()
        operator = start_operator(operator_kc, workdir / "operator.log", args.operator_workers)
        cleanup.append(lambda: stop_process(operator))
        watching = None
        if sandbox is not None:  # exact on the emulator: the operator's watches are open
            def watching() -> bool:
                counts = sandbox.server.requests.by_verb_resource(OPERATOR_TOKEN)
                return all(counts.get(("watch", res)) for res in ("trainingjobs", "pods", "leases"))
        wait_operator_ready(operator, watching, args.settle, workdir / "operator.log")
        _, cpu_idle = proc_usage(operator.pid)
        components = {"operator": operator.pid, "bench": os.getpid()}
        if control_plane is not None:
            components.update(control_plane_pids(control_plane.state_dir))
        cpu_before = cpu_seconds(components)

        bodies = [job_body(f"scale-{i:05d}", args.workers, args.gpus_per_worker) for i in range(args.jobs)]
        t0 = time.monotonic()
        create_all(kube, f"/apis/llmops.dev/v1alpha1/namespaces/{ns}/trainingjobs", bodies)
        t_created = time.monotonic()
        print(f"{args.jobs} TrainingJobs created in {t_created - t0:.1f}s on {nodes} nodes; waiting for pods")
        deadline = t0 + args.timeout
        peak = 0.0
        last_report = t0
        while time.monotonic() < deadline:
            peak = max(peak, proc_usage(operator.pid)[0])
            bound = tracker.job_times(tracker.bound, args.workers)
            if len(bound) >= args.jobs:
                break
            if time.monotonic() - last_report > 15:
                last_report = time.monotonic()
                print(f"  t={last_report - t0:5.0f}s pods seen {len(tracker.seen)} bound {len(tracker.bound)} "
                      f"jobs bound {len(bound)}/{args.jobs}")
            if operator.poll() is not None:
                raise RuntimeError("operator exited during the run")
            time.sleep(0.25)
        # Let the operator finish what binding triggers (status writes), until it idles.
        quiet_until = time.monotonic() + args.drain
        prev = proc_usage(operator.pid)[1]
        while time.monotonic() < quiet_until:
            time.sleep(2.0)
            cur = proc_usage(operator.pid)[1]
            if cur - prev < 0.05:
                break
            prev = cur
        peak_rss, cpu = proc_usage(operator.pid)
        cpu_after = cpu_seconds(components)
        result["cpu_by_component"] = {k: cpu_after[k] - cpu_before[k] for k in cpu_after if k in cpu_before}
        result["run_seconds"] = time.monotonic() - t0
        result.update(peak_rss_mib=max(peak, peak_rss), cpu_seconds=cpu - cpu_idle, cpu_idle_startup=cpu_idle)
        tracker.stop.set()

        created = tracker.job_times(tracker.seen, args.workers)
        bound = tracker.job_times(tracker.bound, args.workers)
        for key, times in (("created", created), ("bound", bound)):
            done = len(times)
            span = (max(times.values()) - t0) if times else math.inf
            result[key] = {"jobs": done, "seconds": span, "jobs_per_min": done / span * 60 if times else 0.0,
                           "steps": decile_rates(times.values(), t0, args.jobs)}
        children = count_children(kube, ns)
        result["children"] = dict(children)
        result["pods_seen"] = len(tracker.seen)
        stop_process(operator)
        if sandbox is not None:
            counts = sandbox.server.requests.by_verb_resource(OPERATOR_TOKEN)
        elif control_plane is not None:
            control_plane.stop()  # stop.sh: the apiserver flushes its batched audit log
            audit = control_plane.audit_log.read_text().splitlines()
            counts = audit_counts(audit, user=OPERATOR_USER)
            result["scheduler_requests"] = audit_counts(audit, user=SCHEDULER_USER)
        elif args.audit_log:
            time.sleep(args.audit_wait)  # the audit backend writes in batches
            counts = audit_counts(Path(args.audit_log).read_text().splitlines(), user=args.operator_user)
        else:
            counts = Counter()
        result["requests"] = counts
        # Per job the operator got to: a run cut by --timeout leaves some jobs unreconciled.
        result["jobs_reached"] = len({job for job in tracker.job_of.values() if job}) or args.jobs
        result.update(per_unit(counts, sum(children.values()), result["jobs_reached"]) if counts else {})
        return result
    finally:
        for fn in reversed(cleanup):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001
                print(f"  (cleanup: {exc})", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True) if not args.keep else print(f"kept {workdir}")


def verdict(value: float, goal: float, higher_is_better: bool) -> str:
    ok = value >= goal if higher_is_better else value <= goal
    return "PASS" if ok else "MISS"


def report(r: dict[str, Any]) -> None:
    print(f"\n== operator scale: {r['jobs']} TrainingJobs x {r['workers']} workers ({r['gpus_per_worker']} GPU each) "
          f"on {r['nodes']} nodes x {r['gpus_per_node']} GPUs; {r['cluster']}")
    for key, label in (("created", "all pods created"), ("bound", "all pods bound")):
        m = r[key]
        print(f"{label:>18}: {m['jobs']}/{r['jobs']} jobs in {m['seconds']:.1f}s = {m['jobs_per_min']:.0f} jobs/min")
        print("                    per 10 %: " + "  ".join(f"{s.fraction:.0%}@{s.elapsed:.0f}s {s.rate:.0f}/min"
                                                           for s in m["steps"]))
    counts: Counter[tuple[str, str]] = r.get("requests") or Counter()
    if counts:
        print(f"operator requests: {sum(counts.values())} (writes {r['writes']}, reads {r['reads']}, watches {r['watches']})")
        for (verb, res), n in counts.most_common(args_top(r)):
            print(f"  {n:7d}  {verb:<16} {res}")
        own = sum(n for (verb, res), n in counts.items()
                  if verb in WRITE_VERBS and res not in ("trainingjobs/status", "events"))
        jobs = r.get("jobs_reached", r["jobs"])
        gets = counts.get(("get", "trainingjobs"), 0)
        print(f"  writes to children {own} ({own / max(1, sum(r['children'].values())):.2f} per child), "
              f"job status + Events {r['writes'] - own} ({(r['writes'] - own) / jobs:.2f} per job); "
              f"reconciles ~ gets of trainingjobs: {gets} ({gets / jobs:.2f} per job)")
    else:
        print("operator requests: not measured (no emulator counters, no audit log)")
    sched: Counter[tuple[str, str]] = r.get("scheduler_requests") or Counter()
    if sched:
        span = r["bound"]["seconds"]
        print(f"kube-scheduler requests: {sum(sched.values())} ({sum(sched.values()) / span:.1f}/s over the "
              f"{span:.0f}s to all bound; its client's default limit is 50/s): "
              + ", ".join(f"{verb} {res} {n}" for (verb, res), n in sched.most_common(4)))
    print(f"children: {sum(r['children'].values())} {r['children']}")
    if counts and counts.get(("create", "pods"), 0) < r.get("pods_seen", 0):
        print(f"AUDIT INCOMPLETE: the log has {counts.get(('create', 'pods'), 0)} pod creates for {r['pods_seen']} pods "
              "made (the apiserver's batched audit backend drops events under load): request figures are low")
    print(f"operator: peak RSS {r['peak_rss_mib']:.0f} MiB, CPU {r['cpu_seconds']:.1f}s during the run "
          f"(+{r['cpu_idle_startup']:.1f}s startup)")
    if r.get("cpu_by_component"):
        wall = r["run_seconds"]
        print(f"CPU seconds from the first job to idle ({wall:.0f}s wall, {os.cpu_count()} cores): " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(r["cpu_by_component"].items(), key=lambda kv: -kv[1]))
            + f"; all {sum(r['cpu_by_component'].values()) / wall:.2f} cores busy on average")
    complete = r["bound"]["jobs"] >= r["jobs"]
    if not complete:
        print(f"INCOMPLETE: {r['bound']['jobs']}/{r['jobs']} jobs bound before --timeout; rates are over those, "
              f"per-job figures over the {r.get('jobs_reached', r['jobs'])} jobs that have pods")
    rows = [("jobs/min to all pods bound" + ("" if complete else " (partial)"), r["bound"]["jobs_per_min"],
             GOALS["jobs_per_min_bound"], True),
            ("peak RSS MiB", r["peak_rss_mib"], GOALS["peak_rss_mib"], False)]
    if counts:
        rows[1:1] = [("writes per child object", r["writes_per_child"], GOALS["writes_per_child"], False),
                     ("reads per job", r["reads_per_job"], GOALS["reads_per_job"], False)]
    print("goals:")
    for name, value, goal, higher in rows:
        ok = verdict(value, goal, higher) if complete or not name.startswith("jobs/min") else "MISS"
        print(f"  {name:<38} {value:9.2f}  goal {'>=' if higher else '<='} {goal:g}  {ok}")


def args_top(r: dict[str, Any]) -> int:
    return int(r.get("top", 20))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.operator_scale", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=100, help="TrainingJobs to create (default 100)")
    p.add_argument("--workers", type=int, default=4, help="spec.nodes of each job (default 4)")
    p.add_argument("--nodes", type=int, default=0, help="fake Nodes (default: enough for every pod)")
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--gpus-per-worker", type=int, default=1, help="spec.resources.gpus (default 1)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--real", action="store_true", help="start ../shared/kube with an audit log")
    where.add_argument("--kubeconfig", help="a running cluster (requests counted only with --audit-log)")
    p.add_argument("--audit-log", help="with --kubeconfig: the apiserver's JSON audit log")
    p.add_argument("--operator-user", help="with --audit-log: the operator's user (default: by user agent)")
    p.add_argument("--audit-wait", type=float, default=35.0, help="seconds for the batched audit log to flush")
    p.add_argument("--operator-workers", type=int, help="the operator's --workers (default: its own default)")
    p.add_argument("--namespace", default="bench-scale")
    p.add_argument("--timeout", type=float, default=600.0, help="give up waiting for pods after this long")
    p.add_argument("--settle", type=float, default=3.0,
                   help="without the emulator's counters: at least this long for the operator to start")
    p.add_argument("--drain", type=float, default=30.0, help="at most this long for the operator to idle after")
    p.add_argument("--keep", action="store_true", help="keep the work directory (operator log, audit log)")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args(argv)
    result = run(args)
    report(result)
    if args.json:
        out = {**result, **{key: [[v, r, n] for (v, r), n in (result.get(key) or Counter()).most_common()]
                            for key in ("requests", "scheduler_requests")}}
        for key in ("created", "bound"):
            out[key] = {**out[key], "steps": [vars(s) for s in out[key]["steps"]]}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
