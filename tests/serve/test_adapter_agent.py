"""The adapter agent (server pod sidecar) against the vLLM stand-in (a test double) on
127.0.0.1: a load request answers at once and the adapter appears in /v1/models with the
requested path; a tampered adapter fails with the fetcher's ModelDigestMismatch naming the
file and is not retried within RETRY_SECONDS; the per-replica limit; unload; bad requests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from llmops_runtime.serve import adapters as A
from llmops_runtime.serve import manifest as M
from safetensors.numpy import save_file

from .test_standin import _http, standin


def make_adapter(root: Path, *, rank: int = 8, manifest: bool = True, seed: int = 0) -> Path:
    """adapter_config.json + adapter_model.safetensors (+ llmops-manifest.json)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "adapter_config.json").write_text(json.dumps({"r": rank, "lora_alpha": 16, "target_modules": ["q_proj"], "peft_type": "LORA"}))
    rng = np.random.default_rng(seed)
    save_file({"base_model.model.q_proj.lora_A.weight": rng.standard_normal((rank, 8)).astype(np.float32)},
              str(root / "adapter_model.safetensors"))
    if manifest:
        (root / M.DEFAULT_NAME).write_bytes(M.render(M.build(root, exclude=frozenset({M.DEFAULT_NAME}))))
    return root


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, str, Path]]:
    """(vLLM stand-in URL, agent URL, cache dir) with an agent limited to 2 adapters."""
    from .conftest import make_model

    tmp = tmp_path_factory.mktemp("agent")
    model = make_model(tmp / "m", shards=1)
    cache = tmp / "cache"
    cache.mkdir()
    with standin(model, "--enable-lora", "--max-loras", "4") as s:
        s.wait_listening()
        s.wait_healthy()
        agent = A.Agent(str(cache), s.url, max_adapters=2)
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), A.make_handler(agent))
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            yield s.url, f"http://127.0.0.1:{httpd.server_address[1]}", cache
        finally:
            httpd.shutdown()


def _wait(fn, timeout: float = 20.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if out := fn():
            return out
        time.sleep(0.05)
    pytest.fail("condition not met")


def _adapters(server: str) -> dict[str, str]:
    return {m["id"]: m["root"] for m in json.loads(_http(server + "/v1/models")[1])["data"] if m.get("parent")}


def _state(agent: str, name: str) -> dict:
    return json.loads(_http(agent + "/adapters")[1])["adapters"].get(name) or {}


def test_load_is_verified_and_shows_in_models(served, tmp_path) -> None:
    server, agent, cache = served
    src = make_adapter(tmp_path / "sql")
    path = f"{cache}/lora-chat-sql-abc"
    code, body = _http(agent + "/adapters", {"name": "sql", "uri": str(src), "path": path})
    assert code == 202 and json.loads(body)["state"] == "loading"
    assert _wait(lambda: _adapters(server).get("sql") == path)
    st = _wait(lambda: (s := _state(agent, "sql")).get("state") == "loaded" and s)
    assert "cache=miss" in st["message"] and "digest=sha256:" in st["message"]
    assert (Path(path) / "adapter_model.safetensors").is_file()  # the link points at the verified cache entry
    # asking again (a replica that lost it) is a cache hit and changes nothing
    assert _http(agent + "/adapters", {"name": "sql", "uri": str(src), "path": path})[0] == 202
    assert "cache=hit" in _wait(lambda: (s := _state(agent, "sql")).get("state") == "loaded" and s)["message"]
    assert _http(agent + "/adapters/unload", {"name": "sql"})[0] == 200
    assert "sql" not in _adapters(server)


def test_tampered_adapter_fails_naming_the_file(served, tmp_path) -> None:
    server, agent, cache = served
    src = make_adapter(tmp_path / "bad")
    save_file({"x": np.zeros(4, dtype=np.float32)}, str(src / "adapter_model.safetensors"))  # size differs from the manifest
    req = {"name": "bad", "uri": str(src), "path": f"{cache}/lora-chat-bad-1"}
    assert _http(agent + "/adapters", req)[0] == 202
    st = _wait(lambda: (s := _state(agent, "bad")).get("state") == "failed" and s)
    assert st["reason"] == "ModelDigestMismatch" and st["message"].startswith("adapter_model.safetensors:")
    assert "bad" not in _adapters(server)
    code, body = _http(agent + "/adapters", req)  # within RETRY_SECONDS: the failure, not a new attempt
    assert code == 200 and json.loads(body)["state"] == "failed"


def test_limit_and_bad_requests(served, tmp_path) -> None:
    server, agent, cache = served
    for n in ("a1", "a2"):
        adapter = {"name": n, "uri": str(make_adapter(tmp_path / n, seed=len(n))), "path": f"{cache}/l-{n}"}
        assert _http(agent + "/adapters", adapter)[0] == 202
    _wait(lambda: {"a1", "a2"} <= set(_adapters(server)))
    code, body = _http(agent + "/adapters", {"name": "a3", "uri": str(make_adapter(tmp_path / "a3")), "path": f"{cache}/l-a3"})
    assert code == 409 and json.loads(body)["reason"] == A.LIMIT_EXCEEDED
    assert _http(agent + "/adapters", {"name": "x", "uri": "s3://b/x", "path": "/etc/passwd"})[0] == 400
    assert _http(agent + "/adapters", {"name": "Bad_Name", "uri": "s3://b/x", "path": f"{cache}/l"})[0] == 400
    assert _http(agent + "/healthz")[0] == 200
    for n in ("a1", "a2"):
        assert _http(agent + "/adapters/unload", {"name": n})[0] == 200


def test_ready_gate_waits_for_the_list_and_its_loads(served, tmp_path) -> None:
    """/ready (the agent container's startupProbe): 503 until the operator's list arrived and
    every listed adapter is loaded or failed; after the grace without a list, ready anyway;
    once ready, a later load never takes the replica out of the Service."""
    server, _, cache = served
    now = [0.0]
    agent = A.Agent(str(cache), server, ready_grace_seconds=60, clock=lambda: now[0])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), A.make_handler(agent))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        code, body = _http(url + "/ready")
        assert code == 503 and "waiting for the operator's adapter list" in json.loads(body)["message"]
        # the operator asks for two adapters, one of them broken, and declares the list
        good, bad = make_adapter(tmp_path / "g"), make_adapter(tmp_path / "b")
        save_file({"x": np.zeros(4, dtype=np.float32)}, str(bad / "adapter_model.safetensors"))
        for n, src in (("good", good), ("broken", bad)):
            assert _http(url + "/adapters", {"name": n, "uri": str(src), "path": f"{cache}/ready-{n}"})[0] == 202
        assert json.loads(_http(url + "/adapters/sync", {"names": ["good", "broken"]})[1])["synced"] == ["broken", "good"]
        # ready exactly when both settled: the good one is served by then, the broken one failed
        code, body = _wait(lambda: (r := _http(url + "/ready"))[0] == 200 and r)
        assert "good" in _adapters(server) and _state(url, "broken")["state"] == "failed"
        assert json.loads(body)["message"] == "2 adapter(s) settled"
        # a name vLLM already serves without a record (the agent restarted) counts as settled
        fresh = A.Agent(str(cache), server, clock=lambda: now[0])
        fresh.sync(["good"])
        assert fresh.ready() == (True, "1 adapter(s) settled")
        missing = A.Agent(str(cache), server, clock=lambda: now[0])
        missing.sync(["never-posted"])
        assert missing.ready() == (False, "loading: never-posted")
        # once ready, stays ready while a later adapter loads
        later = {"name": "later", "uri": str(make_adapter(tmp_path / "l", seed=3)), "path": f"{cache}/ready-later"}
        assert _http(url + "/adapters", later)[0] == 202
        agent.sync(["good", "broken", "later"])
        assert _http(url + "/ready")[0] == 200
        _wait(lambda: "later" in _adapters(server))
        for n in ("good", "later"):
            _http(url + "/adapters/unload", {"name": n})
        # no list within the grace (operator down): serve the base model anyway
        lonely = A.Agent(str(cache), server, ready_grace_seconds=60, clock=lambda: now[0])
        assert lonely.ready()[0] is False
        now[0] += 60
        assert lonely.ready() == (True, "no adapter list from the operator within 60s: serving the base model")
        assert _http(url + "/adapters/sync", {"names": "x"})[0] == 400
        # the grace counts from vLLM answering (a model load takes minutes before that)
        early = A.Agent(str(cache), "http://127.0.0.1:9", ready_grace_seconds=0, clock=lambda: now[0])
        ok, why = early.ready()
        assert not ok and why.startswith("waiting for the server at http://127.0.0.1:9")
    finally:
        httpd.shutdown()
