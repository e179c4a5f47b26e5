"""A level-triggered work queue of object keys, with delayed requeues.

Why our own queue next to Kopf: Kopf gives us watching (resume, 410 handling, retries),
login, peering, probes and event posting; but its time-based handlers (timers, daemons)
put a finalizer on every custom resource, and a finalizer on a Git-owned object makes
`kubectl delete` / an Argo CD prune hang whenever the operator is down. Our CRs stay
finalizer-free: Kopf's `on.event` handlers (which need no finalizer, no diff-base and no
progress annotations) only enqueue keys here, and the reconcile returns "come back in N
seconds" for time-based work (scheduling timeouts, hang detection, backoff, TTL).

Semantics (the same as client-go's workqueue, which controllers rely on):
- a key is queued at most once; adding it again moves its due time earlier, never later;
- a key is never processed by two workers at once; if it is added while being processed it
  is marked dirty and processed again right after;
- reconciles are level-triggered: the worker reads the world fresh, so coalescing events is
  always safe.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable

logger = logging.getLogger(__name__)

Key = Hashable


class Backoff:
    """What a reconcile returns after an expected refusal it has already reported in status
    (a missing ServiceAccount, a full quota): "call me again later, later each time". The
    worker keeps the per-key count, as for errors, but logs no traceback: nothing went wrong
    in the operator."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Backoff({self.reason!r})"


class WorkQueue:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Key]] = []
        self._due: dict[Key, float] = {}
        self._processing: set[Key] = set()
        self._dirty: dict[Key, float] = {}
        self._seq = itertools.count()
        self._closed = False

    def add(self, key: Key, after: float = 0.0) -> None:
        with self._cond:
            due = self._clock() + max(0.0, after)
            if key in self._processing:
                self._dirty[key] = min(due, self._dirty.get(key, due))
                return
            if key in self._due and self._due[key] <= due:
                return
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._seq), key))
            self._cond.notify()

    def forget(self, key: Key) -> None:
        with self._cond:
            self._due.pop(key, None)
            self._dirty.pop(key, None)

    def __len__(self) -> int:
        with self._cond:
            return len(self._due)

    def get(self, timeout: float | None = None) -> Key | None:
        """Block until a key is due (or timeout/close); mark it processing."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while not self._closed:
                now = self._clock()
                while self._heap:
                    due, _, key = self._heap[0]
                    if self._due.get(key) != due:  # superseded entry
                        heapq.heappop(self._heap)
                        continue
                    if due > now:
                        break
                    heapq.heappop(self._heap)
                    del self._due[key]
                    self._processing.add(key)
                    return key
                wait = None if not self._heap else self._heap[0][0] - now
                if deadline is not None:
                    left = deadline - now
                    if left <= 0:
                        return None
                    wait = left if wait is None else min(wait, left)
                self._cond.wait(wait)
            return None

    def done(self, key: Key, requeue_after: float | None = None) -> None:
        with self._cond:
            self._processing.discard(key)
            dirty_due = self._dirty.pop(key, None)
        if dirty_due is not None:
            self.add(key, max(0.0, dirty_due - self._clock()))
        if requeue_after is not None:
            self.add(key, requeue_after)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def run_workers(
    queue: WorkQueue,
    reconcile: Callable[[Key], float | Backoff | None],
    stop: threading.Event,
    *,
    workers: int = 2,
    is_active: Callable[[], bool] = lambda: True,
    error_backoff: Callable[[int], float] = lambda n: min(60.0, 0.5 * 2 ** min(n, 7)),
) -> list[threading.Thread]:
    """Start worker threads; each reconcile returns seconds until it wants to run again."""
    failures: dict[Key, int] = {}

    def loop() -> None:
        while not stop.is_set():
            key = queue.get(timeout=0.5)
            if key is None:
                continue
            if not is_active():  # another operator holds the peering: do nothing, look again later
                queue.done(key, requeue_after=5.0)
                continue
            try:
                after = reconcile(key)
            except Exception as exc:  # a bug or an API outage: retry with backoff, keep the worker alive
                failures[key] = failures.get(key, 0) + 1
                logger.exception("reconcile of %s failed (attempt %d)", key, failures[key])
                # A server that said when to come back (429/503 Retry-After) is believed.
                retry_after = getattr(exc, "retry_after", None)
                delay = float(retry_after) if retry_after is not None else error_backoff(failures[key])
                queue.done(key, requeue_after=delay)
                continue
            if isinstance(after, Backoff):  # an expected refusal, already in status: back off quietly
                failures[key] = failures.get(key, 0) + 1
                delay = error_backoff(failures[key])
                logger.info("%s refused (%s): retrying in %.1fs", key, after.reason, delay)
                queue.done(key, requeue_after=delay)
                continue
            failures.pop(key, None)
            queue.done(key, requeue_after=after)

    threads = [threading.Thread(target=loop, name=f"llmops-worker-{i}", daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    return threads
