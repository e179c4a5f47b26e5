"""The node agent against the emulated API server, with real processes: Node and Lease
registration, env (fieldRefs, ConfigMap/Secret refs, $(VAR)), volumes (configMap, secret,
emptyDir, PVC shared by pods), init containers, exit codes and termination messages,
OOMKilled, restartPolicy, probes gating readiness, graceful deletion killing the whole
process group, faults, and two pods talking over loopback IPs through the hosts file."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from llmops.sandbox.node.process import alive
from podkit import NODE, condition, create, eventually, get_pod, main_status, make_pod, phase_is, pod_root

pytestmark = pytest.mark.timeout(120)


def test_node_registered_with_capacity_and_lease(kube, agent) -> None:
    node = kube.get(f"/api/v1/nodes/{NODE}")
    assert node["status"]["allocatable"]["nvidia.com/gpu"] == "8"
    assert node["status"]["capacity"]["rdma/hca"] == "4"
    assert condition(node, "Ready") == "True"
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.77.0.1"}
    path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    first = kube.get(path)["spec"]["renewTime"]
    eventually(lambda: kube.get(path)["spec"]["renewTime"] != first)  # heartbeat renews


def test_env_fieldrefs_configmap_secret_and_volumes(kube, agent, ns) -> None:
    create(kube, ns, {"metadata": {"name": "cfg"}, "data": {"greeting": "hello", "app.conf": "x=1"}}, "configmaps")
    create(kube, ns, {"metadata": {"name": "sec"}, "data": {"token": base64.b64encode(b"s3cr3t").decode()}}, "secrets")
    code = (
        "import os, json, pathlib\n"
        "root = pathlib.Path(os.environ['LLMOPS_SANDBOX_ROOT'])\n"
        "(root / 'data/out.txt').write_text(os.environ['POD_NAME'])\n"
        "keys = ['POD_NAME','POD_NS','POD_IP','MY_IP','NODE','GREETING','TOKEN','JOINED','LLMOPS_MOUNT_CFG']\n"
        "env = {k: os.environ.get(k) for k in keys}\n"
        "env['conf'] = (root / 'cfg/app.conf').read_text()\n"
        "env['secret_file'] = (root / 'sec/token').read_text()\n"
        "env['cwd'] = os.getcwd()\n"
        "print(json.dumps(env))\n"
    )
    pod = make_pod("envpod", code, env=[
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "greeting"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
        {"name": "JOINED", "value": "$(GREETING)-$(POD_NAME)"},
    ], volumeMounts=[
        {"name": "cfg", "mountPath": "/cfg"}, {"name": "sec", "mountPath": "/sec"}, {"name": "data", "mountPath": "/data"},
    ], workingDir="/work")  # fmt: skip
    pod["spec"]["volumes"] = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "sec", "secret": {"secretName": "sec"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "shared"}},
    ]
    create(kube, ns, pod)
    done = eventually(lambda: phase_is(kube, ns, "envpod", "Succeeded", "Failed"))
    text = agent.read_log(ns, "envpod", "main")
    assert done["status"]["phase"] == "Succeeded", text
    env = json.loads(text.strip().splitlines()[-1])
    ip = done["status"]["podIP"]
    assert ip.startswith("127.77.") and env["POD_IP"] == env["MY_IP"] == ip
    assert (env["POD_NAME"], env["POD_NS"], env["NODE"]) == ("envpod", ns, NODE)
    assert (env["GREETING"], env["TOKEN"], env["JOINED"]) == ("hello", "s3cr3t", "hello-envpod")
    assert (env["conf"], env["secret_file"]) == ("x=1", "s3cr3t")
    assert env["cwd"].endswith("/root/work") and env["LLMOPS_MOUNT_CFG"]
    # the claim directory outlives the pod and is shared by the next pod naming it
    reader = make_pod("reader", "import os; print(open(os.environ['LLMOPS_SANDBOX_ROOT'] + '/d/out.txt').read())",
                      volumeMounts=[{"name": "d", "mountPath": "/d"}])  # fmt: skip
    reader["spec"]["volumes"] = [{"name": "d", "persistentVolumeClaim": {"claimName": "shared"}}]
    create(kube, ns, reader)
    eventually(lambda: phase_is(kube, ns, "reader", "Succeeded"))
    assert agent.read_log(ns, "reader", "main").strip() == "envpod"


def test_missing_configmap_is_a_waiting_config_error(kube, agent, ns) -> None:
    pod = make_pod("cfgerr", env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k"}}}])
    create(kube, ns, pod)
    waiting = eventually(
        lambda: (main_status(get_pod(kube, ns, "cfgerr"))["state"].get("waiting") or {}).get("reason") == "CreateContainerConfigError"
    )
    assert waiting
    assert get_pod(kube, ns, "cfgerr")["status"]["phase"] == "Pending"
    create(kube, ns, {"metadata": {"name": "nope"}, "data": {"k": "v"}}, "configmaps")  # the kubelet retries
    eventually(lambda: phase_is(kube, ns, "cfgerr", "Succeeded"))


def test_init_containers_run_in_order_first(kube, agent, ns) -> None:
    append = "import os; open(os.environ['LLMOPS_SANDBOX_ROOT'] + '/shared/order', 'a').write('{}\\n')"
    pod = make_pod("init", "import os; print(open(os.environ['LLMOPS_SANDBOX_ROOT'] + '/shared/order').read().split())",
                   volumeMounts=[{"name": "s", "mountPath": "/shared"}])  # fmt: skip
    pod["spec"]["volumes"] = [{"name": "s", "emptyDir": {"medium": "Memory"}}]
    pod["spec"]["initContainers"] = [
        {"name": f"init{i}", "image": "x", "command": [sys.executable, "-c", append.format(i)],
         "volumeMounts": [{"name": "s", "mountPath": "/shared"}]}
        for i in (1, 2)
    ]
    create(kube, ns, pod)
    done = eventually(lambda: phase_is(kube, ns, "init", "Succeeded", "Failed"))
    assert done["status"]["phase"] == "Succeeded"
    assert agent.read_log(ns, "init", "main").strip() == "['1', '2']"
    assert [s["state"]["terminated"]["reason"] for s in done["status"]["initContainerStatuses"]] == ["Completed"] * 2
    assert condition(done, "Initialized") == "True"


EXITS = [
    # (name, code, container extras, expected exitCode, reason, message fragment)
    ("exit3", "import sys; sys.exit(3)", {}, 3, "Error", None),
    ("termmsg", "import os, sys; open(os.environ['LLMOPS_SANDBOX_ROOT'] + '/dev/termination-log', 'w').write('bad shard'); sys.exit(2)",
     {}, 2, "Error", "bad shard"),
    ("fallback", "print('last words'); import sys; sys.exit(5)", {"terminationMessagePolicy": "FallbackToLogsOnError"},
     5, "Error", "last words"),
    ("selfkill", "import os, signal; os.kill(os.getpid(), signal.SIGTERM)", {}, 143, "Error", None),
    ("ok", "print('fine')", {}, 0, "Completed", None),
]


@pytest.mark.parametrize(("name", "code", "extra", "exit_code", "reason", "message"), EXITS, ids=[e[0] for e in EXITS])
def test_exit_codes_and_termination_messages(kube, agent, ns, name, code, extra, exit_code, reason, message) -> None:
    create(kube, ns, make_pod(name, code, **extra))
    pod = eventually(lambda: phase_is(kube, ns, name, "Succeeded", "Failed"))
    assert pod["status"]["phase"] == ("Succeeded" if exit_code == 0 else "Failed")
    term = main_status(pod)["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (exit_code, reason)
    if message:
        assert message in term["message"]
    if exit_code == 143:
        assert term["signal"] == signal.SIGTERM


def test_memory_limit_is_enforced_as_oomkilled(kube, agent, ns) -> None:
    code = "import time\nb = []\nfor _ in range(400):\n    b.append(b'x' * 2**20); time.sleep(0.01)\ntime.sleep(30)"
    create(kube, ns, make_pod("oom", code, resources={"limits": {"memory": "64Mi"}}))
    pod = eventually(lambda: phase_is(kube, ns, "oom", "Failed", "Succeeded"), timeout=30)
    term = main_status(pod)["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (137, "OOMKilled")


def test_restart_policy_on_failure_restarts_until_success(kube, agent, ns) -> None:
    code = ("import os, sys\np = os.environ['LLMOPS_SANDBOX_ROOT'] + '/s/count'\n"
            "n = int(open(p).read()) if os.path.exists(p) else 0\nopen(p, 'w').write(str(n + 1))\n"
            "sys.exit(0 if n >= 1 else 1)")  # fmt: skip
    pod = make_pod("onfail", code, restart="OnFailure", volumeMounts=[{"name": "s", "mountPath": "/s"}])
    pod["spec"]["volumes"] = [{"name": "s", "emptyDir": {}}]
    create(kube, ns, pod)
    done = eventually(lambda: phase_is(kube, ns, "onfail", "Succeeded", "Failed"))
    status = main_status(done)
    assert done["status"]["phase"] == "Succeeded" and status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1


def test_restart_policy_always_counts_restarts(kube, agent, ns) -> None:
    create(kube, ns, make_pod("always", "print('x')", restart="Always"))
    pod = eventually(lambda: main_status(get_pod(kube, ns, "always"))["restartCount"] >= 2 and get_pod(kube, ns, "always"))
    assert pod["status"]["phase"] == "Running"


def test_readiness_probes_gate_ready(kube, agent, ns) -> None:
    server = (
        "import http.server, os, time\ntime.sleep(0.5)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200 if os.path.exists('ready') else 503); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer((os.environ['POD_IP'], 8080), H).serve_forever()\n"
    )
    probe = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 0.2, "failureThreshold": 1}
    pod = make_pod("web", server, ports=[{"name": "http", "containerPort": 8080}], readinessProbe=probe,
                   livenessProbe={"tcpSocket": {"port": 8080}, "initialDelaySeconds": 2, "periodSeconds": 0.5})  # fmt: skip
    created = create(kube, ns, pod)
    eventually(lambda: phase_is(kube, ns, "web", "Running"))
    time.sleep(1.0)  # serving 503 by now; readiness must stay False
    pod = get_pod(kube, ns, "web")
    assert condition(pod, "Ready") == "False" and not main_status(pod)["ready"]
    (pod_root(agent, created) / "ready").write_text("")
    eventually(lambda: condition(get_pod(kube, ns, "web"), "Ready") == "True")
    (pod_root(agent, created) / "ready").unlink()
    eventually(lambda: condition(get_pod(kube, ns, "web"), "Ready") == "False")
    assert main_status(get_pod(kube, ns, "web"))["restartCount"] == 0  # liveness (tcp) kept passing


def test_failing_liveness_restarts_and_startup_gates(kube, agent, ns) -> None:
    pod = make_pod("live", "import time; time.sleep(60)", restart="Always",
                   startupProbe={"exec": {"command": ["true"]}, "periodSeconds": 0.2},
                   livenessProbe={"exec": {"command": ["false"]}, "periodSeconds": 0.2, "failureThreshold": 2})  # fmt: skip
    create(kube, ns, pod)
    pod = eventually(lambda: main_status(get_pod(kube, ns, "live"))["restartCount"] >= 1 and get_pod(kube, ns, "live"))
    assert main_status(pod)["lastState"]["terminated"]["exitCode"] == 137


def test_graceful_deletion_kills_the_process_group(kube, agent, ns) -> None:
    # The shell ignores SIGTERM and has a child: only SIGKILL after the grace period ends both.
    create(kube, ns, make_pod("stubborn", command=["sh", "-c", "trap '' TERM; sleep 300 & wait; sleep 300"]))
    eventually(lambda: phase_is(kube, ns, "stubborn", "Running"))
    leader = agent.pids(ns, "stubborn")["main"]
    children = eventually(lambda: [int(p) for p in os.popen(f"pgrep -g {leader}").read().split() if int(p) != leader])
    kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/stubborn", {"gracePeriodSeconds": 1})
    eventually(lambda: not alive(leader) and not any(alive(c) for c in children), timeout=15)

    def gone() -> bool:
        try:
            get_pod(kube, ns, "stubborn")
            return False
        except Exception as exc:  # noqa: BLE001
            return getattr(exc, "status", None) == 404

    eventually(gone)


FAULTS = [
    # (fault, restartPolicy, expected exitCode, expected reason)
    ("kill", "Never", 137, "Error"),
    ("exit=3", "Never", 3, "Error"),
]


@pytest.mark.parametrize(("fault", "policy", "exit_code", "reason"), FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_annotation(kube, agent, ns, fault, policy, exit_code, reason) -> None:
    create(kube, ns, make_pod("victim", "import time; time.sleep(120)", restart=policy))
    eventually(lambda: phase_is(kube, ns, "victim", "Running"))
    kube.patch_merge(f"/api/v1/namespaces/{ns}/pods/victim", {"metadata": {"annotations": {"sandbox.llmops.dev/fault": fault}}})
    pod = eventually(lambda: phase_is(kube, ns, "victim", "Failed"))
    term = main_status(pod)["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (exit_code, reason)


def test_freeze_and_stuck_terminating(kube, agent, ns) -> None:
    create(kube, ns, make_pod("frozen", "import time; time.sleep(120)"))
    eventually(lambda: phase_is(kube, ns, "frozen", "Running"))
    pid = agent.pids(ns, "frozen")["main"]
    agent.fault(ns, "frozen", "freeze")
    eventually(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T")
    agent.fault(ns, "frozen", "stuck-terminating")
    eventually(lambda: agent._runner(ns, "frozen").stuck_terminating)
    kube.request("DELETE", f"/api/v1/namespaces/{ns}/pods/frozen", {"gracePeriodSeconds": 1})
    time.sleep(2.0)  # past the grace period: a healthy node would have finished the deletion
    pod = get_pod(kube, ns, "frozen")
    assert pod["metadata"].get("deletionTimestamp") and alive(pid)
    agent.fault(ns, "frozen", "unstick")
    eventually(lambda: not alive(pid))


def test_node_not_ready_fault(kube, agent) -> None:
    lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}"
    try:
        agent.set_ready(False)
        assert condition(kube.get(f"/api/v1/nodes/{NODE}"), "Ready") == "Unknown"
        frozen = kube.get(lease)["spec"]["renewTime"]
        time.sleep(0.6)  # three heartbeat periods
        assert kube.get(lease)["spec"]["renewTime"] == frozen
    finally:
        agent.set_ready(True)
    assert condition(kube.get(f"/api/v1/nodes/{NODE}"), "Ready") == "True"
    # the same through an annotation, as `kubectl annotate node` would do it
    node = f"/api/v1/nodes/{NODE}"
    kube.patch_merge(node, {"metadata": {"annotations": {"sandbox.llmops.dev/fault": "not-ready"}}})
    eventually(lambda: condition(kube.get(node), "Ready") == "Unknown")
    kube.patch_merge(node, {"metadata": {"annotations": {"sandbox.llmops.dev/fault": None}}})
    eventually(lambda: condition(kube.get(node), "Ready") == "True")


def test_pods_talk_over_loopback_ips_via_hosts_file(kube, agent, ns) -> None:
    server = (
        "import os, socket\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((os.environ['POD_IP'], 29500)); s.listen()\n"
        "c, _ = s.accept(); c.sendall(b'hello from ' + os.environ['POD_IP'].encode()); c.close()\n"
    )
    client = (
        "import os, socket, time\nfrom llmops.sandbox.node.hosts import resolve\n"
        "for _ in range(200):\n"
        "    ip = resolve('master.job')\n"
        "    try:\n"
        "        c = socket.create_connection((ip, 29500), timeout=1); break\n"
        "    except OSError: time.sleep(0.05)\n"
        "print(ip, c.recv(100).decode())\n"
    )
    a = make_pod("master", server)
    a["spec"].update(hostname="master", subdomain="job")
    create(kube, ns, a)
    create(kube, ns, make_pod("worker", client))
    done = eventually(lambda: phase_is(kube, ns, "worker", "Succeeded", "Failed"))
    master_ip = get_pod(kube, ns, "master")["status"]["podIP"]
    worker_ip = done["status"]["podIP"]
    assert master_ip != worker_ip
    out = agent.read_log(ns, "worker", "main").strip()
    assert out == f"{master_ip} hello from {master_ip}", (out, agent.hosts_path.read_text())


def test_llmops_node_killed_leaves_no_orphans(kube, server, ns, tmp_path) -> None:
    """`llmops node` as its own process, SIGKILLed while a pod with a child process runs."""
    import subprocess

    kubeconfig = server[1]
    agent_proc = subprocess.Popen(
        [sys.executable, "-m", "llmops.cli", "node", "--kubeconfig", kubeconfig, "--name", "node-b",
         "--capacity", "cpu=2,memory=4Gi", "--workdir", str(tmp_path / "node-b"), "--pod-cidr", "127.78.0.0/16"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # a new process: slow to start on a loaded machine
        eventually(lambda: condition(kube.get("/api/v1/nodes/node-b"), "Ready") == "True", timeout=120)
        pidfile = tmp_path / "pids"
        # `$$$$`: kubelet-style expansion turns `$$` into `$`, so the shell sees `$$`
        script = f"sleep 300 & echo $! $$$$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; wait"
        create(kube, ns, make_pod("orphan", command=["sh", "-c", script], node="node-b"))
        pids = eventually(lambda: pidfile.exists() and [int(p) for p in pidfile.read_text().split()])
        assert all(alive(p) for p in pids)
        # the agent reports the pod's IP on its next status write (the process may start first)
        assert eventually(lambda: get_pod(kube, ns, "orphan")["status"].get("podIP", "")).startswith("127.78.")
        agent_proc.kill()
        agent_proc.wait()
        eventually(lambda: not any(alive(p) for p in pids), timeout=15)
    finally:
        agent_proc.kill()
        agent_proc.wait()
        kube.request("DELETE", "/api/v1/nodes/node-b")


def test_agent_survives_cut_watches_and_failing_status_writes(kube, server, agent, ns) -> None:
    """Level-triggered: after the watch streams are cut and status writes fail for a while,
    a new pod still runs and its final status still lands."""
    srv = server[0]
    srv.faults.cut_watches()
    injected = srv.faults.injected
    srv.faults.fail(verb="patch", resource="pods/status", code=500, count=5)
    try:
        create(kube, ns, make_pod("resilient", "print('made it')"))
        done = eventually(lambda: phase_is(kube, ns, "resilient", "Succeeded", "Failed"))
        assert done["status"]["phase"] == "Succeeded"
        assert srv.faults.injected - injected == 5  # the writes really failed before landing
    finally:
        srv.faults.clear()


def test_python_on_path_is_the_agents_interpreter(kube, agent, ns) -> None:
    create(kube, ns, make_pod("which", command=["python", "-c", "import sys; print(sys.executable)"]))
    eventually(lambda: phase_is(kube, ns, "which", "Succeeded"))
    assert os.path.dirname(agent.read_log(ns, "which", "main").strip()) == os.path.dirname(sys.executable)
