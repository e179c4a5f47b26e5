"""Kopf 1.45 runs unmodified against the kubeconfig: it finds the CRD through discovery,
watches, adds its finalizer, patches status via the subresource, creates an owned child,
reacts to a spec update, and runs its delete handler before the object goes away (the child
then being garbage-collected)."""

from __future__ import annotations

import pathlib

import pytest
from contract_helpers import WIDGETS, Failed, ns_path, widget

kopf_testing = pytest.importorskip("kopf.testing")
OPERATOR = pathlib.Path(__file__).with_name("kopf_widget_operator.py")


def test_kopf_operator_lifecycle(kube, widget_crd, fresh_namespace, kubeconfig, eventually, monkeypatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    path = ns_path(fresh_namespace, "widgets", group_version=WIDGETS)
    cms = ns_path(fresh_namespace, "configmaps")
    args = ["run", "--standalone", "--namespace", fresh_namespace, str(OPERATOR)]
    with kopf_testing.KopfRunner(args, timeout=60) as runner:
        kube.create(path, widget("w", size=2))
        eventually(lambda: kube.get(f"{path}/w").get("status", {}).get("replicas") == 2, timeout=30)
        assert "contract.llmops.dev/kopf" in kube.get(f"{path}/w")["metadata"]["finalizers"]
        child = eventually(lambda: kube.get(f"{cms}/w-child"), timeout=30)
        assert child["metadata"]["ownerReferences"][0]["name"] == "w"
        kube.patch(f"{path}/w", {"spec": {"size": 3}})
        eventually(lambda: kube.get(f"{cms}/w-child")["data"] == {"size": "3"}, timeout=30)
        eventually(lambda: kube.get(f"{path}/w")["status"]["replicas"] == 3, timeout=30)
        kube.delete(f"{path}/w")
        eventually(lambda: kube.get(f"{cms}/w-deleted"), timeout=30)

        def gone(p: str) -> bool:
            try:
                kube.get(p)
            except Failed as e:
                return e.status == 404
            return False

        eventually(lambda: gone(f"{path}/w"), timeout=30)
        # The child goes by the controller manager's garbage collector. A real one learns of a
        # new CRD on its 30 s discovery resync and until then retries the child with an
        # exponential backoff, so on a CRD this young the wait is minutes, not seconds.
        eventually(lambda: gone(f"{cms}/w-child"), timeout=300, interval=1)
    assert runner.exception is None, runner.exception
    assert runner.exit_code == 0
