"""InferenceService metrics recorded by the reconcile into a private ``Metrics()`` registry and
read back through the Prometheus text exposition: each replica's load time once, each replica
change once by direction and reason (no cluster needed: the recording step is called directly)."""

from __future__ import annotations

from llmops.api.inference import ScaleDecision, parse_inference_service
from llmops.controller import Context
from llmops.handlers import metrics as recorders
from llmops.metrics import Metrics
from llmops.plan.inference import PodView
from llmops.serving import autoscaler
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(generate_latest(m.registry).decode()) for s in fam.samples}


def test_load_seconds_once_per_replica_and_decisions_by_direction() -> None:
    m = Metrics()
    ctx = Context(kube=None, metrics=m)  # type: ignore[arg-type]
    svc = parse_inference_service({"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService",
                                   "metadata": {"name": "chat", "namespace": "ml", "uid": "u-metrics"},
                                   "spec": {"model": {"uri": "s3://models/x"}}})
    a = PodView("chat-a", phase="Running", ready=True, start_time="2026-01-01T00:00:00Z", ready_time="2026-01-01T00:01:30Z")
    b = PodView("chat-b", phase="Running", ready=False, start_time="2026-01-01T00:00:10Z")
    up = ScaleDecision(time="2026-01-01T00:02:00Z", **{"from": 1}, to=2, signal="queue", value=9.0, reason="ScaleUp (load time 90s)")
    recorders.record_inference(ctx, svc, [a, b], up)
    recorders.record_inference(ctx, svc, [a, b], None)  # the same pods again: nothing new
    b_ready = PodView("chat-b", phase="Running", ready=True, start_time="2026-01-01T00:00:10Z", ready_time="2026-01-01T00:01:10Z")
    down = ScaleDecision(time="2026-01-01T00:20:00Z", **{"from": 2}, to=1, signal="queue", value=0.0, reason="ScaleDown (load time 90s)")
    recorders.record_inference(ctx, svc, [a, b_ready], down)
    s = samples(m)
    key = (("namespace", "ml"), ("service", "chat"))
    assert s[("llmops_model_load_seconds_count", key)] == 2
    assert s[("llmops_model_load_seconds_sum", key)] == 90 + 60
    assert s[("llmops_autoscaler_decisions_total", (("direction", "up"), *key[:1], ("reason", "ScaleUp"), key[1]))] == 1
    assert s[("llmops_autoscaler_decisions_total", (("direction", "down"), *key[:1], ("reason", "ScaleDown"), key[1]))] == 1
    autoscaler.forget("ml", "chat")
