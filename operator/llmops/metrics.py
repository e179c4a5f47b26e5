"""The operator's Prometheus metrics: stable names and units (documented in docs/metrics.md).

One registry object for the operator so tests can read values without global state leaking
between operator instances.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

NAMESPACE = "llmops"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "reconcile", "Reconciles run, by kind and result (ok|error).",
            ["kind", "result"], namespace=NAMESPACE, registry=r)
        self.reconcile_seconds = Histogram(
            "reconcile_duration_seconds", "Wall time of one reconcile.",
            ["kind"], namespace=NAMESPACE, registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.queue_wait_seconds = Histogram(
            "queue_wait_seconds", "Time a due key waited in the work queue before a worker took it.",
            ["kind"], namespace=NAMESPACE, registry=r,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 30))
        self.jobs = Gauge(
            "jobs", "Jobs by kind and condition that is True (Queued, Running, Restarting, Succeeded, ...).",
            ["kind", "condition"], namespace=NAMESPACE, registry=r)
        self.restarts = Counter(
            "job_restarts", "Gang restarts by cause (OOMKilled, Preempted, NodeLost, Hang, ...).",
            ["namespace", "job", "cause"], namespace=NAMESPACE, registry=r)
        self.time_to_first_step = Histogram(
            "time_to_first_step_seconds", "From attempt start (pods created) to the first completed step.",
            ["kind"], namespace=NAMESPACE, registry=r,
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600))
        self.goodput = Gauge(
            "job_goodput_ratio", "Useful step time / wall time since the job started (0..1).",
            ["namespace", "job"], namespace=NAMESPACE, registry=r)
        self.checkpoint_age = Gauge(
            "checkpoint_age_seconds", "Age of the newest committed checkpoint of a running job.",
            ["namespace", "job"], namespace=NAMESPACE, registry=r)
        self.scale_decisions = Counter(
            "autoscaler_decisions", "Autoscaler decisions that changed replicas, by direction and reason.",
            ["namespace", "service", "direction", "reason"], namespace=NAMESPACE, registry=r)
        self.finetune_validation_loss = Gauge(
            "finetune_validation_loss", "FinetuneJob validation loss: latest, best, and the base model's before training.",
            ["namespace", "job", "which"], namespace=NAMESPACE, registry=r)
        self.finetune_perplexity = Gauge(
            "finetune_perplexity", "FinetuneJob perplexity at the latest evaluation (exp of the validation loss).",
            ["namespace", "job"], namespace=NAMESPACE, registry=r)
        self.finetune_dataset_tokens = Gauge(
            "finetune_dataset_tokens", "Training tokens the FinetuneJob's runtime counted in its dataset.",
            ["namespace", "job"], namespace=NAMESPACE, registry=r)
        # (kind, namespace, name) -> condition types that are True, for the jobs gauge (a job
        # is counted under each of its True conditions; a deleted job under none).
        self._job_conditions: dict[tuple[str, str, str], tuple[str, ...]] = {}
        self._first_step_seen: set[tuple[str, str, str, int]] = set()  # (kind, ns, name, attempt) observed
        self.model_load_seconds = Histogram(
            "model_load_seconds", "Measured model fetch+load time of an InferenceService replica.",
            ["namespace", "service"], namespace=NAMESPACE, registry=r,
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600))

    def set_job_conditions(self, kind: str, namespace: str, name: str, true_types: tuple[str, ...]) -> bool:
        """Move one job between the ``jobs`` gauge's condition series (empty: it is gone).
        Returns whether anything changed."""
        key = (kind, namespace, name)
        before = self._job_conditions.get(key, ())
        if before == true_types:
            return False
        for t in before:
            self.jobs.labels(kind, t).dec()
        for t in true_types:
            self.jobs.labels(kind, t).inc()
        if true_types:
            self._job_conditions[key] = true_types
        else:
            self._job_conditions.pop(key, None)
            self._first_step_seen -= {k for k in self._first_step_seen if k[:3] == key}
        return True

    def observe_time_to_first_step(self, kind: str, namespace: str, name: str, attempt: int, seconds: float | None) -> None:
        """Observe a job attempt's time to first step once (``None``: not known yet)."""
        key = (kind, namespace, name, attempt)
        if seconds is None or key in self._first_step_seen:
            return
        self._first_step_seen.add(key)
        self.time_to_first_step.labels(kind).observe(seconds)
