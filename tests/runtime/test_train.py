"""The built-in causal-LM entry: config from args and TRAIN_* env, the synthetic and file
datasets, augmentation, and that a short single-process run learns (loss falls) and saves."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from llmops_runtime import train

pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")


def test_config_reads_args_then_env():
    cfg = train.parse_config(["--steps", "7"], {"TRAIN_STEPS": "3", "TRAIN_LR": "0.5", "TRAIN_DATA": "x.txt"})
    assert (cfg.steps, cfg.lr, cfg.data) == (7, 0.5, "x.txt")
    with pytest.raises(ValueError):
        train.parse_config(["--vocab", "1"], {})


def test_synthetic_samples_are_deterministic_and_augmentation_is_seeded():
    cfg = train.TrainConfig(aug_prob=0.0)
    plain = train.TokenDataset(cfg, rank=0)
    assert torch.equal(plain[5]["tokens"], train.TokenDataset(cfg, rank=0)[5]["tokens"])
    noisy = [train.TokenDataset(cfg.model_copy(update={"aug_prob": 0.5}), rank=0) for _ in range(2)]
    a, b = noisy[0][5]["tokens"], noisy[1][5]["tokens"]
    assert torch.equal(a, b) and not torch.equal(a, plain[5]["tokens"])
    assert torch.equal(a[-1:], plain[5]["tokens"][-1:])  # the target token is never corrupted


def test_jsonl_corpus(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("\n".join(json.dumps({"text": "hello world " * 5}) for _ in range(3)))
    ds = train.TokenDataset(train.TrainConfig(data=str(path), seq_len=8, vocab=256), rank=0)
    assert len(ds) > 3 and bytes(ds[0]["tokens"].tolist()[:5]) == b"hello"


def test_single_process_run_learns_and_commits(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LLMOPS_CHECKPOINT_URI": str(tmp_path / "ckpt"),
           "LLMOPS_CHECKPOINT_EVERY_STEPS": "20", "LLMOPS_PROGRESS_FILE": str(tmp_path / "p.jsonl"),
           "LLMOPS_PROGRESS_INTERVAL_SECONDS": "0.01", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-m", "llmops_runtime.train", "--steps", "60", "--log-file",
                             str(tmp_path / "log")], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    entries = [json.loads(line) for line in (tmp_path / "log.rank0").read_text().splitlines()]
    losses = [float.fromhex(e["loss"]) for e in entries if "loss" in e]
    assert len(losses) == 60 and sum(losses[-10:]) < 0.7 * sum(losses[:10])
    reports = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert reports[-1]["step"] == 60 and reports[-1]["checkpoint"]["id"] == "step-00000060"
