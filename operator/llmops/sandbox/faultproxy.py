"""A fault-injecting reverse proxy in front of a real kube-apiserver (tests only).

The emulated API server can fail requests, cut and stall watches and expire its watch
history (``ApiServer.faults``). A real control plane cannot be told to do any of that, so a
scenario that needs faults talks to the real server through this proxy instead: every
request is forwarded unchanged (bodies, query, content types, chunked watch and log streams)
with the upstream kubeconfig's credentials, unless a rule of ``proxy.faults`` — the same
``Faults`` class, fed by the same request classification (``apiserver.requestinfo``) as the
emulator's — says otherwise. A failed request is answered by the proxy before anything is
sent upstream, so a failed write never reaches the real server.

Interface (stable; scenario suites rely on it)::

    with FaultProxy(upstream_kubeconfig, workdir) as proxy:
        proxy.kubeconfig          # path of a kubeconfig pointing clients at the proxy
        proxy.url                 # http://127.0.0.1:PORT (plain HTTP, loopback only)
        proxy.faults.fail(verb="patch", resource="pods", code=503, count=2, retry_after=None,
                          namespace=None, name=None, message=None, after=0)
        proxy.faults.cut_watches("pods")     # open watch streams end now (clean end of stream)
        proxy.faults.stall_watches("pods", seconds=5)   # streams stay open, deliver nothing
        proxy.faults.expire_history()        # resuming before now is 410 Gone (Expired)
        proxy.faults.clear(); proxy.faults.injected

``FaultProxy(upstream_kubeconfig, workdir)`` takes any kubeconfig the ``kubernetes`` client
can load (its current context: client certificate, token, CA); ``start()`` / ``stop()`` or
the context manager run it on its own thread and event loop, so tests drive it from
ordinary synchronous code. ``workdir`` receives the proxy's ``kubeconfig``. All clients of
the proxy act as the upstream kubeconfig's user (pass ControlPlane.operator_kubeconfig to
tell them apart in the audit log).

How "expire history" is emulated: ``expire_history()`` reads the real server's current
resourceVersion (a fresh list) and from then on answers a watch that resumes from an older
version the way kube-apiserver's watch cache does once its window has moved past it: status
200 and one ``ERROR`` event holding a 410 ``Expired`` Status; a list that asks for an
``Exact`` older version gets 410 ``Expired``, as after an etcd compaction. Clients relist and
resume from the new version. Not relayed: upgraded connections (exec, attach, port-forward),
which are answered 400; this control plane has no kubelet to serve them anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yarl
from aiohttp import web

from .apiserver.errors import ApiError, error_response, too_old_resource_version
from .apiserver.faults import Faults, created_name
from .apiserver.requestinfo import RequestInfo, parse
from .kubeconfig import write_kubeconfig

#: Headers that belong to one connection, not to the request or answer being relayed.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                        "te", "trailer", "transfer-encoding", "upgrade", "host", "content-length"})
#: Headers aiohttp would add on its own; the client's (or none) go upstream instead. Without
#: this the server could gzip an answer the client never asked to be compressed.
_AS_SENT = ("Accept-Encoding", "User-Agent", "Content-Type")
LIST_TOO_OLD = "The resourceVersion for the provided list is too old."


class _Stream:
    """One relayed watch: the plural it watches and the switch that ends it."""

    def __init__(self, plural: str) -> None:
        self.plural = plural
        self.cut = asyncio.Event()


class Upstream:
    """Where and as whom to forward: URL, TLS context and Authorization of a kubeconfig."""

    def __init__(self, kubeconfig: str | Path) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        self.url = cfg.host.rstrip("/")
        self.authorization: str | None = next(
            (a["value"] for a in cfg.auth_settings().values()
             if a.get("in") == "header" and str(a.get("key")).lower() == "authorization" and a.get("value")), None)
        self.ssl: ssl.SSLContext | bool = False
        if self.url.startswith("https"):
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            if not cfg.verify_ssl:
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            if cfg.cert_file:
                ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
            self.ssl = ctx


def request_headers(headers: Mapping[str, str], authorization: str | None) -> dict[str, str]:
    """What goes upstream: the client's headers minus hop-by-hop ones and its credentials
    (the proxy's kubeconfig holds a placeholder token), plus the upstream's own."""
    out = {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP | {"authorization"}}
    if authorization:
        out["Authorization"] = authorization
    return out


def response_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


def expired(info: RequestInfo, query: Mapping[str, str], before: int) -> ApiError | None:
    """The 410 a request resuming from a version older than `before` gets, or None."""
    rv = query.get("resourceVersion", "")
    if before <= 0 or not rv.isdigit() or int(rv) == 0 or int(rv) >= before:
        return None
    if info.verb == "watch":
        return too_old_resource_version(int(rv), before)
    if info.verb == "list" and query.get("resourceVersionMatch") == "Exact":
        return ApiError(410, LIST_TOO_OLD)
    return None


class FaultProxy:
    def __init__(self, upstream_kubeconfig: str | Path, workdir: str | Path, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = Upstream(upstream_kubeconfig)
        self.workdir = Path(workdir)
        self.host, self.port = host, port
        self.faults = Faults()
        self.faults.attach(cut=self._cut_threadsafe, expire=self._expire_threadsafe)
        self.expired_before = 0  # resourceVersions below this answer 410 (0: none)
        self._streams: set[_Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def kubeconfig(self) -> str:
        return str(self.workdir / "kubeconfig")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> FaultProxy:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llmops-faultproxy", daemon=True)
        self._thread.start()
        try:
            self._call(self._open(), timeout)
        except BaseException:
            self.stop()
            raise
        write_kubeconfig(self.kubeconfig, self.url, name="llmops-faultproxy")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
                self._thread = None
            loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        assert self._loop is not None, "the fault proxy is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self) -> None:
        # Watches live as long as the client keeps them: no read timeout. Bodies pass through
        # byte for byte (gzip included), so nothing is decompressed on either side.
        self._session = aiohttp.ClientSession(
            # No connection limit: every relayed watch holds one for as long as it is open.
            connector=aiohttp.TCPConnector(ssl=self.upstream.ssl, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10), auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0,
                                     handler_cancellation=True, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _close(self) -> None:
        self._cut(None)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- faults that act on streams -------------------------------------------------------------

    def _cut(self, plural: str | None) -> None:
        for stream in list(self._streams):
            if plural in (None, stream.plural):
                stream.cut.set()

    def _cut_threadsafe(self, plural: str | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._cut, plural)

    def _expire_threadsafe(self) -> None:
        self._call(self._expire())

    async def _expire(self) -> None:
        """Everything before the server's current version counts as compacted away."""
        assert self._session is not None
        async with self._session.get(f"{self.upstream.url}/api/v1/namespaces", params={"limit": "1"},
                                     headers=request_headers({"Accept": "application/json"},
                                                             self.upstream.authorization),
                                     skip_auto_headers=_AS_SENT) as resp:
            resp.raise_for_status()
            body = json.loads(await resp.read())
        self.expired_before = int(body["metadata"]["resourceVersion"])

    # -- relaying -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._answer(request)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug here must reach the client as a Status, not a hang
            return error_response(ApiError(500, f"fault proxy error: {type(e).__name__}: {e}"))

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade"):
            return error_response(ApiError(400, "the fault proxy does not relay upgraded connections "
                                                "(exec, attach, port-forward)"))
        info = parse(request.method, request.path, request.query)
        if info is not None and info.verb is not None:
            try:
                self.faults.check(info.verb, info.plural, info.sub, info.namespace,
                                  created_name(info.verb, info.name, await request.read() if info.verb == "create" else b""))
            except ApiError as e:
                return error_response(e)
            gone = expired(info, request.query, self.expired_before)
            if gone is not None:
                return await self._gone(request, info, gone)
        return await self._forward(request, info)

    async def _gone(self, request: web.Request, info: RequestInfo, error: ApiError) -> web.StreamResponse:
        if info.verb != "watch":
            return error_response(error)
        # The watch cache accepts the watch and then reports the error as its only event.
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(json.dumps({"type": "ERROR", "object": error.status_body()}).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def _forward(self, request: web.Request, info: RequestInfo | None) -> web.StreamResponse:
        assert self._session is not None
        body = await request.read()
        try:
            upstream = await self._session.request(
                request.method, yarl.URL(self.upstream.url + request.raw_path, encoded=True),
                data=body or None, headers=request_headers(request.headers, self.upstream.authorization),
                skip_auto_headers=_AS_SENT, allow_redirects=False)
        except aiohttp.ClientError as e:
            return error_response(ApiError(503, f"fault proxy: the upstream API server is unreachable: {e}"))
        stream = _Stream(info.plural) if info is not None and info.verb == "watch" else None
        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=response_headers(upstream.headers))
            if upstream.content_length is not None:
                resp.content_length = upstream.content_length
            else:
                resp.enable_chunked_encoding()
            if stream is not None:  # before the client can see the stream, so a cut reaches it
                self._streams.add(stream)
            await resp.prepare(request)
            await self._relay(upstream, resp, stream)
            await resp.write_eof()
            return resp
        finally:
            if stream is not None:
                self._streams.discard(stream)
            upstream.release()  # back to the pool when read to the end, closed otherwise (a cut)

    async def _relay(self, upstream: aiohttp.ClientResponse, resp: web.StreamResponse,
                     stream: _Stream | None) -> None:
        """Copy the answer as it arrives; for a watch, hold chunks while stalled, stop when cut."""
        while True:
            chunk = await self._read(upstream, stream)
            if not chunk:
                return
            if stream is not None:
                while (stall := self.faults.stalled(stream.plural)) > 0 and not stream.cut.is_set():
                    await _wait(stream.cut, stall)
                if stream.cut.is_set():
                    return  # like the emulator: what a stall held back is lost with the stream
            await resp.write(chunk)

    @staticmethod
    async def _read(upstream: aiohttp.ClientResponse, stream: _Stream | None) -> bytes:
        """The next bytes of the answer; b"" at its end or when the stream is cut."""
        if stream is None:
            return await upstream.content.readany()
        read = asyncio.ensure_future(upstream.content.readany())
        cut = asyncio.ensure_future(stream.cut.wait())
        try:
            done, _ = await asyncio.wait({read, cut}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the client goes away and the handler is cancelled
            cut.cancel()
            if not read.done():
                read.cancel()
        return read.result() if read in done else b""


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.01))
