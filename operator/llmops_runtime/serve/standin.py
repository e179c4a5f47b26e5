"""TEST DOUBLE: a stand-in for vLLM's OpenAI-compatible server, for tests and the sandbox only.

It is not an inference engine. It accepts the command line our builders render for vLLM,
reads the model directory the way vLLM would choose weights (safetensors only unless
``--load-format`` allows pickle) and parses the safetensors headers, then after a
configurable load delay serves vLLM's HTTP surface with deterministic fake text:

- ``/health`` (503 until loaded), ``/v1/models``, ``/v1/completions``,
  ``/v1/chat/completions``, ``/version``;
- ``/metrics`` in Prometheus exposition with vLLM's metric names
  (``vllm:num_requests_waiting``, ``vllm:num_requests_running``, both
  ``vllm:gpu_cache_usage_perc`` and the newer ``vllm:kv_cache_usage_perc``,
  ``vllm:time_to_first_token_seconds``, ``vllm:prompt_tokens_total``,
  ``vllm:generation_tokens_total``, ``vllm:request_success_total``), labelled
  ``model_name`` as vLLM does;
- ``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (vLLM's request and response
  shapes); loaded adapters are listed in ``/v1/models``.

Queueing: at most ``max_num_seqs`` requests run at once; the rest wait (visible in
``vllm:num_requests_waiting``). A saturated replica completes ``SERVICE_RATE`` requests per
second, so each running request takes ``max_num_seqs / SERVICE_RATE`` seconds.

Stand-in-only knobs (environment):

=================================  ==========================================================
``LLMOPS_STANDIN_LOAD_SECONDS``    seconds between start and "model loaded" (default 0)
``LLMOPS_STANDIN_SERVICE_RATE``    requests/s one saturated replica completes (default 50)
``LLMOPS_STANDIN_MAX_NUM_SEQS``    overrides ``--max-num-seqs`` (default 256, vLLM's)
``LLMOPS_STANDIN_FAIL``            ``kv-cache``: die after loading with vLLM's "not enough KV
                                   cache memory" error; ``cuda-oom``: CUDA out of memory
``LLMOPS_STANDIN_KV_CACHE_TOKENS``  tokens the pretend KV cache holds at
                                   ``--gpu-memory-utilization 0.9`` (scaled linearly; default
                                   1048576); a ``--max-model-len`` above it dies as vLLM does
``LLMOPS_STANDIN_WAITING``         synthetic requests added to num_requests_waiting
=================================  ==========================================================

``POST /standin/load {"waiting": n, "running": n, "kv_cache_usage": f}`` (test-only) sets
the synthetic queue depth, running count and KV-cache usage at run time;
``GET /standin/load`` returns the live counters. Limitation: the stand-in enforces
``max(max_loras, max_cpu_loras)`` as a hard cap on loaded adapters, where real vLLM keeps
``max_cpu_loras`` in an LRU cache.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from llmops_runtime.localenv import POD_IP

from .fetch import PICKLE_SUFFIXES, pod_path

LOAD_SECONDS = "LLMOPS_STANDIN_LOAD_SECONDS"
SERVICE_RATE = "LLMOPS_STANDIN_SERVICE_RATE"
MAX_NUM_SEQS = "LLMOPS_STANDIN_MAX_NUM_SEQS"
FAIL = "LLMOPS_STANDIN_FAIL"
WAITING = "LLMOPS_STANDIN_WAITING"
KV_CACHE_TOKENS = "LLMOPS_STANDIN_KV_CACHE_TOKENS"
DEFAULT_KV_CACHE_TOKENS = 1 << 20

VERSION = "0.0.0+llmops-standin"
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
                160.0, 640.0, 2560.0)
_WORDS = ["the", "a", "model", "token", "cache", "replica", "queue", "load", "serve", "verify", "batch", "prefix", "decode", "prompt",
          "adapter"]


def build_parser() -> argparse.ArgumentParser:
    """The subset of ``vllm serve`` flags our builders may render; unknown flags fail like vLLM."""
    ap = argparse.ArgumentParser(prog="python -m llmops_runtime.serve.standin", description="vLLM stand-in (test double)")
    ap.add_argument("model_tag", nargs="?", help="model path (as in `vllm serve MODEL`)")
    ap.add_argument("--model")
    ap.add_argument("--served-model-name", nargs="+")
    # In a sandbox pod POD_IP is the pod's loopback address; bind there unless told otherwise.
    ap.add_argument("--host", default=os.environ.get(POD_IP) or "0.0.0.0")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    ap.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    ap.add_argument("--max-model-len", type=int)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    ap.add_argument("--dtype", default="auto", choices=["auto", "half", "float16", "bfloat16", "float", "float32"])
    ap.add_argument("--quantization", "-q")
    ap.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--max-num-seqs", type=int)
    ap.add_argument("--max-num-batched-tokens", type=int)
    ap.add_argument("--enable-lora", action="store_true")
    ap.add_argument("--max-loras", type=int, default=1)
    ap.add_argument("--max-lora-rank", type=int, default=16)
    ap.add_argument("--max-cpu-loras", type=int)
    ap.add_argument("--load-format", default="auto", choices=["auto", "pt", "safetensors", "npcache", "dummy", "tensorizer",
                                                              "runai_streamer", "bitsandbytes", "fastsafetensors"])
    ap.add_argument("--trust-remote-code", action="store_true")
    ap.add_argument("--revision")
    ap.add_argument("--tokenizer")
    ap.add_argument("--download-dir")
    ap.add_argument("--block-size", type=int)
    ap.add_argument("--kv-cache-dtype")
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=None)
    ap.add_argument("--scheduling-policy", choices=["fcfs", "priority"])
    ap.add_argument("--disable-log-stats", action="store_true")
    ap.add_argument("--shutdown-timeout", type=float, default=0.0)
    ap.add_argument("--uvicorn-log-level", default="info")
    ap.add_argument("--api-key")
    return ap


class LoadError(Exception):
    """The model directory cannot be served; the text mirrors vLLM's."""


def kv_cache_tokens(gpu_memory_utilization: float) -> int:
    """Tokens the pretend KV cache holds (more GPU memory for vLLM, more cache)."""
    base = int(os.environ.get(KV_CACHE_TOKENS) or DEFAULT_KV_CACHE_TOKENS)
    return max(16, int(base * gpu_memory_utilization / 0.9))


def kv_cache_failure_text(max_model_len: int, fits: int | None = None) -> str:
    """vLLM's message when the KV cache cannot hold one sequence of max_model_len."""
    fits = max(16, max_model_len // 4) if fits is None else fits
    return (
        f"ValueError: The model's max seq len ({max_model_len}) is larger than the maximum number of tokens "
        f"that can be stored in KV cache ({fits}). Try increasing `gpu_memory_utilization` or decreasing "
        "`max_model_len` when initializing the engine."
    )


CUDA_OOM_TEXT = (
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1.96 GiB. GPU 0 has a total capacity of "
    "79.19 GiB of which 1.02 GiB is free."
)


def read_model(path: Path, load_format: str) -> tuple[list[Path], int]:
    """Pick the weight files vLLM would load and parse safetensors headers -> (files, parameters)."""
    if not path.is_dir():
        raise LoadError(f"OSError: {path} does not appear to have a file named config.json")
    if not (path / "config.json").is_file():
        raise LoadError(f"OSError: {path} does not appear to have a file named config.json")
    safet = sorted(path.glob("*.safetensors"))
    pickles = sorted(p for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if load_format == "dummy":
        return [], 0
    if load_format in ("safetensors", "fastsafetensors", "runai_streamer") or (load_format == "auto" and safet):
        files = safet
    elif load_format in ("pt", "auto"):
        files = pickles
    else:
        files = safet
    if not files:
        raise LoadError(f"RuntimeError: Cannot find any model weights with `{path}`")
    params = 0
    for f in files:
        if f.suffix != ".safetensors":
            continue
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise LoadError(f"safetensors_rust.SafetensorError: Error while deserializing header: {f.name}")
            (n,) = struct.unpack("<Q", head)
            try:
                header = json.loads(fh.read(n))
            except ValueError:
                raise LoadError(f"safetensors_rust.SafetensorError: Error while deserializing header: {f.name}") from None
        for name, t in header.items():
            if name != "__metadata__":
                count = 1
                for d in t.get("shape", []):
                    count *= int(d)
                params += count
    return files, params


@dataclass
class State:
    model: str
    names: list[str]
    max_num_seqs: int
    service_seconds: float
    max_model_len: int
    enable_lora: bool
    lora_cap: int
    max_lora_rank: int
    loaded: bool = False
    running: int = 0
    waiting: int = 0
    synthetic_waiting: int = 0
    synthetic_running: int = 0
    synthetic_kv: float | None = None
    adapters: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.time)


class Metrics:
    def __init__(self, name: str) -> None:
        self.registry = CollectorRegistry()
        lab = ["model_name"]
        r = self.registry
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", lab, registry=r)
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.", lab, registry=r)
        self.gpu_cache = Gauge("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage (deprecated name).", lab,
                               registry=r)
        self.kv_cache = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", lab, registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", lab,
                              buckets=TTFT_BUCKETS, registry=r)
        self.prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", lab, registry=r)
        self.generation = Counter("vllm:generation_tokens", "Number of generation tokens processed.", lab, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.", [*lab, "finished_reason"], registry=r)
        self.name = name

    def refresh(self, s: State) -> None:
        n = self.name
        running = s.running + s.synthetic_running
        kv = s.synthetic_kv if s.synthetic_kv is not None else min(1.0, running / max(1, s.max_num_seqs))
        self.waiting.labels(n).set(s.waiting + s.synthetic_waiting)
        self.running.labels(n).set(running)
        self.gpu_cache.labels(n).set(kv)
        self.kv_cache.labels(n).set(kv)


def fake_text(prompt: str, n: int) -> str:
    """Deterministic words derived from the prompt."""
    h = hashlib.sha256(prompt.encode()).digest()
    return " ".join(_WORDS[h[i % len(h)] % len(_WORDS)] for i in range(n))


def _err(status: int, message: str, typ: str = "BadRequestError", param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": typ, "param": param, "code": status}}, status=status)


def make_app(state: State, metrics: Metrics) -> web.Application:
    cond = asyncio.Condition()

    async def health(_: web.Request) -> web.Response:
        return web.Response(status=200 if state.loaded else 503)

    async def version(_: web.Request) -> web.Response:
        return web.json_response({"version": VERSION})

    async def models(_: web.Request) -> web.Response:
        if not state.loaded:
            return web.Response(status=503)
        created = int(state.started)
        data = [
            {"id": n, "object": "model", "created": created, "owned_by": "vllm", "root": state.model, "parent": None,
             "max_model_len": state.max_model_len}
            for n in state.names
        ]
        data += [
            {"id": a, "object": "model", "created": created, "owned_by": "vllm", "root": p, "parent": state.names[0], "max_model_len": None}
            for a, p in state.adapters.items()
        ]
        return web.json_response({"object": "list", "data": data})

    async def generate(req: web.Request, chat: bool) -> web.Response:
        if not state.loaded:
            return web.Response(status=503)
        try:
            body = await req.json()
        except ValueError:
            return _err(400, "Invalid JSON body")
        model = body.get("model") or state.names[0]
        if model not in state.names and model not in state.adapters:
            return _err(404, f"The model `{model}` does not exist.", "NotFoundError", "model")
        if chat:
            msgs = body.get("messages")
            if not isinstance(msgs, list) or not msgs:
                return _err(400, "messages must be a non-empty list", param="messages")
            prompt = "\n".join(str(m.get("content", "")) for m in msgs if isinstance(m, dict))
        else:
            prompt = body.get("prompt", "")
            prompt = " ".join(map(str, prompt)) if isinstance(prompt, list) else str(prompt)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
        arrived = time.monotonic()
        async with cond:
            state.waiting += 1
            metrics.refresh(state)
            await cond.wait_for(lambda: state.running < state.max_num_seqs)
            state.waiting -= 1
            state.running += 1
            metrics.refresh(state)
        try:
            metrics.ttft.labels(metrics.name).observe(time.monotonic() - arrived)
            await asyncio.sleep(state.service_seconds)
        finally:
            async with cond:
                state.running -= 1
                metrics.refresh(state)
                cond.notify_all()
        prompt_tokens = len(prompt.split())
        text = fake_text(f"{model}\0{prompt}", max_tokens)
        metrics.prompt.labels(metrics.name).inc(prompt_tokens)
        metrics.generation.labels(metrics.name).inc(max_tokens)
        metrics.success.labels(metrics.name, "length").inc()
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": max_tokens, "total_tokens": prompt_tokens + max_tokens}
        rid = hashlib.sha256(f"{arrived}{prompt}".encode()).hexdigest()[:24]
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "length"}
            return web.json_response({"id": f"chatcmpl-{rid}", "object": "chat.completion", "created": int(time.time()), "model": model,
                                      "choices": [choice], "usage": usage})
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length"}
        return web.json_response({"id": f"cmpl-{rid}", "object": "text_completion", "created": int(time.time()), "model": model,
                                  "choices": [choice], "usage": usage})

    async def completions(req: web.Request) -> web.Response:
        return await generate(req, chat=False)

    async def chat(req: web.Request) -> web.Response:
        return await generate(req, chat=True)

    async def load_lora(req: web.Request) -> web.Response:
        body = await req.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not state.enable_lora:
            return _err(400, "LoRA is not enabled. Please start the server with --enable-lora.")
        if not name or not path:
            return _err(400, "Both 'lora_name' and 'lora_path' must be provided.")
        if name in state.adapters:
            return _err(400, f"The lora adapter '{name}' has already been loaded.")
        local = pod_path(path)
        if not (local / "adapter_config.json").is_file():
            return _err(400, f"Loading lora {name} failed: No adapter found for {path}")
        try:
            rank = int(json.loads((local / "adapter_config.json").read_text()).get("r", 0))
        except (ValueError, AttributeError):
            return _err(400, f"Loading lora {name} failed: invalid adapter_config.json")
        if rank > state.max_lora_rank:
            return _err(400, f"LoRA rank {rank} is greater than max_lora_rank {state.max_lora_rank}.")
        if len(state.adapters) >= state.lora_cap:
            return _err(400, f"Loading lora {name} failed: the stand-in holds at most {state.lora_cap} adapters (max_loras);"
                             " unload one first.")
        state.adapters[name] = path
        return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")

    async def unload_lora(req: web.Request) -> web.Response:
        body = await req.json()
        name = body.get("lora_name")
        if name not in state.adapters:
            return _err(400, f"The lora adapter '{name}' cannot be found.", "NotFoundError")
        del state.adapters[name]
        return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")

    async def metrics_h(_: web.Request) -> web.Response:
        metrics.refresh(state)
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def standin_load(req: web.Request) -> web.Response:
        if req.method == "POST":
            body = await req.json()
            state.synthetic_waiting = int(body.get("waiting", state.synthetic_waiting))
            state.synthetic_running = int(body.get("running", state.synthetic_running))
            if "kv_cache_usage" in body:
                state.synthetic_kv = None if body["kv_cache_usage"] is None else float(body["kv_cache_usage"])
            metrics.refresh(state)
        return web.json_response(
            {"waiting": state.waiting, "running": state.running, "synthetic_waiting": state.synthetic_waiting,
             "synthetic_running": state.synthetic_running, "kv_cache_usage": state.synthetic_kv, "loaded": state.loaded}
        )

    app = web.Application()
    app.add_routes([
        web.get("/health", health),
        web.get("/version", version),
        web.get("/v1/models", models),
        web.post("/v1/completions", completions),
        web.post("/v1/chat/completions", chat),
        web.post("/v1/load_lora_adapter", load_lora),
        web.post("/v1/unload_lora_adapter", unload_lora),
        web.get("/metrics", metrics_h),
        web.get("/standin/load", standin_load),
        web.post("/standin/load", standin_load),
    ])
    return app


async def serve(args: argparse.Namespace) -> int:
    model = args.model or args.model_tag
    if not model:
        print("error: a model is required (positional or --model)", file=sys.stderr)
        return 2
    names = args.served_model_name or [model]
    env = os.environ
    max_num_seqs = int(env.get(MAX_NUM_SEQS) or args.max_num_seqs or 256)
    rate = float(env.get(SERVICE_RATE) or 50.0)
    max_model_len = args.max_model_len or 4096
    state = State(
        model=model,
        names=list(names),
        max_num_seqs=max_num_seqs,
        service_seconds=max_num_seqs / rate,
        max_model_len=max_model_len,
        enable_lora=args.enable_lora,
        lora_cap=max(args.max_loras, args.max_cpu_loras or 0),
        max_lora_rank=args.max_lora_rank,
        synthetic_waiting=int(env.get(WAITING) or 0),
    )
    metrics = Metrics(names[0])
    metrics.refresh(state)
    # vLLM loads before it listens; we listen first (503s) so probes see the load taking time.
    try:
        files, params = read_model(pod_path(model), args.load_format)
    except LoadError as e:
        print(e, file=sys.stderr)
        return 1
    # aiohttp waits for in-flight handlers up to shutdown_timeout on cleanup: vLLM's drain.
    runner = web.AppRunner(make_app(state, metrics), access_log=None, shutdown_timeout=max(0.01, args.shutdown_timeout))
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    print(f"INFO: vLLM stand-in {VERSION} serving {names} on http://{args.host}:{args.port} (TEST DOUBLE)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        load = float(env.get(LOAD_SECONDS) or 0)
        print(f"INFO: Loading model weights from {len(files)} file(s), {params} parameters", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=load)
            return 0  # terminated while loading
        except TimeoutError:
            pass
        fail = env.get(FAIL, "")
        capacity = kv_cache_tokens(args.gpu_memory_utilization)
        if fail == "kv-cache" or max_model_len > capacity:
            print(kv_cache_failure_text(max_model_len, None if fail == "kv-cache" else capacity), file=sys.stderr, flush=True)
            return 1
        if fail == "cuda-oom":
            print(CUDA_OOM_TEXT, file=sys.stderr, flush=True)
            return 1
        state.loaded = True
        print("INFO: Application startup complete.", flush=True)
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
