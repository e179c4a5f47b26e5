"""Pod Security admission as the project meets it (reliability scenario 10): a namespace's
enforce label rejects pods with 403 Forbidden and the real API server's wording, naming the
container and the field. Also runs against a real cluster (LLMOPS_TEST_KUBECONFIG)."""

from __future__ import annotations

import pytest
from contract_helpers import Failed, ns_path, pod

ENFORCE = "pod-security.kubernetes.io/enforce"


def enforce(kube, ns: str, level: str) -> None:  # noqa: ANN001
    kube.patch(f"/api/v1/namespaces/{ns}", {"metadata": {"labels": {ENFORCE: level}}})


def with_caps(name: str, *caps: str) -> dict:
    body = pod(name, ("worker",))
    body["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": list(caps)}}
    return body


def test_baseline_rejects_ipc_lock_and_names_the_container(kube, fresh_namespace: str) -> None:
    enforce(kube, fresh_namespace, "baseline")
    with pytest.raises(Failed) as err:
        kube.create(ns_path(fresh_namespace, "pods"), with_caps("rdma", "IPC_LOCK"))
    assert err.value.status == 403 and err.value.reason == "Forbidden"
    msg = err.value.body["message"]
    assert msg.startswith('pods "rdma" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities')
    assert 'container "worker" must not include "IPC_LOCK" in securityContext.capabilities.add' in msg
    kube.create(ns_path(fresh_namespace, "pods"), with_caps("ok", "NET_BIND_SERVICE"))  # a default capability passes


def test_restricted_lists_every_missing_setting(kube, fresh_namespace: str) -> None:
    enforce(kube, fresh_namespace, "restricted")
    with pytest.raises(Failed) as err:
        kube.create(ns_path(fresh_namespace, "pods"), pod("plain", ("worker",)))
    msg = err.value.body["message"]
    assert err.value.status == 403 and 'violates PodSecurity "restricted:latest"' in msg
    for part in ("allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true", "seccompProfile"):
        assert part in msg, (part, msg)
    good = pod("good", ("worker",))
    good["spec"]["securityContext"] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    good["spec"]["containers"][0]["securityContext"] = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    kube.create(ns_path(fresh_namespace, "pods"), good)


def test_unlabelled_namespace_admits_anything(kube, fresh_namespace: str) -> None:
    kube.create(ns_path(fresh_namespace, "pods"), with_caps("rdma", "IPC_LOCK"))
