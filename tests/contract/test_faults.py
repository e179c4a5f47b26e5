"""Fault injection (emulator only): failed requests with a chosen code that do not mutate
state, 429 with Retry-After, matching by verb/resource/subresource/name, faults that start
after N matching requests, cutting and stalling watch streams, expiring the watch history."""

from __future__ import annotations

import threading
import time

import pytest

from contract_helpers import Failed, configmap, ns_path

CODES = [(409, "Conflict"), (429, "TooManyRequests"), (500, "InternalError"), (503, "ServiceUnavailable")]


@pytest.mark.parametrize(("code", "reason"), CODES, ids=[str(c) for c, _ in CODES])
def test_failed_write_does_not_mutate(api_server, kube, fresh_namespace, code: int, reason: str) -> None:
    path = ns_path(fresh_namespace, "configmaps", "f")
    kube.create(ns_path(fresh_namespace, "configmaps"), configmap("f", {"a": "1"}))
    api_server.faults.fail(verb="patch", resource="configmaps", code=code, count=1)
    with pytest.raises(Failed) as e:
        kube.patch(path, {"data": {"a": "2"}})
    assert (e.value.status, e.value.reason) == (code, reason)
    if code == 429:
        assert e.value.headers.get("Retry-After") == "1"
        assert e.value.body["details"]["retryAfterSeconds"] == 1
    assert kube.get(path)["data"] == {"a": "1"}
    assert kube.patch(path, {"data": {"a": "2"}})["data"] == {"a": "2"}  # count consumed


def test_matching_by_subresource_and_name(api_server, kube, fresh_namespace) -> None:
    base = ns_path(fresh_namespace, "pods")
    for n in ("a", "b"):
        kube.create(base, {"metadata": {"name": n}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    api_server.faults.fail(verb="patch", resource="pods/status", code=503, count=2, name="a",
                           retry_after=3)
    kube.patch(f"{base}/a", {"metadata": {"labels": {"x": "1"}}})  # main resource: not matched
    kube.patch(f"{base}/b/status", {"status": {"phase": "Running"}})  # other name: not matched
    for _ in range(2):
        with pytest.raises(Failed) as e:
            kube.patch(f"{base}/a/status", {"status": {"phase": "Running"}})
        assert e.value.headers.get("Retry-After") == "3"
    kube.patch(f"{base}/a/status", {"status": {"phase": "Running"}})


def test_faults_start_after_n_matching_requests(api_server, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    api_server.faults.fail(verb="create", resource="configmaps", code=503, count=2, after=2)
    kube.create(path, configmap("one"))
    kube.create(path, configmap("two"))
    for _ in range(2):
        with pytest.raises(Failed) as e:
            kube.create(path, configmap("three"))
        assert e.value.status == 503
    kube.create(path, configmap("three"))
    assert sorted(c["metadata"]["name"] for c in kube.get(path)["items"]) == ["one", "three", "two"]


def test_expire_history_makes_resumption_410(api_server, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    kube.create(path, configmap("before"))
    api_server.faults.expire_history()
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"})
    assert [(e["type"], e["object"]["code"]) for e in events] == [("ERROR", 410)]
    fresh = kube.get(path)["metadata"]["resourceVersion"]  # a relist gives a version to resume from
    kube.create(path, configmap("after"))
    events = kube.stream(path, {"watch": "true", "resourceVersion": fresh, "timeoutSeconds": "1"})
    assert [e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED"] == ["after"]


def test_cut_watches(api_server, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]

    def cutter() -> None:
        time.sleep(0.3)
        api_server.faults.cut_watches("configmaps")

    t = threading.Thread(target=cutter)
    t.start()
    started = time.monotonic()
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "60"}, timeout=30)
    t.join()
    assert events == [] and time.monotonic() - started < 30


def test_stalled_watch_delivers_later(api_server, kube, fresh_namespace) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    api_server.faults.stall_watches("configmaps", seconds=1.0)
    kube.create(path, configmap("late"))
    started = time.monotonic()
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "3"})
    assert [e["object"]["metadata"]["name"] for e in events] == ["late"]
    assert time.monotonic() - started >= 1.0  # nothing arrived during the stall
