"""The `ApiServer` object itself (emulator only): start/stop from a thread, `await serve()`
inside a running loop, the kubeconfig it writes, stop() ending open watches, followed logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request

import yaml
from llmops.sandbox.apiserver import ApiServer


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_start_stop_and_kubeconfig(tmp_path) -> None:
    with ApiServer(port=0) as srv:
        assert srv.port != 0 and srv.url == f"http://127.0.0.1:{srv.port}"
        assert _get(srv.url + "/version")["major"] == "1"
        cfg = yaml.safe_load(srv.write_kubeconfig(tmp_path / "kc").read_text())
        assert cfg["current-context"] == "llmops-sandbox"
        assert cfg["clusters"][0]["cluster"]["server"] == srv.url
        assert [n["metadata"]["name"] for n in srv.objects("namespaces")][:1] == ["default"]
    try:
        _get(srv.url + "/version")
        raise AssertionError("server still answering after stop()")
    except OSError:
        pass


def test_serve_inside_a_running_loop() -> None:
    async def main() -> dict:
        srv = ApiServer(port=0)
        task = asyncio.create_task(srv.serve())
        for _ in range(200):
            if srv._ready.is_set():
                break
            await asyncio.sleep(0.01)
        doc = await asyncio.to_thread(_get, srv.url + "/api/v1")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return doc

    assert asyncio.run(main())["groupVersion"] == "v1"


def test_stop_ends_open_watches() -> None:
    srv = ApiServer(port=0).start()
    result: dict[str, object] = {}

    def watch() -> None:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(srv.url + "/api/v1/namespaces?watch=true&timeoutSeconds=60",
                                        timeout=30) as resp:
                result["body"] = resp.read()
        except Exception as e:  # an abrupt close is fine too; hanging is not
            result["error"] = e
        result["seconds"] = time.monotonic() - started

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    srv.stop()
    t.join(30)
    assert not t.is_alive() and float(result["seconds"]) < 30  # type: ignore[arg-type]


def test_follow_logs_until_pod_finishes(api_server) -> None:
    ns = "default"
    lines: list[str] = []
    api_server.register_log_source(lambda n, p, c: "".join(lines) if p == "f" else None)
    api_server.call(lambda: api_server.cluster.create(
        api_server.registry.get("", "v1", "pods"), ns,
        {"metadata": {"name": "f"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}))
    lines.append("one\n")

    def finish() -> None:
        time.sleep(0.5)
        lines.append("two\n")
        time.sleep(0.5)
        res = api_server.registry.get("", "v1", "pods")
        api_server.call(lambda: api_server.cluster.patch(
            res, ns, "f", "application/merge-patch+json", b'{"status": {"phase": "Succeeded"}}', "status"))

    t = threading.Thread(target=finish)
    t.start()
    with urllib.request.urlopen(f"{api_server.url}/api/v1/namespaces/{ns}/pods/f/log?follow=true",
                                timeout=30) as resp:
        text = resp.read().decode()
    t.join()
    assert text == "one\ntwo\n"
