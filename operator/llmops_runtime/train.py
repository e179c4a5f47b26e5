"""Built-in causal-LM training entry: a TrainingJob that needs no user code.

``python -m llmops_runtime.launch -m llmops_runtime.train [--steps 100 --d-model 64 ...]``

A tiny GPT-style decoder in plain torch (token + position embeddings, pre-norm blocks of
causal self-attention and an MLP, dropout, tied output head) trained with AdamW and a
warmup + cosine LR schedule through the :class:`llmops_runtime.session.Session` API, with
data-parallel ranks under DDP (gloo on CPU, nccl on GPU).

Data: a synthetic, deterministic token dataset generated locally (sample ``i`` is an
arithmetic sequence modulo the vocabulary whose start and stride are drawn from a
generator seeded by ``(seed, i)``, stride 1..3; learnable, so the loss falls), or ``--data PATH`` (a
text file, or JSON lines with a ``text`` field), byte-tokenized modulo the vocabulary and
cut into windows. Random augmentation (``--aug-prob``) replaces tokens with random ones,
drawn from the per-worker generator that travels in the loader state, so it is exactly
reproducible across resume with or without loader workers.

Every option also reads ``TRAIN_<OPTION>`` from the environment (e.g. ``TRAIN_STEPS``), so
a TrainingJob can configure it with env alone. ``--log-file`` writes one JSON line per
step per rank (loss as a hex float, sample ids), used by the exactness tests.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from llmops.api import runtime_env as E
from pydantic import BaseModel, Field
from torch.utils.data import Dataset

from llmops_runtime import data as rdata
from llmops_runtime import ddp as rddp
from llmops_runtime.rng import seed_all
from llmops_runtime.session import Session


class TrainConfig(BaseModel):
    """Model, data and optimisation settings (tiny defaults run in seconds on a CPU)."""

    vocab: int = Field(default=64, ge=2, le=1_000_000)
    layers: int = Field(default=2, ge=1, le=128)
    d_model: int = Field(default=32, ge=4, le=16384)
    heads: int = Field(default=2, ge=1, le=256)
    seq_len: int = Field(default=16, ge=2, le=65536)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    steps: int = Field(default=50, ge=1)
    lr: float = Field(default=1e-2, gt=0)
    warmup: int = Field(default=5, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=8, ge=1, description="Per rank.")
    seed: int = Field(default=0, ge=0)
    dataset_size: int = Field(default=512, ge=1, description="Synthetic samples per epoch.")
    data: str | None = Field(default=None, description="Text or JSON-lines file instead of synthetic data.")
    aug_prob: float = Field(default=0.0, ge=0, le=1, description="Probability of replacing each input token.")
    num_workers: int = Field(default=0, ge=0, le=64)
    threads: int = Field(default=1, ge=0, description="torch intra-op threads (0 = torch default).")
    log_file: str | None = Field(default=None, description="Per-rank JSON lines: step, loss hex, sample ids.")
    step_delay: float = Field(default=0.0, ge=0, description="Sleep per step (tests widen their kill window).")


# --- data ------------------------------------------------------------------------------------
class TokenDataset(rdata.WorkerRandom, Dataset):
    """Fixed-length token windows with ids, optionally randomly augmented."""

    def __init__(self, cfg: TrainConfig, rank: int) -> None:
        rdata.WorkerRandom.__init__(self, cfg.seed, rank)
        self.cfg = cfg
        self._corpus = _load_corpus(cfg.data, cfg.vocab) if cfg.data else None

    def __len__(self) -> int:
        if self._corpus is None:
            return self.cfg.dataset_size
        return max(1, (len(self._corpus) - 1) // self.cfg.seq_len)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = self.cfg.seq_len + 1
        if self._corpus is None:
            g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + index)
            start = int(torch.randint(0, self.cfg.vocab, (1,), generator=g))
            stride = 1 + int(torch.randint(0, 3, (1,), generator=g))  # few strides: learnable in a few steps
            tokens = (start + stride * torch.arange(n)) % self.cfg.vocab
        else:
            begin = index * self.cfg.seq_len
            tokens = self._corpus[begin : begin + n]
            if len(tokens) < n:
                tokens = torch.cat([tokens, torch.zeros(n - len(tokens), dtype=torch.long)])
        tokens = tokens.long()
        if self.cfg.aug_prob > 0:
            g = self.worker_rng()
            mask = torch.rand(n - 1, generator=g) < self.cfg.aug_prob
            noise = torch.randint(0, self.cfg.vocab, (n - 1,), generator=g)
            inputs = torch.where(mask, noise, tokens[:-1])
            tokens = torch.cat([inputs, tokens[-1:]])
        return {"id": index, "tokens": tokens}


def _load_corpus(path: str, vocab: int) -> torch.Tensor:
    raw = Path(path).read_bytes()
    if path.endswith((".jsonl", ".json")):
        texts = [json.loads(line).get("text", "") for line in raw.decode("utf-8").splitlines() if line.strip()]
        raw = "\n".join(texts).encode("utf-8")
    return torch.tensor(list(raw), dtype=torch.long) % vocab


# --- model -----------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, 4 * cfg.d_model), nn.GELU(), nn.Linear(4 * cfg.d_model, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        # The math path on CPU: deterministic, and dropout (if any) stays in self.drop.
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.mlp(self.norm2(x)))


class TinyGPT(nn.Module):
    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        if cfg.d_model % cfg.heads:
            raise ValueError("d_model must be divisible by heads")
        self.tok = nn.Embedding(cfg.vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.d_model)
        # Small embeddings: the head is tied, and unit-variance logits start far above ln(vocab).
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.drop(self.tok(tokens) + self.pos(positions))
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.tok.weight.T  # tied head


def lr_lambda(cfg: TrainConfig):
    def factor(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def weights_digest(model: nn.Module) -> str:
    """sha256 over every parameter's bytes in name order (bitwise identity check)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# --- entry -----------------------------------------------------------------------------------
def parse_config(argv: list[str], env: dict[str, str]) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m llmops_runtime.train", description=__doc__.splitlines()[0])
    for name, field in TrainConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        default = env.get("TRAIN_" + name.upper(), field.default)
        if name == "steps" and "TRAIN_STEPS" not in env and int(env.get(E.TOTAL_STEPS, "0") or 0) > 0:
            default = env[E.TOTAL_STEPS]  # the TrainingJob's spec.totalSteps, via the operator
        parser.add_argument(flag, default=default, help=field.description)
    args = vars(parser.parse_args(argv))
    return TrainConfig.model_validate({k: v for k, v in args.items() if v is not None})


def finish_step(cfg: TrainConfig, session: Session, log: Any, loss: torch.Tensor, batch: dict[str, Any],
                tokens: torch.Tensor) -> None:
    """After the optimizer step: the step's record in the history log (exact loss in hex, the
    sample ids), the session's bookkeeping (progress, checkpoint), then the optional delay."""
    if log is not None:
        log.write(json.dumps({"step": session.step + 1, "attempt": session.config.attempt,
                              "loss": float(loss.item()).hex(), "ids": batch["id"].tolist()}) + "\n")
        log.flush()
    session.step_done(loss, tokens=int(tokens[:, 1:].numel()))
    if cfg.step_delay:
        time.sleep(cfg.step_delay)


def train(cfg: TrainConfig, session: Session) -> int:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)  # identical initial weights on every rank
    model = TinyGPT(cfg).to(session.device)
    seed_all(cfg.seed + 1 + session.rank)  # per-rank dropout streams
    trained = rddp.wrap(model, session)  # averaging independent of DDP's bucket rebuild
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    loader = rdata.make_loader(TokenDataset(cfg, session.rank), batch_size=cfg.batch_size, rank=session.rank,
                               world_size=session.world_size, seed=cfg.seed, num_workers=cfg.num_workers)
    session.register(model=model, optimizer=optimizer, scheduler=scheduler, dataloader=loader)
    session.resume()
    with (open(f"{cfg.log_file}.rank{session.rank}", "a", encoding="utf-8") if cfg.log_file else contextlib.nullcontext()) as log:
        for batch in session.batches(max_steps=cfg.steps):
            tokens = batch["tokens"].to(session.device)
            logits = trained(tokens[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            finish_step(cfg, session, log, loss, batch, tokens)
        code = session.finish()
        if log is not None:
            log.write(json.dumps({"final": weights_digest(model), "step": session.step}) + "\n")
            log.flush()
        return code


def main(argv: list[str] | None = None) -> int:
    cfg = parse_config(sys.argv[1:] if argv is None else argv, dict(os.environ))
    from llmops_runtime.engines import deepspeed as ds  # torch only; deepspeed itself loads lazily

    stage = ds.zero_stage_from_env()
    session = Session.from_env()
    if stage is not None:  # launcher: deepspeed
        from llmops_runtime.engines import deepspeed_train

        return deepspeed_train.train(cfg, session, stage)
    return train(cfg, session)


if __name__ == "__main__":
    sys.exit(main())
