"""Reading vLLM's Prometheus exposition text into the few numbers the policy needs.

vLLM renamed metrics over time (``vllm:gpu_cache_usage_perc`` became
``vllm:kv_cache_usage_perc`` in the V1 engine); both are accepted, the newer one wins when a
server exposes both. Samples with several label sets (one per model name or engine) are
summed for counts and averaged for the usage fraction. The TTFT histogram is reduced to its
cumulative sum and count, so that a caller can take the mean over a scrape interval from two
scrapes (``ttft_mean_between``).
"""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from llmops.autoscaling.policy import ReplicaSignal

__all__ = ["parse_vllm_metrics", "replica_signal", "ttft_mean_between"]

_WAITING = ("vllm:num_requests_waiting",)
_RUNNING = ("vllm:num_requests_running",)
_KV = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")  # newest first
_TTFT = "vllm:time_to_first_token_seconds"


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Return waiting, running, kv_cache_usage, ttft_sum, ttft_count (those present)."""
    sums: dict[str, list[float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            sums.setdefault(s.name, []).append(float(s.value))
    out: dict[str, float] = {}
    for key, names in (("waiting", _WAITING), ("running", _RUNNING)):
        for n in names:
            if n in sums:
                out[key] = sum(sums[n])
                break
    for n in _KV:
        if n in sums:
            vals = sums[n]
            out["kv_cache_usage"] = sum(vals) / len(vals)
            break
    if _TTFT + "_count" in sums:
        out["ttft_count"] = sum(sums[_TTFT + "_count"])
        out["ttft_sum"] = sum(sums.get(_TTFT + "_sum", [0.0]))
    return out


def ttft_mean_between(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Mean TTFT of the requests that got their first token between two scrapes."""
    if "ttft_count" not in after or "ttft_count" not in before:
        return None
    n = after["ttft_count"] - before["ttft_count"]
    if n <= 0:  # nothing new, or the server restarted (counters reset)
        return None
    return (after["ttft_sum"] - before["ttft_sum"]) / n


def replica_signal(after: dict[str, float], before: dict[str, float] | None = None) -> ReplicaSignal:
    """Build the policy's ReplicaSignal from one (or two consecutive) parsed scrapes."""
    return ReplicaSignal(
        waiting=after.get("waiting", 0.0),
        running=after.get("running", 0.0),
        kv_cache_usage=after.get("kv_cache_usage", 0.0),
        ttft_seconds=ttft_mean_between(before, after) if before is not None else None,
    )
