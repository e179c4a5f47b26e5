"""Progress channel from rank 0 to the operator.

Rank 0 publishes a :class:`llmops.api.progress.ProgressReport` by patching the job's
progress Lease: the report JSON goes into the annotation ``PROGRESS_ANNOTATION``,
``spec.renewTime`` is the heartbeat and ``spec.holderIdentity`` the pod name. The job's
ServiceAccount may only get/patch that one Lease (``resourceNames``), so the channel needs no
other permission and never creates objects (the operator creates the Lease).

Two rules shape this module:

* *Training never waits for the API server.* The training loop only hands the newest
  report to :class:`ProgressReporter`; a background thread publishes it, at most every
  ``interval`` seconds plus immediately when a checkpoint commits. Errors are logged and
  retried on the next tick, never raised into the loop.
* *The heartbeat means "the training loop is alive".* Its time is taken when the loop
  submits a report, not when the thread publishes, so a hung loop stops the heartbeat even
  though the publisher thread is still running; the operator's hang detection relies on it.

Without a Lease name (local runs, tests) reports go as JSON lines to ``LLMOPS_PROGRESS_FILE``
when set, else to stderr.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from llmops.api import labels
from llmops.api import runtime_env as E
from llmops.api.progress import CommittedCheckpoint, FinetuneReport, ProgressReport

from llmops_runtime import localenv as L

log = logging.getLogger("llmops_runtime.progress")

#: Local sink for reports when no Lease is configured (not an operator contract variable).
PROGRESS_FILE_ENV = L.PROGRESS_FILE


def rfc3339(moment: dt.datetime) -> str:
    """UTC RFC 3339 with microseconds, the form of a Kubernetes MicroTime."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_report(
    *,
    attempt: int,
    step: int,
    now: dt.datetime,
    total_steps: int | None = None,
    loss: float | None = None,
    tokens_per_second: float | None = None,
    samples_consumed: int | None = None,
    first_step_time: dt.datetime | None = None,
    checkpoint: CommittedCheckpoint | None = None,
    checkpoint_failing_since: dt.datetime | None = None,
    checkpoint_error: str | None = None,
    finetune: FinetuneReport | None = None,
) -> ProgressReport:
    """A report from plain facts (pure). Non-finite values are dropped, never reported."""

    def finite(value: float | None) -> float | None:
        return value if value is not None and value == value and abs(value) != float("inf") else None

    return ProgressReport(
        attempt=attempt,
        step=step,
        total_steps=total_steps or None,
        loss=finite(loss),
        tokens_per_second=finite(tokens_per_second),
        samples_consumed=samples_consumed,
        first_step_time=rfc3339(first_step_time) if first_step_time else None,
        checkpoint=checkpoint,
        checkpoint_failing_since=rfc3339(checkpoint_failing_since) if checkpoint_failing_since else None,
        # Annotations are small; a storage error text can be a stack trace.
        checkpoint_error=(checkpoint_error[:1024] if checkpoint_error else None) if checkpoint_failing_since else None,
        heartbeat=rfc3339(now),
        finetune=finetune,
    )


def lease_patch(report: ProgressReport, holder: str) -> dict[str, Any]:
    """The merge patch that publishes ``report`` on the progress Lease (pure)."""
    return {
        "metadata": {"annotations": {labels.PROGRESS_ANNOTATION: report.model_dump_json(by_alias=True, exclude_none=True)}},
        "spec": {"holderIdentity": holder, "renewTime": report.heartbeat},
    }


class Sink(Protocol):
    def publish(self, report: ProgressReport) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """JSON lines to a file (append) or to stderr."""

    def __init__(self, path: str | None = None) -> None:
        self._handle = open(path, "a", encoding="utf-8") if path else sys.stderr  # noqa: SIM115 - held until close()
        self._owned = bool(path)

    def publish(self, report: ProgressReport) -> None:
        self._handle.write(report.model_dump_json(by_alias=True, exclude_none=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._owned:
            self._handle.close()


class LeaseSink:
    """Patches the progress Lease with the kubernetes client (KUBECONFIG, else in-cluster)."""

    def __init__(self, namespace: str, name: str, holder: str, kubeconfig: str | None = None) -> None:
        from kubernetes import client, config  # imported here: local runs do not need it

        if kubeconfig:
            api_client = config.new_client_from_config(config_file=kubeconfig)
        else:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
        self._api_client = api_client
        self._api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.holder = namespace, name, holder

    def publish(self, report: ProgressReport) -> None:
        self._api.patch_namespaced_lease(self.name, self.namespace, lease_patch(report, self.holder), _request_timeout=10)

    def close(self) -> None:
        self._api_client.close()


def sink_from_env(env: Mapping[str, str]) -> Sink:
    lease = env.get(E.PROGRESS_LEASE)
    if lease:
        namespace = env.get(E.NAMESPACE) or "default"
        holder = env.get(E.POD_NAME) or f"{env.get(E.JOB_NAME, 'job')}-{env.get(E.NODE_RANK, '0')}"
        return LeaseSink(namespace, lease, holder, kubeconfig=env.get("KUBECONFIG") or None)
    return StreamSink(env.get(PROGRESS_FILE_ENV) or None)


class ProgressReporter:
    """Publishes the newest submitted report from a background thread, rate-limited."""

    def __init__(self, sink: Sink, interval: float = 5.0, clock: Callable[[], float] | None = None) -> None:
        import time

        self._sink = sink
        self._interval = interval
        self._clock = clock or time.monotonic
        self._cond = threading.Condition()
        self._pending: ProgressReport | None = None
        self._pending_seq = 0
        self._submitted = 0  # reports handed over so far
        self._delivered = 0  # sequence number of the newest report the sink accepted
        self._urgent = False
        self._closed = False
        self._last_publish = float("-inf")
        self.published = 0  # reports accepted by the sink (for tests and logs)
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="llmops-progress", daemon=True)
        self._thread.start()

    def submit(self, report: ProgressReport, urgent: bool = False) -> None:
        """Hand over the newest report; never blocks on I/O. ``urgent`` skips the rate limit."""
        with self._cond:
            self._submitted += 1
            self._pending, self._pending_seq = report, self._submitted
            self._urgent = self._urgent or urgent
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Block until every report submitted so far is published (failed publications are
        retried about once a second), or ``timeout`` seconds passed; True when delivered.

        For facts that must reach the operator before the process exits (the finetune
        runtime's published output)."""
        deadline = self._clock() + timeout
        with self._cond:
            target = self._submitted
            self._urgent = True
            self._cond.notify_all()
            while self._delivered < target:
                left = deadline - self._clock()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(min(left, 1.0))
                if self._pending is not None and self._delivered < target:
                    self._urgent = True  # a failed publication waits for a retry: do not wait the rate limit
                    self._cond.notify_all()
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._pending is not None:
                        wait = 0.0 if self._urgent else self._last_publish + self._interval - self._clock()
                        if wait <= 0:
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
                report, seq, self._pending, self._urgent = self._pending, self._pending_seq, None, False
                closed = self._closed
            if report is not None:
                self._publish(report, seq)
            if closed:
                return

    def _publish(self, report: ProgressReport, seq: int = 0) -> None:
        self._last_publish = self._clock()
        try:
            self._sink.publish(report)
            self.published += 1
            with self._cond:
                self._delivered = max(self._delivered, seq)
                self._cond.notify_all()
        except Exception as error:  # noqa: BLE001 - progress must never stop training
            self.errors += 1
            log.warning("progress report not published: %s", error)
            with self._cond:
                if self._pending is None and not self._closed:
                    # Retry the same report (nothing newer came in), no sooner than a second.
                    self._pending, self._pending_seq = report, seq
                    self._last_publish = self._clock() + max(0.0, 1.0 - self._interval)

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is pending (best effort, bounded) and stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with contextlib.suppress(Exception):
            self._sink.close()


def report_json(report: ProgressReport) -> str:
    return json.dumps(report.model_dump(by_alias=True, exclude_none=True), sort_keys=True)
