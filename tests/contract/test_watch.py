"""Watch: initial ADDED events only without a resourceVersion (or "0"), resume from a
resourceVersion, BOOKMARK when asked, 410 Gone as an ERROR event for versions out of the
retained window, timeoutSeconds ending the stream, selectors and namespace filtering."""

from __future__ import annotations

import threading
import time

from contract_helpers import configmap, ns_path


def test_initial_events_then_resume(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    kube.create(path, configmap("a"))
    listed = kube.get(path)
    events = kube.stream(path, {"watch": "true", "timeoutSeconds": "1"})
    assert ("ADDED", "a") in [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    rv = listed["metadata"]["resourceVersion"]
    kube.create(path, configmap("b"))
    kube.patch(ns_path(fresh_namespace, "configmaps", "a"), {"data": {"x": "1"}})
    kube.delete(ns_path(fresh_namespace, "configmaps", "b"))
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "1"})
    events = [e for e in events if e["object"]["metadata"]["name"] in ("a", "b")]
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events]
    assert seen == [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(rv)


def test_live_events_and_timeout(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]

    def writer() -> None:
        time.sleep(0.2)
        kube.create(path, configmap("live"))

    t = threading.Thread(target=writer)
    t.start()
    started = time.monotonic()
    events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "2"})
    t.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events
            if e["type"] != "BOOKMARK" and e["object"]["metadata"]["name"] != "kube-root-ca.crt"] == [("ADDED", "live")]
    assert time.monotonic() - started < 15  # ended by timeoutSeconds, not by the client


def test_bookmarks(kube, fresh_namespace: str) -> None:
    """An idle watch that asked for bookmarks gets one carrying the resource's progress. A real
    server sends it shortly before the watch's deadline (and about once a minute), and only
    once configmaps moved on elsewhere since the watch began; the emulator fixture every 0.2 s."""
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    elsewhere = ns_path("default", "configmaps", f"progress-{fresh_namespace}")
    kube.create(ns_path("default", "configmaps"), configmap(f"progress-{fresh_namespace}"))
    stop = threading.Event()

    def progress() -> None:  # writes outside the watched namespace while the watch is open
        for i in range(60):
            if stop.wait(0.5):
                return
            kube.patch(elsewhere, {"data": {"tick": str(i)}})

    writer = threading.Thread(target=progress, daemon=True)
    writer.start()
    try:
        events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "allowWatchBookmarks": "true",
                                    "timeoutSeconds": "6"}, timeout=90)
    finally:
        stop.set()
        writer.join()
        kube.delete(elsewhere)
    assert [e["type"] for e in events if e["type"] != "BOOKMARK"] == []  # idle: nothing else
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= int(rv)


def test_too_old_version_is_410(emulator, kube, fresh_namespace: str) -> None:
    api_server = emulator("shrinks the emulator's event window; a real server answers 410 only for a "
                          "version etcd has compacted (every 5 minutes), so its 410 is injected by the "
                          "fault proxy in tests/contract/test_faults.py")
    api_server.store.log = type(api_server.store.log)(api_server.store.log, maxlen=5)
    path = ns_path(fresh_namespace, "configmaps")
    for i in range(10):
        kube.create(path, configmap(f"c{i}"))
    events = kube.stream(path, {"watch": "true", "resourceVersion": "1", "timeoutSeconds": "1"})
    assert len(events) == 1 and events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")


def test_selectors_and_namespace_filtering(kube, fresh_namespace: str) -> None:
    path = ns_path(fresh_namespace, "configmaps")
    rv = kube.get(path)["metadata"]["resourceVersion"]
    kube.create(ns_path("default", "configmaps"), configmap(f"elsewhere-{fresh_namespace}", labels={"w": "1"}))
    kube.create(path, configmap("in", labels={"w": "1"}))
    kube.create(path, configmap("out"))
    kube.patch(ns_path(fresh_namespace, "configmaps", "in"), {"metadata": {"labels": {"w": None}}})
    kube.patch(ns_path(fresh_namespace, "configmaps", "out"), {"metadata": {"labels": {"w": "1"}}})
    try:
        events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "labelSelector": "w=1",
                                    "timeoutSeconds": "1"})
        seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
        # leaving the selector reads as DELETED, entering it as ADDED
        assert seen == [("ADDED", "in"), ("DELETED", "in"), ("ADDED", "out")]
        events = kube.stream(path, {"watch": "true", "resourceVersion": rv, "fieldSelector": "metadata.name=out",
                                    "timeoutSeconds": "1"})
        assert {e["object"]["metadata"]["name"] for e in events} == {"out"}
    finally:
        kube.delete(ns_path("default", "configmaps", f"elsewhere-{fresh_namespace}"))
