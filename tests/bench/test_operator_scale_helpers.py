"""bench/operator_scale.py's pure helpers: the per-10 % rate computation, audit-log lines into
(verb, resource) counts for one user (or the operator's user agents), writes per child and
reads per job; and the emulated API server's request counters the bench reads on the sandbox.
The benchmark itself (an operator and a cluster) is not run here."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.operator_scale import audit_counts, decile_rates, per_unit  # noqa: E402


def test_decile_rates_even_progress():
    # 20 jobs, one every 3 s from t0=100: each tenth (2 jobs) takes 6 s -> 20 jobs/min
    times = [100 + 3 * (i + 1) for i in range(20)]
    steps = decile_rates(times, 100, 20)
    assert [s.done for s in steps] == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert [s.elapsed for s in steps][-1] == 60
    assert all(s.rate == pytest.approx(20.0) for s in steps)


def test_decile_rates_slowing_down_and_unfinished():
    # 10 jobs: the first five at 1 s each, the next three 10 s apart, two never done
    times = [1, 2, 3, 4, 5, 15, 25, 35]
    steps = decile_rates(times, 0, 10)
    assert [s.fraction for s in steps] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert steps[0].rate == pytest.approx(60.0) and steps[5].rate == pytest.approx(6.0)


def test_decile_rates_fewer_jobs_than_steps():
    steps = decile_rates([1.0, 2.0, 4.0], 0.0, 3)
    assert [s.done for s in steps] == [1, 2, 3]  # a job count reached by two tenths appears once
    assert steps[-1].rate == pytest.approx(30.0)


def _event(audit_id, user, verb, resource=None, sub=None, agent="OpenAPI-Generator/36.0.3/python", stage="ResponseComplete"):
    ev = {"kind": "Event", "auditID": audit_id, "stage": stage, "verb": verb, "userAgent": agent,
          "user": {"username": user, "groups": ["system:authenticated"]}}
    if resource:
        ev["objectRef"] = {"resource": resource, "namespace": "ns", **({"subresource": sub} if sub else {})}
    return json.dumps(ev)


def test_audit_counts_by_user_once_per_request():
    lines = [
        _event("a", "llmops-operator", "watch", "pods", stage="ResponseStarted"),
        _event("a", "llmops-operator", "watch", "pods"),  # the same watch's completion
        _event("b", "llmops-operator", "patch", "trainingjobs", "status"),
        _event("c", "llmops-operator", "get", agent="kopf/1.45.2"),  # discovery: no objectRef
        _event("d", "system:kube-scheduler", "create", "pods", "binding"),
        "not json", "",
    ]
    assert audit_counts(lines, user="llmops-operator") == Counter(
        {("watch", "pods"): 1, ("patch", "trainingjobs/status"): 1, ("get", "(non-resource)"): 1})


def test_audit_counts_by_user_agent_without_a_user():
    lines = [_event("a", "admin", "list", "pods", agent="kopf/1.45.2"),
             _event("b", "admin", "create", "trainingjobs", agent="llmops-bench"),
             _event("c", "admin", "patch", "pods")]
    assert audit_counts(lines) == Counter({("list", "pods"): 1, ("patch", "pods"): 1})


def test_per_unit():
    counts = Counter({("patch", "pods"): 8, ("create", "events"): 2, ("get", "trainingjobs"): 3,
                      ("list", "pods"): 3, ("watch", "pods"): 1})
    got = per_unit(counts, children=5, jobs=2)
    assert (got["writes"], got["reads"], got["watches"]) == (10, 6, 1)
    assert got["writes_per_child"] == 2.0 and got["reads_per_job"] == 3.0


def test_emulator_counts_requests_per_token(tmp_path):
    from llmops.sandbox.apiserver import ApiServer
    from llmops.sandbox.node.client import ApiException, Kube

    with ApiServer() as server:
        kube = Kube(str(server.write_kubeconfig(tmp_path / "kc", token="alice")))
        try:
            kube.get("/api/v1/namespaces/default/configmaps")
            kube.request("POST", "/api/v1/namespaces/default/configmaps",
                         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
            with pytest.raises(ApiException):
                kube.get("/api/v1/namespaces/default/configmaps/absent")
            kube.get("/api/v1")
        finally:
            kube.close()
        assert server.requests.by_verb_resource("alice") == Counter(
            {("list", "configmaps"): 1, ("create", "configmaps"): 1, ("get", "configmaps"): 1,
             ("get", "(non-resource)"): 1})
        assert server.requests.by_verb_resource("bob") == Counter()


def test_smoke_two_jobs_on_the_emulator(capsys):
    """The whole bench at a tiny size: 2 jobs on the emulated API server, one operator."""
    from bench.operator_scale import main

    assert main(["--jobs", "2", "--drain", "5", "--timeout", "120"]) == 0
    out = capsys.readouterr().out
    assert "all pods bound: 2/2 jobs" in out
    assert "writes per child object" in out and "peak RSS MiB" in out
    assert "children: 20 " in out  # 2 x (4 pods, Service, ServiceAccount, Lease, Role, RoleBinding, PodGroup)
