"""Adapter agent: the server pod's sidecar that puts LoRA adapters into the local vLLM at run time.

Why a sidecar: adapters fetched by init containers would make the pod template depend on the
adapter list, so adding one would replace every replica (minutes of model load each). Here the
template only says "LoRA on"; the operator reconciles the list into each ready replica:

1. it reads vLLM's ``GET /v1/models`` (adapters appear with ``parent`` set and ``root`` = the
   path they were loaded from) and this agent's ``GET /adapters`` (what is being fetched or
   failed, and why);
2. for a wanted adapter that vLLM does not list with the expected path it sends
   ``POST /adapters {"name", "uri", "manifestSha256"?, "path"}``. The agent answers at once
   (202) and, in a thread, fetches the adapter with the **same verified fetcher** as the model
   (``llmops_runtime.serve.fetch``: safetensors only, every file checked against
   ``llmops-manifest.json`` when present or the pinned manifest digest, into the shared
   cache with its lock and completion marker, ``path`` made a symlink to the entry), then
   calls vLLM's ``/v1/load_lora_adapter`` (unloading an older copy under the same name
   first). The next reconcile sees the result in ``/v1/models`` or, on failure, the fetcher's
   reason (``ModelDigestMismatch: adapter_model.safetensors: ...``) or vLLM's error text in
   ``GET /adapters``;
3. for an adapter vLLM lists but the service no longer wants: ``POST /adapters/unload
   {"name"}`` (synchronous: vLLM unloads in milliseconds).

4. once a replica holds what it should, ``POST /adapters/sync {"names"}`` declares the full
   wanted list. ``GET /ready`` answers 200 only when every listed adapter is loaded (or has
   failed: a bad adapter must not keep the base model from serving). The agent container's
   startupProbe calls it, so a new replica joins the Service only once it serves its adapters
   (no "model not found" for an adapter on a replica that just started). If no list arrives
   within ``--ready-grace-seconds`` of vLLM answering (operator down), the replica serves the
   base model anyway: serving never depends on the operator being up. Once ready, it stays
   ready (a later adapter load never takes a serving replica out of the Service).

A replica that restarts comes back without adapters; the operator sees that in
``/v1/models`` and asks again (the fetch is then a cache hit). A failed load is retried at most
every ``RETRY_SECONDS`` for the same request, so a bad adapter does not hammer storage.
``--max-adapters`` (engine.maxLoras) is enforced here too, as a second line behind the operator.

The agent holds no credentials of its own: the fetcher uses the pod's environment (the same
as the model fetch init container). Its port is not in the Service; only the operator calls
it (restrict it with a NetworkPolicy where pods are not trusted: like vLLM's own runtime LoRA
endpoints, it has no authentication).

``python -m llmops_runtime.serve.adapters --port 8001 --cache-dir DIR [--server-port 8000]
[--server-url URL] [--max-adapters N] [--ready-grace-seconds 60]``. In a sandbox pod it binds
and calls ``$POD_IP`` (each pod has its own loopback address there); elsewhere it binds
0.0.0.0 and calls 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import PurePosixPath
from typing import Any

from llmops_runtime.localenv import POD_IP

from .fetch import FetchError, FetchRequest, fetch, pod_path

RETRY_SECONDS = 30.0  # a failed load of the same request is not retried sooner
VLLM_TIMEOUT_SECONDS = 120.0  # vLLM reads the adapter's weights before it answers
LOAD_FAILED = "AdapterLoadFailed"  # vLLM refused the adapter (its message follows)
SERVER_UNAVAILABLE = "ServerUnavailable"  # vLLM did not answer
LIMIT_EXCEEDED = "AdapterLimitExceeded"  # more adapters than --max-adapters
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LINK = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,200}$")


@dataclass
class Record:
    """What the agent knows about one adapter name."""

    name: str
    uri: str
    path: str
    manifest_sha256: str | None = None
    state: str = "loading"  # loading | loaded | failed
    reason: str = ""
    message: str = ""
    since: float = 0.0  # time.time() of the last state change

    def same(self, uri: str, path: str, sha: str | None) -> bool:
        return (self.uri, self.path, self.manifest_sha256) == (uri, path, sha)

    def wire(self) -> dict[str, Any]:
        d = asdict(self)
        d["manifestSha256"] = d.pop("manifest_sha256")
        return d


class Agent:
    """The agent's state and actions (the HTTP layer is below)."""

    def __init__(self, cache_dir: str, server_url: str, max_adapters: int = 0, ready_grace_seconds: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cache_dir = cache_dir.rstrip("/") or "/"
        self.server_url = server_url.rstrip("/")
        self.max_adapters = max_adapters
        self.records: dict[str, Record] = {}
        self.lock = threading.Lock()
        self.ready_grace_seconds = ready_grace_seconds
        self.clock = clock
        self.server_up_at: float | None = None  # when vLLM first answered: the grace counts from there
        self.synced: tuple[str, ...] | None = None  # the operator's last full list, if any
        self.was_ready = False

    # --- vLLM ------------------------------------------------------------------------------
    def _vllm(self, path: str, body: dict[str, Any] | None = None) -> str:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server_url + path, data=data, headers={"Content-Type": "application/json"} if data else {})
        with urllib.request.urlopen(req, timeout=VLLM_TIMEOUT_SECONDS) as resp:  # noqa: S310 (the local server)
            return resp.read().decode(errors="replace")

    def loaded(self) -> dict[str, str]:
        """Adapters vLLM serves now: name -> root (the path it loaded them from)."""
        data = json.loads(self._vllm("/v1/models")).get("data") or []
        return {str(m.get("id")): str(m.get("root") or "") for m in data if m.get("parent")}

    # --- requests ----------------------------------------------------------------------------
    def check(self, name: str, uri: str, path: str) -> str | None:
        """Why a load request is refused, or None."""
        if not _NAME.match(name or "") or len(name) > 63:
            return f"invalid adapter name {name!r}"
        if not uri or not isinstance(uri, str):
            return "uri is required"
        p = PurePosixPath(path or "")
        if str(p.parent) != self.cache_dir or not _LINK.match(p.name):
            return f"path must be a name directly under {self.cache_dir}"
        return None

    def request_load(self, name: str, uri: str, path: str, sha: str | None) -> tuple[int, Record]:
        """Start (or join) a load; (HTTP status, record)."""
        now = time.time()
        with self.lock:
            rec = self.records.get(name)
            settled = rec is not None and (rec.state == "loading" or (rec.state == "failed" and now - rec.since < RETRY_SECONDS))
            if settled and rec.same(uri, path, sha):
                return (202 if rec.state == "loading" else 200), rec
            others = [n for n, r in self.records.items() if n != name and r.state in ("loading", "loaded")]
            if self.max_adapters and len(others) >= self.max_adapters:
                refused = Record(name, uri, path, sha, "failed", LIMIT_EXCEEDED,
                                 f"{len(others)} adapters already loaded or loading, the limit is {self.max_adapters}", now)
                return 409, refused
            rec = Record(name, uri, path, sha, "loading", "", "", now)
            self.records[name] = rec
        threading.Thread(target=self._load, args=(rec,), name=f"load-{name}", daemon=True).start()
        return 202, rec

    def _finish(self, rec: Record, state: str, reason: str = "", message: str = "") -> None:
        with self.lock:
            if self.records.get(rec.name) is rec:  # a newer request replaced it: drop this result
                rec.state, rec.reason, rec.message, rec.since = state, reason, message[:2000], time.time()

    def _load(self, rec: Record) -> None:
        link = PurePosixPath(rec.path).name
        try:
            res = fetch(FetchRequest(uri=rec.uri, dest=pod_path(self.cache_dir), manifest_sha256=rec.manifest_sha256, link=link))
        except FetchError as e:
            self._finish(rec, "failed", e.reason, str(e))
            return
        except OSError as e:
            self._finish(rec, "failed", "ModelFetchFailed", str(e))
            return
        try:
            current = self.loaded()
            if not same_entry(current.get(rec.name), rec.path):
                if rec.name in current:  # an older copy under this name: replace it
                    self._vllm("/v1/unload_lora_adapter", {"lora_name": rec.name})
                # vLLM opens the path itself: in a sandbox pod, under the pod root (identity elsewhere)
                self._vllm("/v1/load_lora_adapter", {"lora_name": rec.name, "lora_path": str(pod_path(rec.path))})
        except urllib.error.HTTPError as e:
            self._finish(rec, "failed", LOAD_FAILED, f"vLLM answered {e.code}: {_error_text(e)}")
            return
        except (OSError, ValueError) as e:
            self._finish(rec, "failed", SERVER_UNAVAILABLE, f"{self.server_url}: {e}")
            return
        self._finish(rec, "loaded", "", f"digest=sha256:{res.digest} cache={'hit' if res.cache_hit else 'miss'}")

    def unload(self, name: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.records.pop(name, None)
        try:
            if name in self.loaded():
                self._vllm("/v1/unload_lora_adapter", {"lora_name": name})
        except urllib.error.HTTPError as e:
            return 502, {"name": name, "reason": LOAD_FAILED, "message": f"vLLM answered {e.code}: {_error_text(e)}"}
        except (OSError, ValueError) as e:
            return 503, {"name": name, "reason": SERVER_UNAVAILABLE, "message": str(e)}
        return 200, {"name": name, "state": "unloaded"}

    def sync(self, names: list[str]) -> tuple[str, ...]:
        with self.lock:
            self.synced = tuple(sorted({str(n) for n in names}))
            return self.synced

    def ready(self) -> tuple[bool, str]:
        """Whether this replica may join the Service, and why (see step 4 above)."""
        with self.lock:
            if self.was_ready:
                return True, "ready"
            synced = self.synced
            states = {n: r.state for n, r in self.records.items()}
        if synced is None:
            if self.server_up_at is None:  # the operator syncs once vLLM answers, minutes after start
                try:
                    self.loaded()
                except (OSError, ValueError) as e:
                    return False, f"waiting for the server at {self.server_url}: {e}"
                self.server_up_at = self.clock()
            waited = self.clock() - self.server_up_at
            if waited < self.ready_grace_seconds:
                return False, f"waiting for the operator's adapter list ({waited:.0f}s of {self.ready_grace_seconds:.0f}s)"
            why = f"no adapter list from the operator within {self.ready_grace_seconds:.0f}s: serving the base model"
        else:
            unsettled = [n for n in synced if states.get(n) not in ("loaded", "failed")]
            if unsettled:
                try:  # no record: vLLM may hold it from before this agent (re)started
                    served = self.loaded()
                except (OSError, ValueError) as e:
                    return False, f"{self.server_url}: {e}"
                pending = [n for n in unsettled if states.get(n) == "loading" or n not in served]
                if pending:
                    return False, f"loading: {', '.join(pending)}"
            why = f"{len(synced)} adapter(s) settled"
        with self.lock:
            self.was_ready = True
        return True, why

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"adapters": {n: r.wire() for n, r in sorted(self.records.items())}}


def same_entry(served_root: str | None, path: str) -> bool:
    """Whether vLLM's ``root`` for an adapter is the cache entry at ``path``. By entry name (the
    builder names it by source and pin): vLLM reports the path it opened, which in a sandbox pod
    is under the pod root."""
    return bool(served_root) and PurePosixPath(str(served_root)).name == PurePosixPath(path).name


def _error_text(e: urllib.error.HTTPError) -> str:
    """vLLM's error message from its JSON body (``{"error": {"message"}}`` or ``{"message"}``)."""
    try:
        raw = e.read().decode(errors="replace")
    except OSError:
        return str(e)
    try:
        doc = json.loads(raw)
        err = doc.get("error") if isinstance(doc.get("error"), dict) else doc
        return str(err.get("message") or raw)
    except (ValueError, AttributeError):
        return raw.strip() or str(e)


def make_handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt: str, *args: Any) -> None:  # one line per mutation only
            if self.command == "POST":
                sys.stderr.write(f"adapter-agent: {fmt % args}\n")

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, sort_keys=True).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict[str, Any]:
            n = int(self.headers.get("Content-Length") or 0)
            if n > 1 << 16:
                raise ValueError("body too large")
            doc = json.loads(self.rfile.read(n) or b"{}")
            if not isinstance(doc, dict):
                raise ValueError("expected a JSON object")
            return doc

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path == "/healthz":
                self._send(200, {"status": "ok"})
            elif self.path == "/adapters":
                self._send(200, agent.snapshot())
            elif self.path == "/ready":
                ok, why = agent.ready()
                self._send(200 if ok else 503, {"ready": ok, "message": why})
            else:
                self._send(404, {"message": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            try:
                body = self._body()
            except ValueError as e:
                self._send(400, {"message": str(e)})
                return
            if self.path == "/adapters":
                name, uri, path = str(body.get("name") or ""), str(body.get("uri") or ""), str(body.get("path") or "")
                sha = body.get("manifestSha256") or None
                why = agent.check(name, uri, path)
                if why:
                    self._send(400, {"message": why})
                    return
                status, rec = agent.request_load(name, uri, path, sha)
                self._send(status, rec.wire())
            elif self.path == "/adapters/sync":
                names = body.get("names")
                if not isinstance(names, list):
                    self._send(400, {"message": "names must be a list"})
                    return
                self._send(200, {"synced": list(agent.sync(names))})
            elif self.path == "/adapters/unload":
                status, out = agent.unload(str(body.get("name") or ""))
                self._send(status, out)
            else:
                self._send(404, {"message": f"no route {self.path}"})

    return Handler


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m llmops_runtime.serve.adapters", description="LoRA adapter agent (server pod sidecar).")
    pod_ip = os.environ.get(POD_IP)
    ap.add_argument("--host", default=pod_ip or "0.0.0.0")
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--cache-dir", required=True, help="the model cache mount (adapters land in DIR/<key>, linked as the requested path)")
    ap.add_argument("--server-port", type=int, default=8000)
    ap.add_argument("--server-url", help="vLLM's base URL (default: http://$POD_IP or 127.0.0.1 : --server-port)")
    ap.add_argument("--max-adapters", type=int, default=0, help="most adapters loaded at once (0: no limit)")
    ap.add_argument("--ready-grace-seconds", type=float, default=60.0,
                    help="become ready without an adapter list from the operator after this long")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    url = a.server_url or f"http://{os.environ.get(POD_IP) or '127.0.0.1'}:{a.server_port}"
    agent = Agent(a.cache_dir, url, a.max_adapters, a.ready_grace_seconds)
    server = ThreadingHTTPServer((a.host, a.port), make_handler(agent))
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"adapter-agent: listening on http://{a.host}:{a.port}, vLLM at {url}, cache {a.cache_dir}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
