"""The server arguments the InferenceService builder renders, parsed by the pinned vLLM's own
parser (``vllm serve``'s, then vLLM's serve-args validation and engine-args conversion) in the
vLLM venv: for several specs (defaults; every typed engine field with every allowlisted extra
flag; LoRA on; pickle allowed), as rendered and as the sandbox's vLLM runtime runs them; the
server image's default flags; and an unknown flag, which must be refused (the check can fail).
Parsed values are compared with the spec, so a flag vLLM reads differently fails too.

Runs wherever ``make install`` created the vLLM venv (``make test`` depends on it); skipped,
with the reason, only where it is absent."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from llmops.api.inference import parse_inference_service
from llmops.builders import inference as B
from llmops.sandbox.node.runtimes import vllm_runtime, vllm_venv

from .test_server_image import dockerfile_default_argv
from .test_standin import EXTRA_ARG_VALUES

VLLM_PYTHON = vllm_venv() / "bin" / "python"
PARSER_SCRIPT = Path(__file__).with_name("vllm_parse.py")

pytestmark = [
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason=f"no vLLM venv at {VLLM_PYTHON.parent.parent} (make install creates it)"),
    pytest.mark.timeout(900),  # importing vLLM takes ~20 s of CPU; much longer on a loaded machine
]

FULL_ENGINE = {"tensorParallelSize": 2, "maxModelLen": 8192, "gpuMemoryUtilization": 0.85, "dtype": "bfloat16", "quantization": "awq",
               "enablePrefixCaching": False, "maxNumSeqs": 64, "maxLoras": 8,
               "extraArgs": [{"name": n} if v is None else {"name": n, "value": v} for n, v in EXTRA_ARG_VALUES.items()]}
#: name -> (spec.model extras, spec.engine, LoRA on)
SPECS: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {
    "default": ({}, {}, False),
    "full": ({"trustRemoteCode": True, "servedModelName": "llama-chat"}, FULL_ENGINE, True),
    "pickle": ({"format": "pickle", "allowPickle": True}, {"dtype": "float16"}, True),
}


def rendered(name: str) -> list[str]:
    model, engine, lora = SPECS[name]
    svc = parse_inference_service({"apiVersion": "llmops.dev/v1alpha1", "kind": "InferenceService",
                                   "metadata": {"name": "chat", "namespace": "ml", "uid": "u"},
                                   "spec": {"model": {"uri": "s3://models/llama", **model}, "engine": engine, "resources": {"gpus": 2}}})
    return B.server_args(svc, lora)


def as_the_sandbox_runs(args: list[str]) -> list[str]:
    """The argv the sandbox's vLLM runtime starts, less its interpreter and module."""
    argv = vllm_runtime().argv([*B.SERVE_COMMAND, *args], {"POD_IP": "127.1.0.5"})
    return argv[argv.index("vllm.entrypoints.openai.api_server") + 1:]


@pytest.fixture(scope="module")
def parsed() -> dict[str, dict[str, Any]]:
    cases = {name: rendered(name) for name in SPECS}
    cases |= {f"{name}@sandbox": as_the_sandbox_runs(rendered(name)) for name in SPECS}
    cases["image-default"] = dockerfile_default_argv()
    cases["unknown-flag"] = [*rendered("default"), "--no-such-flag", "1"]
    cases["bad-value"] = [*rendered("default"), "--max-num-seqs", "many"]
    out = subprocess.run([str(VLLM_PYTHON), str(PARSER_SCRIPT)], input=json.dumps(list(cases.values())),
                         capture_output=True, text=True, timeout=840, check=True)
    report = json.loads(out.stdout)
    return dict(zip(cases, report["results"], strict=True))


@pytest.mark.parametrize("case", [*SPECS, *(f"{n}@sandbox" for n in SPECS), "image-default"])
def test_vllm_accepts_the_rendered_arguments(parsed, case: str) -> None:
    assert parsed[case]["ok"], parsed[case]


def test_vllm_reads_the_values_the_spec_asked_for(parsed) -> None:
    default, full, pickle = (parsed[n]["args"] for n in SPECS)
    assert default["model"] == B.model_path("chat") and default["served_model_name"] == ["chat"] and default["port"] == B.PORT
    assert default["load_format"] == "safetensors" and not default["enable_lora"] and default["enable_prefix_caching"] is True
    assert default["shutdown_timeout"] == B.DRAIN_SECONDS
    keys = ("tensor_parallel_size", "max_model_len", "max_num_seqs", "max_loras", "max_cpu_loras")
    assert tuple(full[k] for k in keys) == (2, 8192, 64, 8, 8)
    assert full["enable_lora"] and full["trust_remote_code"] and full["enable_prefix_caching"] is False
    assert (full["quantization"], full["dtype"], full["gpu_memory_utilization"]) == ("awq", "bfloat16", 0.85)
    assert (full["max_num_batched_tokens"], full["block_size"], full["kv_cache_dtype"], full["seed"], full["max_lora_rank"]) == (
        8192, 16, "fp8", 1, 32)
    assert full["enforce_eager"] and full["enable_chunked_prefill"] and full["scheduling_policy"] == "priority"
    assert full["served_model_name"] == ["llama-chat"]
    assert pickle["load_format"] == "auto" and pickle["dtype"] == "float16" and pickle["enable_lora"]
    sandbox = parsed["default@sandbox"]["args"]
    assert sandbox["model"] == B.model_path("chat") and sandbox["host"] == "127.1.0.5"


@pytest.mark.parametrize(("case", "needle"), [("unknown-flag", "--no-such-flag"), ("bad-value", "many")])
def test_vllm_refuses_what_it_does_not_know(parsed, case: str, needle: str) -> None:
    assert not parsed[case]["ok"] and needle in parsed[case]["error"], parsed[case]
