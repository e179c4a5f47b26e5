"""parse_vllm_metrics: vLLM's Prometheus exposition text from older (gpu_cache_usage_perc) and
newer (kv_cache_usage_perc) servers, several label sets, the TTFT histogram reduced to a mean
between two scrapes (with counter resets), and the ReplicaSignal built from it."""

from __future__ import annotations

import pytest
from llmops.autoscaling.metrics import parse_vllm_metrics, replica_signal, ttft_mean_between

OLD = """# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 5.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 3.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.42
"""

NEW = """# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 2.0
vllm:num_requests_running{engine="1",model_name="m"} 4.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 1.0
vllm:num_requests_waiting{engine="1",model_name="m"} 0.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.99
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 3.0
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 10.0
vllm:time_to_first_token_seconds_count{model_name="m"} 10.0
vllm:time_to_first_token_seconds_sum{model_name="m"} 4.0
"""


@pytest.mark.parametrize(
    "text,expect",
    [
        (OLD, {"waiting": 3.0, "running": 5.0, "kv_cache_usage": 0.42}),
        # newer name wins over the deprecated one; engines summed / averaged
        (NEW, {"waiting": 1.0, "running": 6.0, "kv_cache_usage": 0.4, "ttft_count": 10.0, "ttft_sum": 4.0}),
        ("", {}),
        ("# TYPE other_metric gauge\nother_metric 7\n", {}),
    ],
)
def test_parse(text: str, expect: dict) -> None:
    got = parse_vllm_metrics(text)
    assert got.keys() == expect.keys()
    for k, v in expect.items():
        assert got[k] == pytest.approx(v)


@pytest.mark.parametrize(
    "before,after,expect",
    [
        ({"ttft_count": 10, "ttft_sum": 4}, {"ttft_count": 14, "ttft_sum": 6}, 0.5),
        ({"ttft_count": 10, "ttft_sum": 4}, {"ttft_count": 10, "ttft_sum": 4}, None),  # nothing new
        ({"ttft_count": 10, "ttft_sum": 4}, {"ttft_count": 2, "ttft_sum": 1}, None),  # restarted
        ({}, {"ttft_count": 2, "ttft_sum": 1}, None),
    ],
)
def test_ttft_mean_between(before, after, expect) -> None:
    assert ttft_mean_between(before, after) == (pytest.approx(expect) if expect is not None else None)


def test_replica_signal_from_scrapes() -> None:
    before = parse_vllm_metrics(NEW)
    after = parse_vllm_metrics(
        NEW.replace("_count{model_name=\"m\"} 10.0", "_count{model_name=\"m\"} 12.0")
        .replace("_sum{model_name=\"m\"} 4.0", "_sum{model_name=\"m\"} 7.0")
    )
    sig = replica_signal(after, before)
    assert (sig.waiting, sig.running, sig.kv_cache_usage) == (1.0, 6.0, pytest.approx(0.4))
    assert sig.ttft_seconds == pytest.approx(1.5)
    assert replica_signal(parse_vllm_metrics(OLD)).ttft_seconds is None
