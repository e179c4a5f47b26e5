"""The sandbox's stand-in controllers (binder, Deployment controller) poll instead of watching:
one daemon thread calls ``step()`` every ``interval`` seconds until ``stop()``."""

from __future__ import annotations

import logging
import threading
from typing import Any

from llmops.sandbox.node.client import Kube

log = logging.getLogger(__name__)


class PollingController:
    thread_name = "sandbox-controller"

    def __init__(self, kube: Kube, interval: float = 0.3) -> None:
        self.kube = kube
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def step(self) -> Any:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the server may be restarting; try again
                log.debug("%s step failed: %s", self.thread_name, exc)
            self._stop.wait(self.interval)
