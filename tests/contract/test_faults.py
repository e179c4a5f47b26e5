"""Fault injection on both clusters: failed requests with a chosen code that do not mutate
state, 429 with Retry-After, matching by verb/resource/subresource/name, faults that start
after N matching requests, failed watch requests, cutting and stalling watch streams,
expiring the watch history.

Every test runs twice (fixture `faulty`): on the emulated API server with its own faults, and
on the real control plane through a ``FaultProxy`` carrying the same ``Faults``. The module's
`kubeconfig` is the faulty one, so `kube` and `fresh_namespace` go through the faults too.
The assertions are the same on both sides: one fault, one client-visible behaviour.
ConfigMaps here carry a label and watches select it, because the real controller manager
adds ``kube-root-ca.crt`` to every new namespace.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from contract_helpers import Failed, Kube, configmap, ns_path, pod

CODES = [(409, "Conflict"), (429, "TooManyRequests"), (500, "InternalError"), (503, "ServiceUnavailable")]
LABEL = {"contract.llmops.dev/suite": "faults"}
SELECT = {"labelSelector": "contract.llmops.dev/suite=faults"}


@pytest.fixture
def kubeconfig(faulty):
    return faulty.kubeconfig


@pytest.fixture
def faults(faulty):
    return faulty.faults


def cm(name: str, data: dict[str, str] | None = None) -> dict[str, Any]:
    return configmap(name, data, labels=LABEL)


def names(events: list[dict[str, Any]], kind: str = "ADDED") -> list[str]:
    return [e["object"]["metadata"]["name"] for e in events if e["type"] == kind]


def timed_stream(kube: Kube, path: str, query: dict[str, Any], timeout: float = 15) -> list[tuple[float, dict]]:
    """Read a watch until the server ends it: (monotonic arrival time, event) per line."""
    raw = kube.api.call_api(path, "GET", query_params=list(query.items()),
                            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                            _preload_content=False, _request_timeout=timeout)
    raw = raw[0] if isinstance(raw, tuple) else raw
    out, buf = [], b""
    for chunk in raw.stream(None):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        out += [(time.monotonic(), json.loads(line)) for line in lines if line.strip()]
    return out


@pytest.mark.parametrize(("code", "reason"), CODES, ids=[str(c) for c, _ in CODES])
def test_failed_write_does_not_mutate(faults, kube, fresh_namespace, code: int, reason: str) -> None:
    path = ns_path(fresh_namespace, "configmaps", "f")
    kube.create(ns_path(fresh_namespace, "configmaps"), cm("f", {"a": "1"}))
    faults.fail(verb="patch", resource="configmaps", code=code, count=1)
    with pytest.raises(Failed) as e:
        kube.patch(path, {"data": {"a": "2"}})
    assert (e.value.status, e.value.reason, faults.injected) == (code, reason, 1)
    if code == 429:
        assert e.value.headers.get("Retry-After") == "1"
        assert e.value.body["details"]["retryAfterSeconds"] == 1
    assert kube.get(path)["data"] == {"a": "1"}
    assert kube.patch(path, {"data": {"a": "2"}})["data"] == {"a": "2"}  # count consumed


def test_failed_create_and_delete_leave_the_cluster_as_it_was(faults, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    kube.create(path, cm("kept"))
    faults.fail(verb="create", resource="configmaps", code=500)
    faults.fail(verb="delete", resource="configmaps", code=503, name="kept")
    with pytest.raises(Failed):
        kube.create(path, cm("new"))
    with pytest.raises(Failed):
        kube.delete(f"{path}/kept")
    assert sorted(c["metadata"]["name"] for c in kube.get(path, query=SELECT)["items"]) == ["kept"]


def test_matching_by_subresource_and_name(faults, kube, fresh_namespace, eventually) -> None:
    base = ns_path(fresh_namespace, "pods")
    for n in ("a", "b"):  # the real server admits pods once the namespace's ServiceAccount exists
        eventually(lambda n=n: kube.create(base, pod(n)), timeout=30)
    faults.fail(verb="patch", resource="pods/status", code=503, count=2, name="a", retry_after=3)
    kube.patch(f"{base}/a", {"metadata": {"labels": {"x": "1"}}})  # main resource: not matched
    kube.patch(f"{base}/b/status", {"status": {"phase": "Running"}})  # other name: not matched
    for _ in range(2):
        with pytest.raises(Failed) as e:
            kube.patch(f"{base}/a/status", {"status": {"phase": "Running"}})
        assert e.value.headers.get("Retry-After") == "3"
    kube.patch(f"{base}/a/status", {"status": {"phase": "Running"}})
    assert faults.injected == 2


def test_a_create_is_matched_by_the_name_in_its_body(faults, kube, fresh_namespace) -> None:
    """A POST carries the new object's name in its body, not its path: a rule naming the object
    still matches its creation, and only its."""
    path = ns_path(fresh_namespace, "configmaps")
    faults.fail(verb="create", resource="configmaps", code=503, name="target")
    kube.create(path, cm("other"))
    with pytest.raises(Failed) as e:
        kube.create(path, cm("target"))
    assert e.value.status == 503
    kube.create(path, cm("target"))
    assert faults.injected == 1
    assert sorted(c["metadata"]["name"] for c in kube.get(path, query=SELECT)["items"]) == ["other", "target"]


def test_faults_start_after_n_matching_requests(faults, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    faults.fail(verb="create", resource="configmaps", code=503, count=2, after=2)
    kube.create(path, cm("one"))
    kube.create(path, cm("two"))
    for _ in range(2):
        with pytest.raises(Failed) as e:
            kube.create(path, cm("three"))
        assert e.value.status == 503
    kube.create(path, cm("three"))
    assert sorted(c["metadata"]["name"] for c in kube.get(path, query=SELECT)["items"]) == ["one", "three", "two"]


def test_a_watch_request_can_fail(faults, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    faults.fail(verb="watch", resource="configmaps", code=500, namespace=fresh_namespace)
    with pytest.raises(Failed) as e:
        kube.get(path, query={"watch": "true", "timeoutSeconds": "1"})
    assert (e.value.status, e.value.reason) == (500, "InternalError")
    assert kube.get(path, query=SELECT)["items"] == []  # a list is not a watch


def test_expire_history_makes_resumption_410(faults, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    kube.create(path, cm("before"))
    faults.expire_history()
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1", **SELECT})
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [("ERROR", 410, "Expired")]
    assert events[0]["object"]["message"].startswith(f"too old resource version: {rv} (")
    fresh = kube.get(path)["metadata"]["resourceVersion"]  # a relist gives a version to resume from
    kube.create(path, cm("after"))
    events = kube.stream(path, {"watch": "true", "resourceVersion": fresh, "timeoutSeconds": "1", **SELECT})
    assert names(events) == ["after"]


@contextlib.contextmanager
def cutting(faults, plural: str) -> Iterator[None]:
    """Cut the watches of `plural` every 50 ms while the block runs (a watch opened inside it
    may not be open yet at the first cut)."""
    done = threading.Event()

    def cutter() -> None:
        while not done.wait(0.05):
            faults.cut_watches(plural)

    t = threading.Thread(target=cutter)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()


def test_cut_watches(faults, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    started = time.monotonic()
    with cutting(faults, "configmaps"):
        events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60", **SELECT},
                             timeout=30)
    assert events == [] and time.monotonic() - started < 30
    kube.create(path, cm("seen"))
    started = time.monotonic()
    with cutting(faults, "secrets"):  # another plural: this watch runs until its timeout
        events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "2", **SELECT})
    assert names(events) == ["seen"] and time.monotonic() - started >= 1.5


def test_stalled_watch_delivers_later(faults, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    stalled_at = time.monotonic()
    faults.stall_watches("configmaps", seconds=1.0)
    kube.create(path, cm("late"))
    events = timed_stream(kube, path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3", **SELECT})
    assert [e["object"]["metadata"]["name"] for _, e in events] == ["late"]
    assert events[0][0] - stalled_at >= 1.0  # held back for the stall, then delivered


def answers(kube: Kube, faults, ns: str) -> list[Any]:
    """What a client sees for a series of faults: code, Status body and Retry-After of each
    refused request, and the event a resumption after an expiry gets (versions masked)."""
    path = ns_path(ns, "configmaps")
    seen: list[Any] = []

    def refused(call, *args: Any, **kw: Any) -> None:
        with pytest.raises(Failed) as e:
            call(*args, **kw)
        seen.append((e.value.status, e.value.body, e.value.headers.get("Retry-After")))

    rv = kube.get(path)["metadata"]["resourceVersion"]
    kube.create(path, cm("x"))
    for code, _ in CODES:
        faults.fail(verb="patch", resource="configmaps", code=code, message=f"m{code}")
        refused(kube.patch, f"{path}/x", {"data": {"a": "1"}})
    faults.fail(verb="create", resource="configmaps", code=503, retry_after=7)
    refused(kube.create, path, cm("y"))
    faults.fail(verb="delete", resource="configmaps", code=500, name="x")
    refused(kube.delete, f"{path}/x")
    faults.fail(verb="watch", resource="configmaps", code=500)  # a GET's 429 the client retries itself
    refused(kube.get, path, query={"watch": "true", "timeoutSeconds": "1"})
    faults.expire_history()
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"})
    seen.append([(e["type"], {**e["object"], "message": e["object"]["message"].split(":")[0]}) for e in events])
    return seen


def test_the_same_faults_look_alike_on_both_clusters(api_server, control_plane, tmp_path) -> None:
    """Differential: one series of faults, the emulator and the proxied real server side by side."""
    from kubernetes import config
    from llmops.sandbox.faultproxy import FaultProxy

    got = {}
    with FaultProxy(control_plane, tmp_path / "proxy") as proxy:
        for side, kubeconfig, faults in (("emulated", api_server.write_kubeconfig(tmp_path / "kc"), api_server.faults),
                                         ("real", proxy.kubeconfig, proxy.faults)):
            client = config.new_client_from_config(config_file=str(kubeconfig))
            kube, ns = Kube(client), f"faults-diff-{side}-{uuid.uuid4().hex[:8]}"
            kube.create("/api/v1/namespaces", {"metadata": {"name": ns}})
            try:
                got[side] = answers(kube, faults, ns)
            finally:
                kube.delete(f"/api/v1/namespaces/{ns}")
                client.close()
    assert got["emulated"] == got["real"]
    assert len(got["real"]) == len(CODES) + 4 and got["real"][-1][0][1]["code"] == 410
