"""Progress channel: report building (pure), the Lease merge patch, the background
publisher's rate limit and non-blocking behaviour, the JSON-lines sink, and a real Lease
update against the sandbox API server through the kubernetes client."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from llmops.api import labels
from llmops.api.progress import CommittedCheckpoint, FinetuneReport, ProgressReport
from llmops.sandbox.testing import eventually
from llmops_runtime import progress

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=dt.UTC)
CKPT = CommittedCheckpoint(id="step-00000012", step=12, uri="s3://b/p/step-00000012/manifest.a0000.json",
                           time="2026-01-02T03:04:00.000000Z")


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        ({"loss": 1.5}, {"loss": 1.5}),
        ({"loss": float("nan")}, {}),  # never report a non-finite value
        ({"loss": float("inf"), "tokens_per_second": float("-inf")}, {}),
        ({"total_steps": 0}, {}),  # 0 means unknown
        ({"checkpoint": CKPT}, {"checkpoint": CKPT.model_dump(by_alias=True)}),
        ({"checkpoint_failing_since": NOW, "checkpoint_error": "x" * 5000},
         {"checkpointFailingSince": "2026-01-02T03:04:05.678901Z", "checkpointError": "x" * 1024}),
        ({"checkpoint_error": "stale"}, {}),  # an error text only while failing
    ],
)
def test_build_report(kwargs, expected):
    report = progress.build_report(attempt=2, step=7, now=NOW, **kwargs)
    wire = report.model_dump(by_alias=True, exclude_none=True)
    assert wire == {"attempt": 2, "step": 7, "heartbeat": "2026-01-02T03:04:05.678901Z", **expected}


def test_lease_patch_carries_report_heartbeat_and_holder():
    report = progress.build_report(attempt=0, step=3, now=NOW, loss=0.25, checkpoint=CKPT)
    patch = progress.lease_patch(report, "job-w-0")
    assert patch["spec"] == {"holderIdentity": "job-w-0", "renewTime": "2026-01-02T03:04:05.678901Z"}
    parsed = ProgressReport.model_validate_json(patch["metadata"]["annotations"][labels.PROGRESS_ANNOTATION])
    assert parsed == report


class RecordingSink:
    """Test double for the API server: records what is published, optionally failing or slow."""

    def __init__(self, fail: int = 0, delay: float = 0.0) -> None:
        self.reports: list[ProgressReport] = []
        self.fail, self.delay = fail, delay
        self.closed = False

    def publish(self, report: ProgressReport) -> None:
        time.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("api server down")
        self.reports.append(report)

    def close(self) -> None:
        self.closed = True


def _report(step: int) -> ProgressReport:
    return progress.build_report(attempt=0, step=step, now=NOW)


def test_reporter_rate_limits_but_publishes_the_newest_and_urgent_ones():
    sink = RecordingSink()
    reporter = progress.ProgressReporter(sink, interval=3600)
    reporter.submit(_report(1))
    eventually(lambda: len(sink.reports) == 1)
    for step in range(2, 50):
        reporter.submit(_report(step))  # inside the interval: coalesced, not published
    reporter.submit(_report(50), urgent=True)  # a commit: published now
    eventually(lambda: [r.step for r in sink.reports] == [1, 50])
    reporter.submit(_report(51))
    reporter.close()  # pending report flushed on close
    assert [r.step for r in sink.reports] == [1, 50, 51] and sink.closed


def test_reporter_survives_sink_errors_and_never_blocks_the_caller():
    sink = RecordingSink(fail=2, delay=0.2)
    reporter = progress.ProgressReporter(sink, interval=0)
    start = time.monotonic()
    for step in range(1, 200):
        reporter.submit(_report(step))
    assert time.monotonic() - start < sink.delay * 5  # 199 submissions vs. a 0.2 s publish each
    eventually(lambda: sink.reports and sink.reports[-1].step == 199, timeout=10)
    reporter.close()
    assert reporter.errors == 2


def test_flush_delivers_through_sink_errors_or_times_out():
    """The finetune runtime's output report must reach the operator before rank 0 exits 0."""
    sink = RecordingSink(fail=2)
    reporter = progress.ProgressReporter(sink, interval=3600)
    final = progress.build_report(attempt=0, step=5, now=NOW, finetune=FinetuneReport.model_validate(
        {"output": {"uri": "pvc://out/a", "manifestSha256": "a" * 64}}))
    reporter.submit(final)
    assert reporter.flush(timeout=10)  # two failures, retried about once a second
    assert sink.reports[-1].finetune.output.uri == "pvc://out/a" and reporter.errors == 2
    reporter.close()
    down = progress.ProgressReporter(RecordingSink(fail=10**6), interval=3600)
    down.submit(final)
    start = time.monotonic()
    assert not down.flush(timeout=0.5) and time.monotonic() - start < 3
    down.close(timeout=1)


def test_stream_sink_writes_json_lines(tmp_path):
    path = tmp_path / "progress.jsonl"
    sink = progress.StreamSink(str(path))
    sink.publish(_report(1))
    sink.publish(_report(2))
    sink.close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_sink_from_env_chooses_file_without_a_lease(tmp_path):
    sink = progress.sink_from_env({progress.PROGRESS_FILE_ENV: str(tmp_path / "p")})
    assert isinstance(sink, progress.StreamSink)
    sink.close()


def test_lease_is_updated_on_the_api_server(kube_client, kubeconfig):
    from kubernetes import client as k8s

    leases = k8s.CoordinationV1Api(kube_client)
    leases.create_namespaced_lease("default", {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                               "metadata": {"name": "job-progress"}, "spec": {}})
    env = {"LLMOPS_PROGRESS_LEASE": "job-progress", "LLMOPS_NAMESPACE": "default", "LLMOPS_POD_NAME": "job-w-0",
           "KUBECONFIG": str(kubeconfig)}
    reporter = progress.ProgressReporter(progress.sink_from_env(env), interval=0)
    report = progress.build_report(attempt=1, step=42, now=NOW, loss=2.0, checkpoint=CKPT)
    reporter.submit(report, urgent=True)

    def published():
        lease = leases.read_namespaced_lease("job-progress", "default")
        annotation = (lease.metadata.annotations or {}).get(labels.PROGRESS_ANNOTATION)
        return annotation and (lease, ProgressReport.model_validate_json(annotation))

    lease, seen = eventually(published)
    reporter.close()
    assert seen == report
    assert lease.spec.holder_identity == "job-w-0"
    assert lease.spec.renew_time == NOW


def test_missing_lease_is_logged_not_raised(kubeconfig):
    env = {"LLMOPS_PROGRESS_LEASE": "absent", "LLMOPS_NAMESPACE": "default", "KUBECONFIG": str(kubeconfig)}
    reporter = progress.ProgressReporter(progress.sink_from_env(env), interval=0)
    reporter.submit(_report(1))
    eventually(lambda: reporter.errors == 1)
    reporter.close()
    assert reporter.published == 0
