"""The vLLM stand-in (a test double) as a real process on 127.0.0.1: health flips after the
load delay; /v1/models and OpenAI completions; /metrics parses with vLLM's metric names;
requests beyond max-num-seqs wait (num_requests_waiting); synthetic load; LoRA load/unload
and its limit; the KV-cache failure text; weight selection by --load-format; and the flags the builder renders (vLLM's own parser
checks them too: test_vllm_args.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from llmops_runtime.serve import standin as S
from prometheus_client.parser import text_string_to_metric_families

from .conftest import make_model

ROOT = Path(__file__).resolve().parents[2]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(url: str, body: dict | None = None, timeout: float = 10) -> tuple[int, str]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Server:
    def __init__(self, proc: subprocess.Popen, port: int) -> None:
        self.proc, self.url = proc, f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        return _http(self.url + path)

    def post(self, path: str, body: dict) -> tuple[int, str]:
        return _http(self.url + path, body)

    def wait_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.communicate()
            try:
                self.get("/health")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        pytest.fail("stand-in never listened")

    def wait_healthy(self, timeout: float = 30) -> float:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.get("/health")[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.05)
        pytest.fail("stand-in never became healthy")

    def metrics(self) -> dict[str, float]:
        _, text = self.get("/metrics")
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out[s.name] = out.get(s.name, 0.0) + s.value if not s.name.endswith("_bucket") else out.get(s.name, 0.0)
        return out


@contextmanager
def standin(model: Path, *args: str, **env: str) -> Iterator[Server]:
    port = _port()
    cmd = [sys.executable, "-m", "llmops_runtime.serve.standin", "--model", str(model), "--served-model-name", "tiny",
           "--host", "127.0.0.1", "--port", str(port), *args]
    proc = subprocess.Popen(cmd, env=os.environ | env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield Server(proc, port)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("standin") / "m")


def test_health_flips_after_the_load_delay_and_models_lists_the_name(model) -> None:
    with standin(model, "--max-model-len", "2048", LLMOPS_STANDIN_LOAD_SECONDS="1.0") as s:
        s.wait_listening()
        assert s.get("/health")[0] == 503 and s.get("/v1/models")[0] == 503
        waited = s.wait_healthy()
        assert waited > 0.3  # listened early, became healthy only after loading
        code, body = s.get("/v1/models")
        data = json.loads(body)["data"]
        assert code == 200 and [m["id"] for m in data] == ["tiny"] and data[0]["max_model_len"] == 2048


def test_completions_are_deterministic_and_metrics_count_tokens(model) -> None:
    with standin(model, LLMOPS_STANDIN_SERVICE_RATE="1000") as s:
        s.wait_listening()
        s.wait_healthy()
        outs = [json.loads(s.post("/v1/completions", {"model": "tiny", "prompt": "hello world", "max_tokens": 5})[1]) for _ in range(2)]
        assert outs[0]["choices"][0]["text"] == outs[1]["choices"][0]["text"] and len(outs[0]["choices"][0]["text"].split()) == 5
        assert outs[0]["object"] == "text_completion" and outs[0]["usage"]["completion_tokens"] == 5
        code, body = s.post("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3})
        assert code == 200 and json.loads(body)["choices"][0]["message"]["role"] == "assistant"
        code, body = s.post("/v1/completions", {"model": "nope", "prompt": "x"})
        assert code == 404 and "does not exist" in json.loads(body)["error"]["message"]
        m = s.metrics()
        for name in ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:gpu_cache_usage_perc", "vllm:kv_cache_usage_perc",
                     "vllm:time_to_first_token_seconds_count"):
            assert name in m, name
        assert m["vllm:prompt_tokens_total"] == 2 * 2 + 1 and m["vllm:generation_tokens_total"] == 13
        assert m["vllm:time_to_first_token_seconds_count"] == 3
        _, text = s.get("/metrics")
        assert 'vllm:num_requests_waiting{model_name="tiny"}' in text


def test_requests_beyond_max_num_seqs_wait(model) -> None:
    # 2 slots, 4 req/s saturated => 0.5 s each; 6 concurrent requests => 4 wait at first.
    with standin(model, "--max-num-seqs", "2", LLMOPS_STANDIN_SERVICE_RATE="4") as s:
        s.wait_listening()
        s.wait_healthy()
        threads = [threading.Thread(target=s.post, args=("/v1/completions", {"prompt": f"p{i}", "max_tokens": 1})) for i in range(6)]
        for t in threads:
            t.start()
        peak_wait, peak_run = 0.0, 0.0
        deadline = time.monotonic() + 20
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            m = s.metrics()
            peak_wait = max(peak_wait, m["vllm:num_requests_waiting"])
            peak_run = max(peak_run, m["vllm:num_requests_running"])
            assert m["vllm:num_requests_running"] <= 2
            time.sleep(0.05)
        for t in threads:
            t.join(timeout=10)
        assert peak_run == 2 and peak_wait >= 2
        m = s.metrics()
        assert m["vllm:num_requests_waiting"] == 0 and m["vllm:request_success_total"] == 6


def test_synthetic_load_shows_in_metrics(model) -> None:
    with standin(model, LLMOPS_STANDIN_WAITING="3") as s:
        s.wait_listening()
        s.wait_healthy()
        assert s.metrics()["vllm:num_requests_waiting"] == 3
        s.post("/standin/load", {"waiting": 12, "running": 5, "kv_cache_usage": 0.75})
        m = s.metrics()
        gauges = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
        assert tuple(m[g] for g in gauges) == (12, 5, 0.75, 0.75)


def _adapter(root: Path, rank: int = 8) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    (root / "adapter_model.safetensors").write_bytes(b"")
    return root


def test_lora_load_unload_and_limit(model, tmp_path) -> None:
    a, b, c = (_adapter(tmp_path / n) for n in "abc")
    big = _adapter(tmp_path / "big", rank=64)
    with standin(model, "--enable-lora", "--max-loras", "2", "--max-lora-rank", "16") as s:
        s.wait_listening()
        s.wait_healthy()
        loaded = s.post("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": str(a)})
        assert loaded == (200, "Success: LoRA adapter 'a' added successfully.")
        assert s.post("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": str(a)})[0] == 400  # already loaded
        assert s.post("/v1/load_lora_adapter", {"lora_name": "big", "lora_path": str(big)})[0] == 400  # rank > max
        assert s.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(tmp_path / "none")})[0] == 400
        assert s.post("/v1/load_lora_adapter", {"lora_name": "b", "lora_path": str(b)})[0] == 200
        code, body = s.post("/v1/load_lora_adapter", {"lora_name": "c", "lora_path": str(c)})
        assert code == 400 and "at most 2" in body
        models = {m["id"]: m for m in json.loads(s.get("/v1/models")[1])["data"]}
        assert set(models) == {"tiny", "a", "b"} and models["a"]["parent"] == "tiny"
        assert s.post("/v1/completions", {"model": "a", "prompt": "x", "max_tokens": 1})[0] == 200
        assert s.post("/v1/unload_lora_adapter", {"lora_name": "a"}) == (200, "Success: LoRA adapter 'a' removed successfully.")
        assert s.post("/v1/unload_lora_adapter", {"lora_name": "a"})[0] == 400
        assert s.post("/v1/load_lora_adapter", {"lora_name": "c", "lora_path": str(c)})[0] == 200
    with standin(model) as s:  # LoRA not enabled
        s.wait_listening()
        s.wait_healthy()
        assert s.post("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": str(a)})[0] == 400


@pytest.mark.parametrize(("fail", "text"),
                         [("kv-cache", "is larger than the maximum number of tokens that can be stored in KV cache"),
                          ("cuda-oom", "CUDA out of memory")])
def test_failure_modes_print_vllms_text_and_exit_nonzero(model, fail, text) -> None:
    with standin(model, "--max-model-len", "8192", LLMOPS_STANDIN_FAIL=fail) as s:
        _, err = s.proc.communicate(timeout=30)
        assert s.proc.returncode == 1 and text in err
        if fail == "kv-cache":
            assert "max seq len (8192)" in err


def test_max_model_len_beyond_the_kv_cache_fails_like_vllm(model) -> None:
    with standin(model, "--max-model-len", "4000000", "--gpu-memory-utilization", "0.45") as s:
        _, err = s.proc.communicate(timeout=30)
        assert s.proc.returncode == 1
        tokens = S.kv_cache_tokens(0.45)
        assert f"max seq len (4000000) is larger than the maximum number of tokens that can be stored in KV cache ({tokens})" in err


@pytest.mark.parametrize(
    ("weights", "load_format", "ok"),
    [("safetensors", "safetensors", True), ("pickle", "safetensors", False), ("pickle", "auto", True), ("pickle", "pt", True),
     ("safetensors", "pt", False)],
)
def test_weight_selection_follows_load_format(tmp_path, weights, load_format, ok) -> None:
    m = make_model(tmp_path / "m", weights=weights)
    if ok:
        files, params = S.read_model(m, load_format)
        assert files and (params == 2 * 4096 if weights == "safetensors" else True)
    else:
        with pytest.raises(S.LoadError, match="Cannot find any model weights"):
            S.read_model(m, load_format)


def test_unknown_flag_fails_like_vllm() -> None:
    with pytest.raises(SystemExit):
        S.build_parser().parse_args(["--model", "/m", "--no-such-flag"])


RENDERED = [
    "--model", "/models/m", "--served-model-name", "tiny", "--port", "8000", "--tensor-parallel-size", "2",
    "--max-model-len", "4096", "--gpu-memory-utilization", "0.9", "--dtype", "bfloat16", "--enable-prefix-caching",
    "--max-num-seqs", "64", "--enable-lora", "--max-loras", "4", "--max-lora-rank", "16", "--load-format", "safetensors",
]


def test_standin_accepts_the_rendered_flags() -> None:
    a = S.build_parser().parse_args(RENDERED)
    assert (a.tensor_parallel_size, a.max_num_seqs, a.max_loras, a.load_format, a.enable_prefix_caching) == (2, 64, 4, "safetensors", True)


#: A value for every allowlisted extra flag (None: a boolean flag); a new flag must be added here,
#: so that it is checked against vLLM's own parser (tests/serve/test_vllm_args.py).
EXTRA_ARG_VALUES = {"--max-num-batched-tokens": "8192", "--block-size": "16", "--kv-cache-dtype": "fp8", "--enforce-eager": None,
                    "--seed": "1", "--max-lora-rank": "32", "--enable-chunked-prefill": None, "--scheduling-policy": "priority"}


def test_every_extra_arg_has_a_test_value() -> None:
    from llmops.api.inference import ExtraArgName

    assert set(EXTRA_ARG_VALUES) == {e.value for e in ExtraArgName}


def _builder_renderings() -> list[list[str]]:
    """``vllm serve`` arguments as the InferenceService builder renders them for a few specs
    (defaults; every typed engine field; LoRA on; pickle allowed), the model path moved to --model."""
    from llmops.api.inference import parse_inference_service
    from llmops.builders import inference as B

    engines = [
        {},
        {"tensorParallelSize": 2, "maxModelLen": 8192, "gpuMemoryUtilization": 0.85, "dtype": "bfloat16", "quantization": "awq",
         "enablePrefixCaching": False, "maxNumSeqs": 64, "maxLoras": 8,
         "extraArgs": [{"name": n} if v is None else {"name": n, "value": v} for n, v in EXTRA_ARG_VALUES.items()]},
    ]
    out = []
    for engine, model, lora in ((engines[0], {}, False), (engines[1], {"trustRemoteCode": True}, True),
                                (engines[0], {"format": "pickle", "allowPickle": True}, True)):
        svc = parse_inference_service({"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService",
                                       "metadata": {"name": "chat", "namespace": "ml", "uid": "u"},
                                       "spec": {"model": {"uri": "s3://models/llama", **model}, "engine": engine,
                                                "resources": {"gpus": 2}}})
        args = B.server_args(svc, lora)
        out.append(["--model", args[0], *args[1:]])
    return out


def test_standin_accepts_what_the_builder_renders() -> None:
    for args in _builder_renderings():
        S.build_parser().parse_args(args)


@pytest.mark.parametrize(("timeout", "drained"), [("10", True), ("0", False)])
def test_sigterm_drains_running_requests_within_shutdown_timeout(model, timeout, drained) -> None:
    with standin(model, "--max-num-seqs", "1", "--shutdown-timeout", timeout, LLMOPS_STANDIN_SERVICE_RATE="0.5") as s:
        s.wait_listening()
        s.wait_healthy()
        result: list[object] = []

        def call() -> None:
            try:
                result.append(s.post("/v1/completions", {"prompt": "x", "max_tokens": 1})[0])
            except (urllib.error.URLError, ConnectionError) as e:  # cut off: no drain
                result.append(e)

        t = threading.Thread(target=call)
        t.start()
        deadline = time.monotonic() + 10
        while s.metrics()["vllm:num_requests_running"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        s.proc.terminate()
        t.join(timeout=20)
        assert result and (result[0] == 200) == drained  # the in-flight request finished before exit?
        assert s.proc.wait(timeout=20) == 0
