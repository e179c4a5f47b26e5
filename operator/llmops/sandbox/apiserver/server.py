"""`ApiServer`: the emulator as an object tests and `llmops sandbox` start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import copy
import pathlib
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..kubeconfig import write_kubeconfig
from . import gc
from .core import Cluster
from .faults import Faults
from .handlers import Handlers
from .registry import Registry
from .store import Store


class ApiServer:
    """An emulated kube-apiserver on `host:port` (port 0 picks a free one).

    `start()` serves from a background thread with its own event loop; `await serve()`
    runs it inside the caller's loop instead (until cancelled). `watch_window` is how many
    events the bus retains for watch resumption (older versions get 410 Gone);
    `bookmark_interval` is how often idle watches that asked for bookmarks get one.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, watch_window: int = 1000,
                 bookmark_interval: float = 1.0) -> None:
        self.host, self.port = host, port
        self.store = Store(window=watch_window)
        self.registry = Registry()
        self.cluster = Cluster(self.registry, self.store)
        self.faults = Faults()
        self.handlers = Handlers(self.cluster, self.faults, bookmark_interval)
        self.requests = self.handlers.requests  # RequestCounter: per (user, verb, resource)
        self.faults.attach(cut=self._cut_threadsafe, expire=self._expire_threadsafe)
        self.cluster.after_write = self._schedule_gc
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._gc_scheduled = False
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- lifecycle ------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handlers.handle)
        return app

    async def _start_site(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self._app(), handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def _stop_site(self) -> None:
        self.handlers.cut()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self) -> None:
        """Serve in the running loop until `stop()` is called or the task is cancelled."""
        await self._start_site()
        self._ready.set()
        try:
            assert self._stopping is not None
            await self._stopping.wait()
        finally:
            await self._stop_site()

    def start(self, timeout: float = 10.0) -> ApiServer:
        def run() -> None:
            try:
                asyncio.run(self.serve())
            except BaseException as e:  # surfaced by start() when it happens before ready
                self._error = e
                self._ready.set()

        self._thread = threading.Thread(target=run, name="llmops-apiserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("emulated API server did not start")
        if self._error is not None:
            raise RuntimeError(f"emulated API server failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop already closed
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests and the sandbox ------------------------------------------------------

    def write_kubeconfig(self, path: str | pathlib.Path, token: str = "sandbox") -> pathlib.Path:
        """A kubeconfig for this server; `token` is the user `self.requests` counts under."""
        return write_kubeconfig(path, self.url, token=token)

    def register_log_source(self, source: Callable[[str, str, str], str | None]) -> None:
        """`source(namespace, pod, container)` returns the log text, or None if it has none."""
        self.cluster.log_sources.append(source)

    def append_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """Side channel for log text when no source is registered (thread-safe)."""
        def add() -> None:
            key = (namespace, pod, container)
            self.cluster.logs[key] = self.cluster.logs.get(key, "") + text
        self.call(add)

    def call(self, fn: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Run `fn` on the server's loop (where the store lives) and return its result."""
        if self._loop is None or threading.current_thread() is self._thread:
            return fn()
        fut = asyncio.run_coroutine_threadsafe(_as_coro(fn), self._loop)
        return fut.result(timeout)

    def objects(self, plural: str, group: str = "") -> list[dict[str, Any]]:
        """A snapshot of stored objects of one kind (for assertions; not a client API)."""
        return self.call(lambda: copy.deepcopy(self.store.items(group, plural)))

    def _cut_threadsafe(self, resource: str | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.handlers.cut, resource)

    def _expire_threadsafe(self) -> None:
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._expire(), self._loop).result(5)

    async def _expire(self) -> None:
        self.store.compact()

    def _schedule_gc(self) -> None:
        if self._gc_scheduled or self._loop is None:
            return
        self._gc_scheduled = True
        self._loop.call_soon(self._run_gc, context=contextvars.Context())

    def _run_gc(self) -> None:
        self._gc_scheduled = False
        for _ in range(10000):  # bounded: each pass changes at least one object or stops
            if not gc.sweep(self.cluster):
                break


async def _as_coro(fn: Callable[[], Any]) -> Any:
    return fn()
