"""Watch-backed reads (llmops.kube.cache): the pure rules, and the informers against the
emulated and the real API server (list once, then follow the watch; read your writes; absence
answered locally only for kinds cached whole)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llmops.kube.cache import CachedKube, Informer, _holds, _labels_match
from llmops.kube.client import Kube, load_api_client
from llmops.sandbox.testing import eventually


def obj(name: str, rv: str, uid: str = "u1", ns: str = "ns", **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": ns, "resourceVersion": rv, "uid": uid, "labels": labels}}


def test_equality_selectors_are_evaluated_and_others_are_not() -> None:
    assert _labels_match({"a": "1", "b": "2"}, "a=1,b=2") is True
    assert _labels_match({"a": "1"}, "a=1,b=2") is False
    assert _labels_match({"a": "1"}, None) is True
    assert _labels_match({"a": "1"}, "a!=1") is None  # the API server evaluates it
    assert _labels_match({"a": "1"}, "a in (1)") is None


def test_an_object_holds_what_was_applied_whatever_the_server_added() -> None:
    applied = {"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"ports": [{"port": 80}]}}
    served = {"metadata": {"name": "a", "labels": {"x": "1"}, "uid": "u"}, "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}
    assert _holds(served, applied)
    assert not _holds({**served, "metadata": {"name": "a", "labels": {"x": "2"}}}, applied)  # a hand edit
    assert not _holds({**served, "spec": {"ports": []}}, applied)


def test_an_older_copy_never_replaces_a_newer_one() -> None:
    inf = Informer(kube=None, api_version="v1", kind="ConfigMap")  # type: ignore[arg-type]
    inf.observe(obj("a", "10"))
    inf.observe(obj("a", "7"))  # our write's answer, arriving after a newer watch event
    assert inf.get("ns", "a")["metadata"]["resourceVersion"] == "10"
    inf.observe(obj("a", "11"))
    assert inf.get("ns", "a")["metadata"]["resourceVersion"] == "11"


def test_a_deletion_of_another_object_with_the_name_keeps_the_successor() -> None:
    inf = Informer(kube=None, api_version="v1", kind="ConfigMap")  # type: ignore[arg-type]
    inf.observe(obj("a", "10", uid="new"))
    inf.observe(obj("a", "9", uid="old"), deleted=True)
    assert inf.get("ns", "a") is not None
    inf.observe(obj("a", "12", uid="new"), deleted=True)
    assert inf.get("ns", "a") is None


def test_lists_by_the_indexed_label_read_the_index_and_follow_relabels_and_deletions() -> None:
    inf = Informer(kube=None, api_version="v1", kind="ConfigMap", index_label="owner")  # type: ignore[arg-type]
    inf.observe(obj("a1", "1", owner="a", role="w"))
    inf.observe(obj("a2", "2", owner="a"))
    inf.observe(obj("b1", "3", owner="b", role="w"))
    inf.observe(obj("a1", "4", ns="other", owner="a"))
    inf.observe(obj("none", "5"))

    def names(selector: str, ns: str | None = "ns") -> list[str]:
        return [o["metadata"]["name"] for o in inf.list(ns, selector) or []]

    assert names("owner=a") == ["a1", "a2"] and names("role=w,owner=a") == ["a1"]
    assert inf.index == {("ns", "a"): {"a1", "a2"}, ("ns", "b"): {"b1"}, ("other", "a"): {"a1"}}
    assert names("owner=a", ns=None) == ["a1", "a1", "a2"]  # no namespace: a scan, the same answer
    inf.observe(obj("a2", "6", owner="b"))  # relabelled: it moves
    assert names("owner=a") == ["a1"] and names("owner=b") == ["a2", "b1"]
    inf.observe(obj("a1", "7", owner="a"), deleted=True)
    assert names("owner=a") == [] and ("ns", "a") not in inf.index


def test_a_filtered_cache_answers_only_lists_that_imply_its_filter() -> None:
    inf = Informer(kube=None, api_version="v1", kind="Pod", label_filter="m=op")  # type: ignore[arg-type]
    assert not inf.answers("m=op")  # not synced yet
    inf.synced.set()
    assert inf.answers("m=op,job=x") and not inf.answers("job=x") and not inf.answers(None)


def test_a_write_is_no_news_only_to_the_reconcile_that_made_it() -> None:
    kube = CachedKube(Kube(None), [("v1", "ConfigMap", None)])  # type: ignore[arg-type]
    made = obj("child", "5")
    with kube.writing_as(("FinetuneJob", "ns", "ft")):
        kube._remember(made)
    assert kube.written_by(made, ("FinetuneJob", "ns", "ft"))  # the writer: nothing new
    assert not kube.written_by(made, ("TrainingJob", "ns", "child"))  # the child's own reconcile: news
    assert not kube.written_by(obj("child", "6"), ("FinetuneJob", "ns", "ft"))  # a later change: news


def test_cached_objects_keep_no_managed_fields() -> None:
    inf = Informer(kube=None, api_version="v1", kind="ConfigMap")  # type: ignore[arg-type]
    o = obj("a", "1")
    o["metadata"]["managedFields"] = [{"manager": "llmops-operator", "fieldsV1": {"f:data": {}}}]
    inf.observe(o)
    assert "managedFields" not in inf.get("ns", "a")["metadata"] and inf.get("ns", "a")["metadata"]["uid"] == "u1"


def test_a_deleted_object_takes_the_memory_of_our_writes_with_it() -> None:
    kube = CachedKube(Kube(None), [("v1", "ConfigMap", None)])  # type: ignore[arg-type]
    with kube.writing_as(("TrainingJob", "ns", "tj")):
        kube._remember(obj("child", "5"))
    kube._applied[("v1", "ConfigMap", "ns", "child")] = "digest"
    kube.informers[("v1", "ConfigMap")].observe(obj("child", "6"), deleted=True)  # the watch's DELETED
    assert kube._written == {} and kube._applied == {}


class Counting(CachedKube):
    """Counts the requests that reach the API server (watch streams go around ``_request``)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.requests: list[tuple[str, str]] = []

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        self.requests.append((method, path))
        return super()._request(method, path, **kw)


@pytest.fixture
def cached(kubeconfig: Path) -> Any:
    kube = Counting(Kube(load_api_client(str(kubeconfig))), [("v1", "ConfigMap", None), ("v1", "Pod", "m=op")])
    kube.start()
    assert kube.wait_synced(30)
    yield kube
    kube.stop()


def test_reads_come_from_the_watch_and_writes_are_read_back_at_once(cached: Counting, fresh_namespace: str, kubeconfig: Path) -> None:
    ns = fresh_namespace
    other = Kube(load_api_client(str(kubeconfig)))  # someone else's writes reach us by the watch
    other.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "theirs", "namespace": ns}, "data": {"a": "1"}})
    eventually(lambda: cached.get("v1", "ConfigMap", ns, "theirs"), timeout=30)
    cached.requests.clear()
    assert cached.get("v1", "ConfigMap", ns, "absent") is None  # cached whole: absence is known
    names = [c["metadata"]["name"] for c in cached.list("v1", "ConfigMap", ns)]
    assert "theirs" in names and "absent" not in names
    assert cached.requests == []

    made = cached.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine", "namespace": ns}, "data": {"b": "2"}})
    assert cached.get("v1", "ConfigMap", ns, "mine")["metadata"]["uid"] == made["metadata"]["uid"]  # before any watch event

    desired = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "namespace": ns}, "data": {"c": "3"}}
    cached.apply(desired)
    cached.requests.clear()
    cached.apply(desired)  # the same again, and the object holds it: no request
    assert cached.requests == []
    other.patch("v1", "ConfigMap", ns, "applied", {"data": {"c": "edited"}})  # a hand edit converges back
    eventually(lambda: cached.get("v1", "ConfigMap", ns, "applied")["data"] == {"c": "edited"}, timeout=30)
    cached.apply(desired)
    assert [m for m, _ in cached.requests] == ["PATCH"] and other.get("v1", "ConfigMap", ns, "applied")["data"] == {"c": "3"}

    other.delete("v1", "ConfigMap", ns, "theirs")
    eventually(lambda: cached.get("v1", "ConfigMap", ns, "theirs") is None, timeout=30)


def test_a_filtered_kind_asks_the_server_for_what_it_does_not_hold(cached: Counting, fresh_namespace: str) -> None:
    ns = fresh_namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unlabelled", "namespace": ns},
           "spec": {"containers": [{"name": "c", "image": "x"}]}}
    Kube(cached.api).create(pod)
    cached.requests.clear()
    assert cached.get("v1", "Pod", ns, "unlabelled") is not None  # not ours to hold: read from the server
    assert [m for m, _ in cached.requests] == ["GET"]
    assert cached.list("v1", "Pod", ns, "m=op") == []
