"""kubectl 1.32 against the kubeconfig: apply -f (client-side, built-in and custom kinds),
apply --server-side, get (table columns, -o yaml, category, shortName, -w), describe (with
events found by field selector), delete, logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
import yaml
from contract_helpers import HERE

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
  containers:
  - name: main
    image: busybox:{tag}
    env: [{{name: A, value: "1"}}]
"""
WIDGET = """
apiVersion: contract.llmops.dev/v1
kind: Widget
metadata: {{name: {name}}}
spec: {{size: {size}, color: red}}
"""


def test_apply_get_delete_builtin(kubectl, fresh_namespace: str) -> None:
    ns = ["-n", fresh_namespace]
    out = kubectl("apply", *ns, "-f", "-", input=POD.format(name="web", tag="1")).stdout
    assert "pod/web created" in out
    # a second apply computes a strategic merge patch (image is one of the mutable fields)
    out = kubectl("apply", *ns, "-f", "-", input=POD.format(name="web", tag="2")).stdout
    assert "pod/web configured" in out
    got = yaml.safe_load(kubectl("get", *ns, "pod", "web", "-o", "yaml").stdout)
    assert got["spec"]["containers"][0]["image"] == "busybox:2"
    assert got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    table = kubectl("get", *ns, "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:3] == ["web", "0/1", "Pending"]
    assert "web" in kubectl("get", *ns, "po", "-l", "app=web", "-o", "name").stdout
    kubectl("delete", *ns, "pod", "web", timeout=60)
    assert "NotFound" in kubectl("get", *ns, "pod", "web", check=False).stderr


def test_custom_resources(kubectl, widget_crd, fresh_namespace: str) -> None:
    ns = ["-n", fresh_namespace]
    kubectl("apply", "-f", str(HERE / "widget_crd.yaml"))
    assert "created" in kubectl("apply", *ns, "-f", "-", input=WIDGET.format(name="w1", size=3)).stdout
    assert "configured" in kubectl("apply", *ns, "-f", "-", input=WIDGET.format(name="w1", size=4)).stdout
    out = kubectl("apply", *ns, "--server-side", "-f", "-", input=WIDGET.format(name="w2", size=2)).stdout
    assert "serverside-applied" in out
    lines = kubectl("get", *ns, "contracttest").stdout.splitlines()  # category lookup
    assert lines[0].split() == ["NAME", "SIZE", "READY", "AGE"]
    assert [line.split()[:2] for line in lines[1:]] == [["w1", "4"], ["w2", "2"]]
    assert kubectl("get", *ns, "wdg", "-o", "name").stdout.split() == [
        "widget.contract.llmops.dev/w1", "widget.contract.llmops.dev/w2"]
    got = json.loads(kubectl("get", *ns, "widget", "w2", "-o", "json").stdout)
    assert got["spec"] == {"size": 2, "color": "red", "mode": "fast"}
    bad = kubectl("apply", *ns, "-f", "-", input=WIDGET.format(name="w3", size=0), check=False)
    assert bad.returncode != 0 and "spec.size" in bad.stderr
    kubectl("delete", *ns, "widget", "w1", timeout=60)
    assert kubectl("get", *ns, "widgets", "-o", "name").stdout.split() == ["widget.contract.llmops.dev/w2"]


def test_get_watch(kubectl, widget_crd, fresh_namespace: str, kubeconfig) -> None:
    ns = ["-n", fresh_namespace]
    kubectl("apply", *ns, "-f", "-", input=WIDGET.format(name="w1", size=1))
    watcher = subprocess.Popen(["kubectl", "--kubeconfig", str(kubeconfig), *ns, "get", "widgets", "-w",
                                "--request-timeout=5s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        time.sleep(1.0)  # let the watch start; the assertion does not depend on timing
        kubectl("apply", *ns, "-f", "-", input=WIDGET.format(name="w2", size=2))
        out, err = watcher.communicate(timeout=60)
    finally:
        watcher.kill()
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert ["w1", "1"] in rows and ["w2", "2"] in rows, out + err


def test_describe_shows_events(kubectl, kube, fresh_namespace: str) -> None:
    ns = ["-n", fresh_namespace]
    kubectl("apply", *ns, "-f", "-", input=POD.format(name="d", tag="1"))
    uid = kube.get(f"/api/v1/namespaces/{fresh_namespace}/pods/d")["metadata"]["uid"]
    kube.create(f"/api/v1/namespaces/{fresh_namespace}/events", {
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "d.contract"},
        "involvedObject": {"kind": "Pod", "name": "d", "namespace": fresh_namespace, "uid": uid},
        "reason": "ContractCheck", "message": "described by the contract suite", "type": "Normal",
        "source": {"component": "contract"}, "count": 1,
        "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:00:00Z"})
    out = kubectl("describe", *ns, "pod", "d").stdout
    # Columns are aligned to the longest label, which depends on the fields the pod has.
    fields = dict(re.findall(r"^([A-Z][\w ]*):[ \t]+(\S.*)$", out, flags=re.M))
    assert fields["Name"] == "d" and fields["Namespace"] == fresh_namespace
    assert fields["Service Account"] == "default" and fields["Priority"] == "0"
    assert "busybox:1" in out
    assert "ContractCheck" in out and "described by the contract suite" in out


def test_logs(emulator, kubectl, fresh_namespace: str) -> None:
    api_server = emulator("log text comes from a kubelet, which the real control plane has none of; "
                          "test_logs_before_scheduling checks what kubectl gets from a real server")
    api_server.register_log_source(lambda ns, pod, c: f"step 1 loss 2.0\nfrom {pod}/{c}\n")
    kubectl("apply", "-n", fresh_namespace, "-f", "-", input=POD.format(name="l", tag="1"))
    assert kubectl("logs", "-n", fresh_namespace, "l").stdout == "step 1 loss 2.0\nfrom l/main\n"
    assert kubectl("logs", "-n", fresh_namespace, "l", "--tail=1").stdout == "from l/main\n"


def test_logs_before_scheduling(kubectl, fresh_namespace: str) -> None:
    """A pod no node runs has an empty log, not an error."""
    kubectl("apply", "-n", fresh_namespace, "-f", "-", input=POD.format(name="l", tag="1"))
    out = kubectl("logs", "-n", fresh_namespace, "l")
    assert (out.returncode, out.stdout) == (0, "")
