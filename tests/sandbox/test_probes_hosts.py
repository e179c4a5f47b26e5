"""Probe threshold bookkeeping (pure, times passed in), real probe checks against local
sockets, and the hosts-file rendering/resolution that stands in for cluster DNS."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest
from llmops.sandbox.node import hosts
from llmops.sandbox.node.probes import ProbeTracker, run_check


def test_readiness_flips_after_thresholds() -> None:
    t = ProbeTracker({"periodSeconds": 1, "failureThreshold": 2, "successThreshold": 2, "initialDelaySeconds": 5}, started_at=100.0)
    assert not t.due(104.9) and t.due(105.0)
    assert not t.record(True, "", 105) and not t.passing  # one success < successThreshold
    assert t.record(True, "", 106) and t.passing
    assert not t.due(106.5) and t.due(107)
    assert not t.record(False, "x", 107) and t.passing  # one failure < failureThreshold
    assert t.record(False, "x", 108) and not t.passing


def test_liveness_starts_passing() -> None:
    t = ProbeTracker({"failureThreshold": 1}, started_at=0, initial=True)
    assert t.passing and t.record(False, "down", 0) and not t.passing


@pytest.fixture
def http_server():
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/ok" else 500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_checks_against_real_sockets(http_server: int, tmp_path: Path) -> None:
    container = {"ports": [{"name": "http", "containerPort": http_server}]}
    check = lambda probe: run_check(probe, container, "127.0.0.1", {"PATH": "/usr/bin:/bin"}, tmp_path)  # noqa: E731
    assert check({"httpGet": {"path": "/ok", "port": "http"}})[0]
    ok, message = check({"httpGet": {"path": "/bad", "port": http_server}})
    assert not ok and "500" in message
    assert check({"tcpSocket": {"port": http_server}})[0]
    assert not check({"tcpSocket": {"port": 1}})[0]
    assert check({"exec": {"command": ["true"]}})[0]
    assert not check({"exec": {"command": ["false"]}})[0]


def test_hosts_names_render_and_resolve(tmp_path: Path) -> None:
    pod = {"metadata": {"name": "w-0", "namespace": "ns"}, "spec": {"hostname": "w0", "subdomain": "job"}}
    names = hosts.pod_names(pod)
    assert names[0] == "w0.job.ns.svc.cluster.local" and "w0.job" in names
    assert hosts.pod_names({"metadata": {"name": "x"}, "spec": {}}) == []
    path = tmp_path / "hosts"
    path.write_text(hosts.render([("127.1.0.3", names)]))
    assert hosts.resolve("w0.job.ns.svc", str(path)) == "127.1.0.3"
    assert hosts.resolve("W0.JOB.", str(path)) == "127.1.0.3"
    assert hosts.resolve("example.org", str(path)) == "example.org"
