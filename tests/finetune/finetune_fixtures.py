"""Builders for finetune tests: a tiny random-init causal LM, a locally trained tokenizer,
datasets, specs and a launcher harness. Nothing is downloaded."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

CHAT_TEMPLATE = "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
WORDS = ["the", "a", "cat", "dog", "sat", "ran", "on", "under", "mat", "log", "big", "small", "red", "blue", "fast", "slow"]


def corpus(n: int, seed: int = 0) -> list[str]:
    """Learnable sentences: a fixed grammar over a small vocabulary."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        subj = rng.choice(["cat", "dog"])
        out.append(f"the {rng.choice(['big', 'small'])} {subj} {rng.choice(['sat', 'ran'])} on the "
                   f"{rng.choice(['red', 'blue'])} {'mat' if subj == 'cat' else 'log'}")
    return out


def build_model(root: Path, *, max_positions: int = 64, pickle_only: bool = False, hidden_size: int = 32) -> Path:
    """A 2-layer Llama (2 heads, hidden size 32) and a WordLevel tokenizer, saved as safetensors.
    vLLM's CPU attention kernels need a head size of 64 or more: serve with hidden_size=128."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    root.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>", "<user>", "<assistant>", "<system>", ">", "<"])
    tok.train_from_iterator(WORDS + corpus(50), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(root)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=max_positions,
                         pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.save_pretrained(root, safe_serialization=True)
    if pickle_only:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for p in root.glob("*.safetensors"):
            p.unlink()
        torch.save(state, root / "pytorch_model.bin")
    return root


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_spec(*, model_uri: str = "pvc://models/tiny", data_uri: str = "pvc://data/train.jsonl",
              out_uri: str = "pvc://out/adapter", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"uri": model_uri},
        "dataset": {"uri": data_uri, "textField": "text", "validationSplit": 0.2},
        "method": {"type": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.1}},
        "hyperparameters": {"maxSteps": 12, "learningRate": 0.01, "batchSize": 4, "maxSeqLength": 32, "seed": 3},
        "evaluation": {},
        "output": {"uri": out_uri},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_env(pvc_root: Path, spec: dict[str, Any], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "FINETUNE_")) and k not in ("RANK", "WORLD_SIZE")}
    env.update({
        "LLMOPS_PVC_ROOT": str(pvc_root),
        "LLMOPS_FINETUNE_SPEC": json.dumps(spec),
        "LLMOPS_FINETUNE_MODEL_CACHE": str(pvc_root / "cache"),
        "LLMOPS_TERMINATION_LOG": str(pvc_root / "termination-log"),
        "PYTHONPATH": str(REPO / "operator"),
        "PYTHONWARNINGS": "ignore",
        "TOKENIZERS_PARALLELISM": "false",
    })
    env.update(extra)
    return env


def start(tmp: Path, env: dict[str, str], *, nproc: int = 1, attempt: int = 0, name: str = "run") -> subprocess.Popen:
    full = dict(env)
    full.update({"LLMOPS_NPROC_PER_NODE": str(nproc), "LLMOPS_NNODES": "1", "LLMOPS_NODE_RANK": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "LLMOPS_ATTEMPT": str(attempt)})
    cmd = [sys.executable, "-m", "llmops_runtime.launch", "--grace", "60", "-m", "llmops_runtime.finetune"]
    return subprocess.Popen(cmd, env=full, cwd=tmp, start_new_session=True,
                            stdout=open(tmp / f"{name}.a{attempt}.out", "ab"), stderr=subprocess.STDOUT)


def last_step(log_prefix: Path, rank: int = 0) -> int:
    path = Path(f"{log_prefix}.rank{rank}")
    if not path.exists():
        return 0
    steps = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError, KeyError):
            steps.append(json.loads(line)["step"])
    return max(steps, default=0)


def wait_step(proc: subprocess.Popen, log_prefix: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while last_step(log_prefix) < step:
        assert proc.poll() is None, f"exited {proc.returncode} before step {step}"
        assert time.monotonic() < deadline, f"step {step} not reached"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def losses(log_prefix: Path, rank: int = 0) -> dict[int, str]:
    """Step -> loss hex; a later attempt's entry replaces a redone step."""
    out: dict[int, str] = {}
    for line in Path(f"{log_prefix}.rank{rank}").read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        out[entry["step"]] = entry["loss"]
    return out
