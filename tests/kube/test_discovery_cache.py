"""Discovery answers are cached, absent API groups too (issue 21): a job that asks for an
uninstalled gang backend costs no discovery request per reconcile, and an API installed later
is seen once the TTL has passed. A child of a kind that is not served raises NotServedError
(a 404 about the API, which the refusal classifier tells from a missing object)."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException
from llmops.kube.client import Kube, NotServedError

VOLCANO = "/apis/scheduling.volcano.sh/v1beta1"


class _Resp:
    def __init__(self, status: int, body: str) -> None:
        self.status, self.reason, self.data = status, "x", body

    def getheaders(self) -> dict[str, str]:
        return {}


class FakeApi:
    """Answers discovery GETs from a dict (path -> resources); counts every call."""

    def __init__(self, served: dict[str, list[dict]]) -> None:
        self.served = served
        self.calls: list[str] = []

    def call_api(self, path: str, method: str, **_: object) -> _Resp:
        self.calls.append(f"{method} {path}")
        if method == "GET" and path in self.served:
            return _Resp(200, json.dumps({"resources": self.served[path]}))
        if method == "GET":  # what a real server answers for an absent group: a bare 404
            raise ApiException(http_resp=_Resp(404, "404 page not found"))
        return _Resp(200, json.dumps({"kind": "PodGroup"}))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def podgroup() -> dict:
    return {"apiVersion": "scheduling.volcano.sh/v1beta1", "kind": "PodGroup", "metadata": {"name": "g", "namespace": "ns"}}


def test_an_absent_group_is_asked_once_per_ttl_and_raises_not_served() -> None:
    api, clock = FakeApi({}), Clock()
    kube = Kube(api, clock=clock, discovery_ttl=60)  # type: ignore[arg-type]
    for _ in range(5):  # five reconciles: apply fails, list finds nothing, served() is empty
        with pytest.raises(NotServedError) as err:
            kube.apply(podgroup())
        assert err.value.status == 404 and err.value.api_version == "scheduling.volcano.sh/v1beta1"
        assert kube.list("scheduling.volcano.sh/v1beta1", "PodGroup", "ns") == []
        assert kube.served("scheduling.volcano.sh/v1beta1") == set()
    assert api.calls == [f"GET {VOLCANO}"]
    # Volcano is installed; after the TTL the next apply finds it.
    api.served[VOLCANO] = [{"name": "podgroups", "kind": "PodGroup", "namespaced": True}]
    clock.now = 59
    with pytest.raises(NotServedError):
        kube.apply(podgroup())
    clock.now = 61
    kube.apply(podgroup())
    assert kube.served("scheduling.volcano.sh/v1beta1") == {"podgroups"}
    assert api.calls == [f"GET {VOLCANO}", f"GET {VOLCANO}", f"PATCH {VOLCANO}/namespaces/ns/podgroups/g"]


def test_a_discovery_outage_is_not_taken_for_an_absent_group() -> None:
    class Down(FakeApi):
        def call_api(self, path: str, method: str, **kw: object) -> _Resp:
            self.calls.append(f"{method} {path}")
            status = {"kind": "Status", "code": 503, "reason": "ServiceUnavailable", "message": "x"}
            raise ApiException(http_resp=_Resp(503, json.dumps(status)))

    kube = Kube(Down({}))  # type: ignore[arg-type]
    with pytest.raises(Exception) as err:
        kube.served("scheduling.volcano.sh/v1beta1")
    assert not isinstance(err.value, NotServedError) and getattr(err.value, "status", None) == 503
