"""The fault proxy's pieces without a real cluster: request classification (shared with the
emulator), which resumptions count as expired, which headers are relayed, reading the
upstream kubeconfig, and the proxy itself relaying to an emulated API server (requests, a
failed write that never reaches the upstream, a followed log stream as it grows, upgrades
refused, an unreachable upstream, open watches ended by stop). The same faults against the
real control plane are covered by tests/contract/test_faults.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3
from llmops.sandbox.apiserver import ApiServer
from llmops.sandbox.apiserver.faults import created_name
from llmops.sandbox.apiserver.requestinfo import RequestInfo, parse
from llmops.sandbox.faultproxy import LIST_TOO_OLD, FaultProxy, Upstream, expired, request_headers, response_headers

NS = "/api/v1/namespaces/ns"
PARSE = [
    ("GET", f"{NS}/pods", {}, ("list", "", "v1", "pods", "", "ns", None, ())),
    ("GET", f"{NS}/pods", {"watch": "true"}, ("watch", "", "v1", "pods", "", "ns", None, ())),
    ("GET", "/api/v1/watch/namespaces/ns/pods", {}, ("watch", "", "v1", "pods", "", "ns", None, ())),
    ("GET", f"{NS}/pods/p", {}, ("get", "", "v1", "pods", "", "ns", "p", ())),
    ("GET", f"{NS}/pods/p", {"watch": "1"}, ("watch", "", "v1", "pods", "", "ns", "p", ())),
    ("PATCH", f"{NS}/pods/p/status", {}, ("patch", "", "v1", "pods", "status", "ns", "p", ())),
    ("GET", f"{NS}/pods/p/log", {"follow": "true"}, ("get", "", "v1", "pods", "log", "ns", "p", ())),
    ("POST", f"{NS}/pods/p/binding", {}, ("create", "", "v1", "pods", "binding", "ns", "p", ())),
    ("GET", NS, {}, ("get", "", "v1", "namespaces", "", None, "ns", ())),
    ("PUT", f"{NS}/finalize", {}, ("update", "", "v1", "namespaces", "finalize", None, "ns", ())),
    ("PATCH", f"{NS}/status", {}, ("patch", "", "v1", "namespaces", "status", None, "ns", ())),
    ("GET", "/api/v1/nodes", {}, ("list", "", "v1", "nodes", "", None, None, ())),
    ("POST", "/apis/llmops.dev/v1alpha1/namespaces/ns/trainingjobs", {},
     ("create", "llmops.dev", "v1alpha1", "trainingjobs", "", "ns", None, ())),
    ("PATCH", "/apis/llmops.dev/v1alpha1/namespaces/ns/trainingjobs/t/status", {},
     ("patch", "llmops.dev", "v1alpha1", "trainingjobs", "status", "ns", "t", ())),
    ("DELETE", "/apis/apps/v1/namespaces/ns/deployments", {},
     ("deletecollection", "apps", "v1", "deployments", "", "ns", None, ())),
    ("DELETE", "/apis/apps/v1/namespaces/ns/deployments/d", {},
     ("delete", "apps", "v1", "deployments", "", "ns", "d", ())),
    ("GET", f"{NS}/services/s/proxy/a/b", {}, ("get", "", "v1", "services", "proxy", "ns", "s", ("a", "b"))),
    ("HEAD", "/api/v1/pods", {}, (None, "", "v1", "pods", "", None, None, ())),
]
NOT_RESOURCES = ["/healthz", "/version", "/api", "/api/v1", "/apis", "/apis/apps", "/apis/apps/v1",
                 "/openapi/v3", "/api/v1/watch"]


@pytest.mark.parametrize(("method", "path", "query", "want"), PARSE, ids=[f"{m} {p} {q}" for m, p, q, _ in PARSE])
def test_parse(method: str, path: str, query: dict[str, str], want: tuple) -> None:
    assert parse(method, path, query) == RequestInfo(*want)


@pytest.mark.parametrize("path", NOT_RESOURCES)
def test_non_resource_paths_are_not_classified(path: str) -> None:
    assert parse("GET", path, {}) is None


def test_resource_names_a_subresource_as_fault_rules_do() -> None:
    assert [parse("PATCH", p, {}).resource for p in (f"{NS}/pods/p", f"{NS}/pods/p/status")] == ["pods", "pods/status"]


WATCH, LIST, GET = (parse("GET", f"{NS}/pods", q) for q in ({"watch": "true"}, {}, {}))
EXPIRED = [  # (info, query, expired_before) -> (code, message) or None
    (WATCH, {"resourceVersion": "99"}, 100, (410, "too old resource version: 99 (100)")),
    (WATCH, {"resourceVersion": "100"}, 100, None),  # resuming from the expiry point loses nothing
    (WATCH, {"resourceVersion": "0"}, 100, None),  # "any version": served from the current state
    (WATCH, {}, 100, None),
    (WATCH, {"resourceVersion": "5"}, 0, None),  # nothing expired yet
    (LIST, {"resourceVersion": "5", "resourceVersionMatch": "Exact"}, 100, (410, LIST_TOO_OLD)),
    (LIST, {"resourceVersion": "5"}, 100, None),  # NotOlderThan: the current state will do
    (LIST, {"resourceVersion": "5", "resourceVersionMatch": "NotOlderThan"}, 100, None),
]


@pytest.mark.parametrize(("info", "query", "before", "want"), EXPIRED)
def test_expired(info: RequestInfo, query: dict[str, str], before: int, want: tuple | None) -> None:
    error = expired(info, query, before)
    assert (error and (error.code, error.message)) == want
    if error is not None:
        assert error.status_body()["reason"] == "Expired"


def test_relayed_headers_drop_the_connection_and_the_clients_credentials() -> None:
    sent = {"Host": "proxy", "Authorization": "Bearer sandbox", "Connection": "keep-alive",
            "Content-Length": "3", "Content-Type": "application/merge-patch+json", "Accept": "application/json",
            "User-Agent": "kubectl", "Transfer-Encoding": "chunked"}
    assert request_headers(sent, "Bearer real") == {
        "Content-Type": "application/merge-patch+json", "Accept": "application/json", "User-Agent": "kubectl",
        "Authorization": "Bearer real"}
    assert "Authorization" not in request_headers(sent, None)
    got = {"Content-Type": "application/json", "Transfer-Encoding": "chunked", "Retry-After": "2",
           "Audit-Id": "x", "Content-Encoding": "gzip"}
    assert response_headers(got) == {"Content-Type": "application/json", "Retry-After": "2", "Audit-Id": "x",
                                     "Content-Encoding": "gzip"}


# -- the proxy in front of an emulated API server ---------------------------------------------


@pytest.fixture
def upstream(api_server: ApiServer, tmp_path: Path) -> tuple[ApiServer, Path]:
    return api_server, api_server.write_kubeconfig(tmp_path / "upstream")


@pytest.fixture
def proxy(upstream: tuple[ApiServer, Path], tmp_path: Path) -> Iterator[FaultProxy]:
    with FaultProxy(upstream[1], tmp_path / "proxy") as p:
        yield p


@pytest.fixture
def http() -> Iterator[urllib3.PoolManager]:
    pool = urllib3.PoolManager()
    yield pool
    pool.clear()


def test_upstream_reads_the_kubeconfig(upstream: tuple[ApiServer, Path]) -> None:
    up = Upstream(upstream[1])
    assert (up.url, up.authorization, up.ssl) == (upstream[0].url, "Bearer sandbox", False)


def test_proxy_writes_a_kubeconfig_for_itself(proxy: FaultProxy) -> None:
    up = Upstream(proxy.kubeconfig)
    assert up.url == proxy.url and proxy.url.startswith("http://127.0.0.1:")


def test_a_failed_write_never_reaches_the_upstream(proxy: FaultProxy, upstream: tuple[ApiServer, Path],
                                                   http: urllib3.PoolManager) -> None:
    srv = upstream[0]
    url = f"{proxy.url}/api/v1/namespaces/default/configmaps"

    def create(name: str) -> urllib3.BaseHTTPResponse:
        return http.request("POST", url, json={"metadata": {"name": name}}, retries=False)

    assert create("a").status == 201
    proxy.faults.fail(verb="create", resource="configmaps", code=429, retry_after=2)
    refused = create("b")
    assert (refused.status, refused.headers["Retry-After"], refused.json()["reason"]) == (429, "2", "TooManyRequests")
    assert [c["metadata"]["name"] for c in srv.objects("configmaps")] == ["a"]
    assert (proxy.faults.injected, srv.faults.injected) == (1, 0)
    assert create("b").status == 201
    listed = http.request("GET", url).json()
    assert [c["metadata"]["name"] for c in listed["items"]] == ["a", "b"]


def test_a_followed_log_is_relayed_as_it_grows(proxy: FaultProxy, upstream: tuple[ApiServer, Path],
                                              http: urllib3.PoolManager) -> None:
    srv = upstream[0]
    pods = f"{proxy.url}/api/v1/namespaces/default/pods"
    created = http.request("POST", pods, json={"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    assert created.status == 201, created.data
    srv.append_log("default", "p", "c", "one\n")
    resp = http.request("GET", f"{pods}/p/log", fields={"follow": "true"}, preload_content=False)
    chunks = resp.stream(None)
    assert next(chunks) == b"one\n"  # before the log grows: nothing waits for the end
    srv.append_log("default", "p", "c", "two\n")
    assert next(chunks) == b"two\n"
    http.request("PATCH", f"{pods}/p/status", json={"status": {"phase": "Succeeded"}},
                 headers={"Content-Type": "application/merge-patch+json"})
    assert b"".join(chunks) == b""  # the stream ends with the pod


def test_upgrades_are_refused_with_a_status(proxy: FaultProxy, http: urllib3.PoolManager) -> None:
    resp = http.request("POST", f"{proxy.url}/api/v1/namespaces/default/pods/p/exec",
                        headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"})
    assert (resp.status, resp.json()["kind"]) == (400, "Status")
    assert "exec" in resp.json()["message"]


def test_an_unreachable_upstream_answers_503(tmp_path: Path, http: urllib3.PoolManager) -> None:
    srv = ApiServer().start()
    kubeconfig = srv.write_kubeconfig(tmp_path / "upstream")
    srv.stop()
    with FaultProxy(kubeconfig, tmp_path / "proxy") as proxy:
        resp = http.request("GET", f"{proxy.url}/api/v1/namespaces", retries=False)
    assert (resp.status, resp.json()["reason"]) == (503, "ServiceUnavailable")


def test_expiry_starts_at_the_upstreams_current_version(proxy: FaultProxy, upstream: tuple[ApiServer, Path],
                                                       http: urllib3.PoolManager) -> None:
    http.request("POST", f"{proxy.url}/api/v1/namespaces/default/configmaps", json={"metadata": {"name": "x"}})
    proxy.faults.expire_history()
    assert proxy.expired_before == upstream[0].store.rv > 0


def test_stop_ends_open_watches(upstream: tuple[ApiServer, Path], tmp_path: Path, http: urllib3.PoolManager) -> None:
    proxy = FaultProxy(upstream[1], tmp_path / "proxy").start()
    resp = http.request("GET", f"{proxy.url}/api/v1/namespaces/default/configmaps",
                        fields={"watch": "true", "timeoutSeconds": "600"}, preload_content=False, timeout=60)
    body: list[bytes] = []
    reader = threading.Thread(target=lambda: body.append(resp.read()))
    reader.start()
    proxy.stop()
    reader.join(30)
    assert not reader.is_alive() and body == [b""]


@pytest.mark.parametrize(("verb", "name", "body", "want"), [
    ("create", None, b'{"metadata": {"name": "w-0"}}', "w-0"),
    ("create", None, b'{"metadata": {"generateName": "w-"}}', None),
    ("create", None, b"not json", None),
    ("create", None, b"", None),
    ("patch", "w-1", b'{"metadata": {"name": "w-0"}}', "w-1"),
])
def test_created_name_reads_a_creates_body(verb: str, name: str | None, body: bytes, want: str | None) -> None:
    assert created_name(verb, name, body) == want
