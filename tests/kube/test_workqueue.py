"""The work queue's client-go semantics: dedup, earliest due wins, no concurrent processing of
one key, dirty re-processing, delayed requeue; and the worker loop's error backoff and pause."""

from __future__ import annotations

import threading

from llmops.kube.client import ApiError
from llmops.kube.workqueue import Backoff, WorkQueue, run_workers
from llmops.sandbox.testing import eventually


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_add_dedups_and_earliest_due_wins() -> None:
    clock = FakeClock()
    q = WorkQueue(clock)
    q.add("a", after=10)
    q.add("a", after=5)
    q.add("a", after=30)
    assert len(q) == 1
    assert q.get(timeout=0) is None
    clock.now += 5
    assert q.get(timeout=0) == "a"
    assert q.get(timeout=0) is None


def test_key_added_while_processing_is_processed_again_after_done() -> None:
    q = WorkQueue()
    q.add("a")
    assert q.get(timeout=0) == "a"
    q.add("a")  # an event arrives mid-reconcile
    assert q.get(timeout=0) is None  # not handed to a second worker
    q.done("a")
    assert q.get(timeout=0) == "a"


def test_requeue_after_is_honoured() -> None:
    clock = FakeClock()
    q = WorkQueue(clock)
    q.add("a")
    q.done(q.get(timeout=0), requeue_after=7)
    assert q.get(timeout=0) is None
    clock.now += 7
    assert q.get(timeout=0) == "a"


def _fails_once(exc: Exception) -> tuple:
    """A reconcile that raises ``exc`` on its first call and succeeds after; its calls, and
    an event set on the first success."""
    calls: list[str] = []
    done = threading.Event()

    def reconcile(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            raise exc
        done.set()

    return reconcile, calls, done


def test_workers_retry_failures_and_respect_pause() -> None:
    q = WorkQueue()
    stop = threading.Event()
    reconcile, calls, done = _fails_once(RuntimeError("api outage"))
    run_workers(q, reconcile, stop, workers=2, error_backoff=lambda n: 0.01)
    q.add("job")
    assert done.wait(5)
    stop.set()
    assert calls == ["job", "job"]

    paused_calls: list[str] = []
    stop2 = threading.Event()
    q2 = WorkQueue()
    run_workers(q2, paused_calls.append, stop2, workers=1, is_active=lambda: False)
    q2.add("job")
    assert not threading.Event().wait(0.3)
    stop2.set()
    assert paused_calls == []


def test_workers_honour_retry_after() -> None:
    clock = FakeClock()
    q = WorkQueue(clock)
    stop = threading.Event()
    # what the client raises for a 429 with Retry-After: 30
    reconcile, calls, done = _fails_once(ApiError(429, "TooManyRequests", "slow down", retry_after=30.0))
    run_workers(q, reconcile, stop, workers=1, error_backoff=lambda n: 0.0)
    q.add("job")
    assert not done.wait(1.2)  # the backoff alone would have retried at once
    assert calls == ["job"]
    clock.now += 30
    assert done.wait(5)
    stop.set()
    assert calls == ["job", "job"]



def test_a_returned_backoff_retries_later_each_time_without_a_traceback(caplog) -> None:  # noqa: ANN001
    clock = FakeClock()
    q = WorkQueue(clock)
    stop = threading.Event()
    calls: list[float] = []

    def reconcile(key: str) -> Backoff | float:
        calls.append(clock.now)
        return Backoff("ServiceAccountMissing") if len(calls) < 4 else 100.0

    with caplog.at_level("DEBUG", logger="llmops.kube.workqueue"):
        run_workers(q, reconcile, stop, workers=1, error_backoff=lambda n: 10.0 * 2 ** (n - 1))
        q.add("job")
        for n, step in ((1, 10), (2, 20), (3, 40)):  # 10 s, then 20 s, then 40 s: growing, as for errors
            eventually(lambda n=n: len(calls) == n and len(q) == 1, timeout=5)
            clock.now += step - 1
            assert not threading.Event().wait(0.6) and len(calls) == n  # a worker poll later: not a second early
            clock.now += 1
        eventually(lambda: len(calls) == 4, timeout=5)
        stop.set()
    assert calls == [100, 110, 130, 170]
    assert not [r for r in caplog.records if r.exc_info or r.levelname in ("ERROR", "WARNING")]
    assert sum("ServiceAccountMissing" in r.getMessage() for r in caplog.records) == 3

