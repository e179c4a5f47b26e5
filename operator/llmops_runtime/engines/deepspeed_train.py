"""The built-in trainer (``llmops_runtime.train``) under a DeepSpeed ZeRO engine.

``python -m llmops_runtime.train`` lands here when the TrainingJob says ``launcher: deepspeed``:
same model, data, schedule and log format as the DDP loop, but the engine owns the gradient
reduction and the (partitioned) optimizer step, and the session checkpoints the engine's
partitions (``engines.deepspeed.EngineState``). The final log line also carries a digest of
this rank's optimizer partition, so the exactness tests compare optimizer state too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json

import torch
import torch.nn.functional as F

from llmops_runtime import data as rdata
from llmops_runtime.engines import deepspeed as ds
from llmops_runtime.rng import seed_all
from llmops_runtime.session import Session
from llmops_runtime.train import TinyGPT, TokenDataset, TrainConfig, finish_step, lr_lambda


def weights_digest(engine) -> str:
    """sha256 over the whole module's weights in name order (gathers ZeRO-3 shards)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(ds.full_weights(engine).items()):
        digest.update(name.encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def train(cfg: TrainConfig, session: Session, stage: int) -> int:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    seed_all(cfg.seed)  # identical initial weights on every rank
    model = TinyGPT(cfg).to(session.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    engine = ds.initialize(model, optimizer, scheduler, stage=stage, micro_batch=cfg.batch_size)
    seed_all(cfg.seed + 1 + session.rank)  # per-rank dropout streams, after DeepSpeed's set-up
    loader = rdata.make_loader(TokenDataset(cfg, session.rank), batch_size=cfg.batch_size, rank=session.rank,
                               world_size=session.world_size, seed=cfg.seed, num_workers=cfg.num_workers)
    session.register(engine=engine, dataloader=loader)
    session.resume()
    with (open(f"{cfg.log_file}.rank{session.rank}", "a", encoding="utf-8") if cfg.log_file else contextlib.nullcontext()) as log:
        for batch in session.batches(max_steps=cfg.steps):
            tokens = batch["tokens"].to(session.device)
            logits = engine(tokens[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, cfg.vocab), tokens[:, 1:].reshape(-1))
            engine.backward(loss)
            engine.step()  # the partitioned optimizer step, then the LR scheduler
            finish_step(cfg, session, log, loss, batch, tokens)
        code = session.finish()
        weights = weights_digest(engine)  # a collective under ZeRO-3: every rank computes it
        if log is not None:
            log.write(json.dumps({"final": weights, "optimizer": ds.optimizer_digest(engine), "step": session.step}) + "\n")
            log.flush()
        return code
