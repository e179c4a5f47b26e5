"""pods/log (text from a registered log source or the append side channel, container choice,
tailLines) and server-side tables for built-in kinds."""

from __future__ import annotations

import pytest
from contract_helpers import Failed, ns_path, pod


def test_pod_logs_from_source(emulator, kube, fresh_namespace) -> None:
    api_server = emulator("log text comes from a kubelet, which the real control plane has none of; "
                          "the real contract (no node: empty log, container choice) is in test_pod_log_contract")
    api_server.register_log_source(
        lambda ns, name, container: f"{name}/{container} line1\nline2\n" if name == "p" else None)
    base = ns_path(fresh_namespace, "pods")
    kube.create(base, pod("p", containers=("a", "b")))
    kube.create(base, pod("q"))
    api_server.append_log(fresh_namespace, "q", "main", "hello\n")
    text = kube.text(f"{base}/p/log", {"container": "b"})
    assert text == "p/b line1\nline2\n"
    text = kube.text(f"{base}/p/log", {"container": "a", "tailLines": "1"})
    assert text == "line2\n"
    text = kube.text(f"{base}/q/log")
    assert text == "hello\n"


def test_pod_log_contract(kube, fresh_namespace) -> None:
    """What the API server itself answers for pods/log: empty text for a pod no node runs yet,
    400 when a pod of two containers is asked without naming one or for a container it lacks."""
    base = ns_path(fresh_namespace, "pods")
    kube.create(base, pod("p", containers=("a", "b")))
    assert kube.text(f"{base}/p/log", {"container": "a"}) == ""
    with pytest.raises(Failed) as e:  # two containers: the caller must choose
        kube.text(f"{base}/p/log")
    assert e.value.status == 400 and "a container name must be specified for pod p" in e.value.body["message"]
    with pytest.raises(Failed) as e:
        kube.text(f"{base}/p/log", {"container": "nope"})
    assert (e.value.status, e.value.body["message"]) == (400, "container nope is not valid for pod p")


def test_builtin_tables(kube, fresh_namespace) -> None:
    base = ns_path(fresh_namespace, "pods")
    kube.create(base, pod("p"))
    table = kube.get(base, accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][:3] == ["p", "0/1", "Pending"]
