"""The finetune loop: Session bookkeeping around a transformers model, evaluation, publish.

Order of one optimizer step (one loader batch = ``batchSize x gradientAccumulationSteps``
examples, split into micro-batches; DDP syncs gradients on the last one only):

1. forward/backward of each micro-batch, loss scaled by 1/accumulation; optimizer and
   scheduler step;
2. evaluation when due (every ``evaluation.everySteps``, default every checkpoint interval;
   always at the end) -- *before* ``step_done``, so the checkpoint that ``step_done`` may take
   at this step already holds the evaluation's result, the best weights and the early-stop
   counter, and a resume never re-evaluates or forgets a step;
3. ``Session.step_done`` (agreement collective, checkpoint, progress, SIGTERM).

Checkpoint content: the trainable parameters only (the LoRA adapter; every parameter for
``full``), AdamW, the LR schedule, the loader position, every RNG, and the evaluation
tracker (base loss, history, best loss/step, best weights on rank 0, patience counter,
stopped flag). The frozen base is re-read from the verified model files, which is why
resume is exact with an adapter-sized checkpoint.

Evaluation results go to ``results.json`` in the published artifact and, while running,
to ``$LLMOPS_FINETUNE_RESULTS_FILE`` when set (rank 0 rewrites it atomically after every
evaluation). Rank 0 also puts the dataset statistics, the evaluation summary and, once
published, the output (uri, manifest digest, size, base revision) into the ``finetune``
section of its progress report (``llmops.api.progress.FinetuneReport``): that is how the
FinetuneJob's status learns them. The report with the output is delivered (retried for up to
``REPORT_TIMEOUT_SECONDS``) before rank 0 exits 0; if it cannot be, rank 0 exits
``USER_ERROR`` so the operator restarts the gang, which resumes from the final checkpoint
with zero steps left and publishes and reports again.

Publishing (rank 0, after ``Session.finish``): the best weights (the last ones when no
evaluation ran) are saved with ``save_pretrained(safe_serialization=True)`` (adapter, or
merged into the base for ``output.mode: merged``) plus tokenizer, ``results.json``, a model
card ``README.md`` and ``llmops-manifest.json`` (the serving manifest format) into a temp
directory beside the output, fsynced, then renamed onto the output path. A run killed while
publishing leaves only a ``.tmp-`` sibling; the rerun resumes from the final checkpoint
(zero steps left) and publishes again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from llmops.api import runtime_env as E
from llmops.api.finetune import (
    DatasetStats,
    EvaluationStatus,
    FinetuneJobSpec,
    Lora,
    MethodType,
    OutputMode,
    OutputStatus,
    Precision,
)
from llmops.api.progress import FinetuneReport

from llmops_runtime import data as rdata
from llmops_runtime import ddp as rddp
from llmops_runtime import localenv as L
from llmops_runtime.rng import seed_all
from llmops_runtime.serve import manifest as M
from llmops_runtime.session import Session

from . import errors as X
from . import inputs as I

RESULTS_FILE_ENV = L.FINETUNE_RESULTS_FILE
RESULTS_NAME = "results.json"
CARD_NAME = "README.md"
REPORT_TIMEOUT_SECONDS = 60.0  # how long rank 0 retries delivering the output report before failing the attempt


class TrainableState:
    """state_dict of the parameters that train (the adapter for LoRA): what a checkpoint holds."""

    def __init__(self, model: nn.Module) -> None:
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.params.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.params) - set(state)
        if missing:
            raise KeyError(f"checkpoint lacks {len(missing)} trainable tensors, e.g. {sorted(missing)[0]}")
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(torch.as_tensor(state[name]))


class EvalTracker:
    """Evaluation history, best loss/weights and early stop; checkpointed with the run."""

    def __init__(self, weights: TrainableState, patience: int | None, keep_best: bool) -> None:
        self.weights, self.patience, self.keep_best = weights, patience, keep_best
        self.base_loss: float | None = None
        self.history: list[dict[str, Any]] = []
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.bad = 0
        self.stopped = False
        self.best: dict[str, torch.Tensor] | None = None

    def record(self, step: int, loss: float) -> None:
        self.history.append({"step": step, "validationLoss": loss, "perplexity": perplexity(loss)})
        if self.best_loss is None or loss < self.best_loss:
            self.best_loss, self.best_step, self.bad = loss, step, 0
            if self.keep_best:
                self.best = {k: v.detach().clone() for k, v in self.weights.state_dict().items()}
        else:
            self.bad += 1
            if self.patience is not None and self.bad >= self.patience:
                self.stopped = True

    def state_dict(self) -> dict[str, Any]:
        return {"base_loss": self.base_loss, "history": [dict(h) for h in self.history], "best_loss": self.best_loss,
                "best_step": self.best_step, "bad": self.bad, "stopped": self.stopped, "best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_loss, self.best_loss, self.best_step = state["base_loss"], state["best_loss"], state["best_step"]
        self.history = [dict(h) for h in state["history"]]
        self.bad, self.stopped = int(state["bad"]), bool(state["stopped"])
        best = state.get("best")
        self.best = None if best is None else {k: torch.as_tensor(v).clone() for k, v in best.items()}

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        return {
            "baseValidationLoss": self.base_loss,
            "basePerplexity": perplexity(self.base_loss),
            "validationLoss": last and last["validationLoss"],
            "perplexity": last and last["perplexity"],
            "bestStep": self.best_step,
            "bestValidationLoss": self.best_loss,
            "earlyStopped": self.stopped,
            "history": self.history,
        }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def finetune_report(stats: dict[str, Any], tracker: EvalTracker, output: dict[str, Any] | None = None) -> FinetuneReport:
    """The ``finetune`` section of the progress report (pure): what the FinetuneJob status shows."""
    ev = tracker.summary()
    evaluation = None
    if ev["baseValidationLoss"] is not None or tracker.history:
        evaluation = EvaluationStatus(
            base_validation_loss=_finite(ev["baseValidationLoss"]), validation_loss=_finite(ev["validationLoss"]),
            perplexity=_finite(ev["perplexity"]), best_step=ev["bestStep"], best_validation_loss=_finite(ev["bestValidationLoss"]),
        )
    return FinetuneReport(
        dataset=DatasetStats(examples=stats["examples"], validation_examples=stats["validationExamples"],
                             tokens=stats["tokens"], sha256=stats["sha256"]),
        evaluation=evaluation,
        output=OutputStatus.model_validate(output) if output else None,
    )


def perplexity(loss: float | None) -> float | None:
    if loss is None:
        return None
    return math.exp(loss) if loss < 700 else float("inf")


@torch.no_grad()
def validation_loss(model: nn.Module, sequences: list[list[int]], pad_id: int, batch_size: int, device: torch.device,
                    rank: int = 0, world_size: int = 1) -> float | None:
    """Mean next-token loss over all non-padding target tokens of ``sequences`` (all ranks).

    Each rank takes every world_size-th sequence; the sums are all-reduced in float64.
    """
    was_training = model.training
    model.eval()
    mine = sequences[rank::world_size]
    fn = I.collate(pad_id)
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    for start in range(0, len(mine), batch_size):
        batch = fn([{"id": i, "input_ids": s} for i, s in enumerate(mine[start : start + batch_size])])
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)).logits
        labels = batch["labels"][:, 1:].to(device)
        loss = nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="sum")
        totals[0] += loss.double()
        totals[1] += (labels != -100).sum()
    if world_size > 1 and dist.is_initialized():
        dist.all_reduce(totals)
    if was_training:
        model.train()
    return float(totals[0] / totals[1]) if totals[1] > 0 else None


def _lr_factor(warmup: int, total: int):
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _dtype(spec: FinetuneJobSpec, device: torch.device) -> tuple[torch.dtype, torch.dtype | None]:
    """(weights dtype, autocast dtype). Mixed precision on CUDA only; CPU runs fp32."""
    p = spec.hyperparameters.precision
    if device.type != "cuda" or p == Precision.FP32:
        return torch.float32, None
    if p == Precision.FP16:
        return torch.float32, torch.float16
    if p == Precision.BF16 or torch.cuda.is_bf16_supported():
        return torch.float32, torch.bfloat16
    return torch.float32, None


def check_method(spec: FinetuneJobSpec) -> None:
    if spec.method.type != MethodType.QLORA:
        return
    if not torch.cuda.is_available():
        raise X.FinetuneError(X.QLORA_REQUIRES_GPU, "method qlora needs a CUDA GPU and none is visible; use lora or request GPUs")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise X.FinetuneError(X.QLORA_REQUIRES_GPU, "method qlora needs bitsandbytes, which this image lacks") from None


def apply_method(model: nn.Module, spec: FinetuneJobSpec) -> nn.Module:
    if spec.method.type == MethodType.FULL:
        return model
    from peft import LoraConfig, get_peft_model

    if spec.method.type == MethodType.QLORA:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    lora = spec.method.lora or Lora()
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules) or None, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        raise X.FinetuneError(X.INVALID_SPEC, f"method.lora: {error}") from None


def _write_atomic_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _model_card(spec: FinetuneJobSpec, staged: I.StagedModel, results: dict[str, Any]) -> str:
    hp = spec.hyperparameters.model_dump(mode="json", by_alias=True, exclude_none=True)
    method = spec.method.model_dump(mode="json", by_alias=True, exclude_none=True)
    ev = results["evaluation"]
    lines = [
        f"# Finetuned {spec.base_model.uri}",
        "",
        f"- Base model: `{spec.base_model.uri}` revision `{staged.revision}` (manifest sha256 `{staged.digest}`)",
        f"- Data: `{spec.dataset.uri}` sha256 `{results['dataset']['sha256']}` ({results['dataset']['examples']} training / "
        f"{results['dataset']['validationExamples']} validation examples, {results['dataset']['tokens']} training tokens)",
        f"- Method: `{json.dumps(method, sort_keys=True)}`; output mode `{spec.output.mode.value}`",
        f"- Hyperparameters: `{json.dumps(hp, sort_keys=True)}`",
        f"- Steps: {results['steps']}; published weights: step {results['publishedStep']} ({results['published']})",
        f"- Validation loss: base {ev['baseValidationLoss']}, best {ev['bestValidationLoss']} at step {ev['bestStep']}, "
        f"last {ev['validationLoss']} (perplexity {ev['perplexity']})",
        "",
        f"Every file is listed with its sha256 in `{M.DEFAULT_NAME}`; `{RESULTS_NAME}` has the full evaluation history.",
        "",
    ]
    return "\n".join(lines)


def upload_s3(local: Path, uri: str, files: dict[str, M.Entry]) -> None:
    """Upload an artifact under an s3 prefix: files first, the manifest last (the commit
    point: readers go by the manifest), then delete objects of an older publish it no
    longer lists."""
    from llmops_runtime.serve.fetch import S3Source

    dest = S3Source(uri)
    for rel in sorted(files):
        dest.client.upload_file(str(local / rel), dest.bucket, dest.prefix + rel)
    dest.client.upload_file(str(local / M.DEFAULT_NAME), dest.bucket, dest.prefix + M.DEFAULT_NAME)
    keep = {dest.prefix + rel for rel in files} | {dest.prefix + M.DEFAULT_NAME}
    for page in dest.client.get_paginator("list_objects_v2").paginate(Bucket=dest.bucket, Prefix=dest.prefix):
        for obj in page.get("Contents", []):
            if obj["Key"] not in keep:
                dest.client.delete_object(Bucket=dest.bucket, Key=obj["Key"])


def publish(model: nn.Module, tokenizer: Any, spec: FinetuneJobSpec, staged: I.StagedModel, results: dict[str, Any],
            out: Path | None) -> dict[str, Any]:
    """Write the artifact into a temp sibling of ``out`` and rename it into place (or, for
    s3:// outputs, into a local temp dir that is then uploaded manifest-last)."""
    s3 = out is None
    if out is None:
        out = I.model_cache() / "publish" / f"artifact-{os.getpid()}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir()
    try:
        target = model
        if spec.output.mode == OutputMode.MERGED and hasattr(model, "merge_and_unload"):
            target = model.merge_and_unload()
        target.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / RESULTS_NAME).write_text(json.dumps(results, indent=1, sort_keys=True))
        (tmp / CARD_NAME).write_text(_model_card(spec, staged, results))
        files = M.build(tmp, exclude=frozenset({M.DEFAULT_NAME}))
        raw = M.render(files)
        (tmp / M.DEFAULT_NAME).write_bytes(raw)
        _fsync_tree(tmp)
        if s3:
            upload_s3(tmp, spec.output.uri, files)
            shutil.rmtree(tmp, ignore_errors=True)
        elif out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
        if not s3:
            fd = os.open(out.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"uri": spec.output.uri, "manifestSha256": M.digest(raw), "sizeBytes": sum(e.size for e in files.values()),
            "baseModelRevision": staged.revision}


@dataclass
class Prepared:
    """Validated inputs: everything that can be rejected is checked before a process group forms."""

    out_path: Path | None  # None: s3:// output
    staged: I.StagedModel
    tokenizer: Any
    train_seqs: list[list[int]]
    val_seqs: list[list[int]]
    total_steps: int
    stats: dict[str, Any]


def prepare(spec: FinetuneJobSpec, world_size: int) -> Prepared:
    """Check every input in a fixed order; raise FinetuneError on the first bad one."""
    hp = spec.hyperparameters
    check_method(spec)
    out_path = I.local_path(spec.output.uri, "output", allow_s3=True)
    raw = I.read_dataset(spec)
    staged = I.stage_model(spec)
    I.check_model_config(staged.path, spec)
    tokenizer = I.load_tokenizer(staged.path, spec)
    train_idx, val_idx = I.split_indices(len(raw.records), spec.dataset.validation_split, hp.seed)
    if not train_idx:
        raise X.FinetuneError(X.DATASET_EMPTY, "no training examples left after the validation split")
    train_seqs = I.to_sequences(I.tokenize(raw.records, train_idx, spec, tokenizer), hp.max_seq_length, hp.packing)
    val_seqs = I.to_sequences(I.tokenize(raw.records, val_idx, spec, tokenizer), hp.max_seq_length, hp.packing)
    per_step = hp.batch_size * hp.gradient_accumulation_steps
    steps_per_epoch = (len(train_seqs) // world_size) // per_step
    if steps_per_epoch == 0:
        raise X.FinetuneError(X.DATASET_TOO_SMALL, f"{len(train_seqs)} training sequences cannot fill one step of "
                              f"{per_step} per rank x {world_size} rank(s)")
    total = hp.max_steps if hp.max_steps is not None else max(1, math.ceil(hp.epochs * steps_per_epoch))
    stats = {"examples": len(train_idx), "validationExamples": len(val_idx), "sequences": len(train_seqs),
             "tokens": sum(len(s) for s in train_seqs), "sha256": raw.sha256, "files": raw.files}
    return Prepared(out_path, staged, tokenizer, train_seqs, val_seqs, total, stats)


def run(spec: FinetuneJobSpec, prepared: Prepared, session: Session, *, log_file: str | None = None,
        step_delay: float = 0.0, threads: int = 1) -> int:
    if threads:
        torch.set_num_threads(threads)
    hp = spec.hyperparameters
    out_path, staged, tokenizer = prepared.out_path, prepared.staged, prepared.tokenizer
    train_seqs, val_seqs, total, stats = prepared.train_seqs, prepared.val_seqs, prepared.total_steps, prepared.stats
    per_step = hp.batch_size * hp.gradient_accumulation_steps
    if session.config.total_steps is None:
        session.config.total_steps = total

    weights_dtype, autocast = _dtype(spec, session.device)
    seed_all(hp.seed)  # identical base + adapter init on every rank
    model = I.load_model(staged.path, spec, weights_dtype, session.device)
    model = apply_method(model, spec)
    if spec.method.type != MethodType.QLORA:  # quantized weights are placed by device_map at load
        model = model.to(session.device)
    model.train()
    seed_all(hp.seed + 1 + session.rank)  # per-rank dropout streams
    trained = rddp.wrap(model, session)  # averaging independent of DDP's bucket rebuild (exact resume)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(hp.warmup_steps, total))
    scaler = torch.amp.GradScaler("cuda") if autocast == torch.float16 else None
    pad_id = int(tokenizer.pad_token_id)
    loader = rdata.make_loader(I.SequenceDataset(train_seqs), batch_size=per_step, rank=session.rank,
                               world_size=session.world_size, seed=hp.seed, collate_fn=I.collate(pad_id))
    state = TrainableState(model)
    tracker = EvalTracker(state, spec.evaluation.early_stop_patience, keep_best=session.rank == 0)
    session.register(model=state, optimizer=optimizer, scheduler=scheduler, dataloader=loader, scaler=scaler,
                     evaluation=tracker)
    start = session.resume()
    every = spec.evaluation.every_steps or session.config.every_steps or 0
    eval_batch = max(1, hp.batch_size)

    def evaluate(step: int) -> None:
        loss = validation_loss(model, val_seqs, pad_id, eval_batch, session.device, session.rank, session.world_size)
        if loss is not None:
            tracker.record(step, loss)
            results_file(step)
            session.report_finetune(finetune_report(stats, tracker))

    def results_file(step: int) -> None:
        path = os.environ.get(RESULTS_FILE_ENV)
        if path and session.rank == 0:
            _write_atomic_json(Path(path), {"step": step, "dataset": stats, "evaluation": tracker.summary()})

    if start == 0 and val_seqs and tracker.base_loss is None:
        tracker.base_loss = validation_loss(model, val_seqs, pad_id, eval_batch, session.device, session.rank, session.world_size)
        results_file(0)
    session.report_finetune(finetune_report(stats, tracker), urgent=True)
    with (open(f"{log_file}.rank{session.rank}", "a", encoding="utf-8") if log_file else contextlib.nullcontext()) as log:
        if not tracker.stopped:
            for batch in session.batches(max_steps=total):
                step = session.step + 1
                optimizer.zero_grad(set_to_none=True)
                micro = [{k: v[i : i + hp.batch_size] for k, v in batch.items()} for i in range(0, per_step, hp.batch_size)]
                step_loss = 0.0
                for n, mb in enumerate(micro):
                    sync = n == len(micro) - 1 or not isinstance(trained, nn.parallel.DistributedDataParallel)
                    ctx = contextlib.nullcontext() if sync else trained.no_sync()
                    amp = torch.autocast(session.device.type, dtype=autocast) if autocast else contextlib.nullcontext()
                    with ctx, amp:
                        out = trained(input_ids=mb["input_ids"].to(session.device),
                                      attention_mask=mb["attention_mask"].to(session.device),
                                      labels=mb["labels"].to(session.device))
                        loss = out.loss / len(micro)
                    (scaler.scale(loss) if scaler else loss).backward()
                    step_loss += float(loss.detach())
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                if log is not None:
                    log.write(json.dumps({"step": step, "attempt": session.config.attempt, "loss": step_loss.hex(),
                                          "ids": batch["id"].tolist()}) + "\n")
                    log.flush()
                if val_seqs and every and step % every == 0 and step < total:
                    evaluate(step)
                if val_seqs and step == total:
                    evaluate(step)
                session.step_done(torch.tensor(step_loss), tokens=int(batch["attention_mask"].sum()))
                if tracker.stopped:
                    break
                if step_delay:
                    time.sleep(step_delay)
        if val_seqs and (not tracker.history or tracker.history[-1]["step"] != session.step) and not tracker.stopped:
            evaluate(session.step)  # e.g. resumed at the end, or epochs ended early
        code = session.finish(keep_reporting=True)  # the output report comes after the final checkpoint
    if session.rank == 0:
        published_step, which = session.step, "last"
        if tracker.best is not None and tracker.best_step is not None:
            state.load_state_dict(tracker.best)
            published_step, which = tracker.best_step, "best"
        results = {"steps": session.step, "publishedStep": published_step, "published": which, "dataset": stats,
                   "evaluation": tracker.summary(), "baseModel": {"uri": spec.base_model.uri, "revision": staged.revision,
                                                                   "manifestSha256": staged.digest},
                   "hyperparameters": hp.model_dump(mode="json", by_alias=True, exclude_none=True),
                   "method": spec.method.model_dump(mode="json", by_alias=True, exclude_none=True)}
        model.eval()
        output = publish(model, tokenizer, spec, staged, results, out_path)
        results["output"] = output
        print("llmops finetune: published " + json.dumps(output, sort_keys=True), flush=True)
        path = os.environ.get(RESULTS_FILE_ENV)
        if path:
            _write_atomic_json(Path(path), results)
        session.report_finetune(finetune_report(stats, tracker, output), urgent=True)
    if not session.close_reporting(REPORT_TIMEOUT_SECONDS):
        print(f"llmops finetune: the published output could not be reported to the operator within "
              f"{REPORT_TIMEOUT_SECONDS:.0f}s; exiting {int(E.ExitCode.USER_ERROR)} so the job retries", file=sys.stderr, flush=True)
        code = int(E.ExitCode.USER_ERROR)
    if session.world_size > 1 and dist.is_initialized():
        dist.barrier()  # no rank reports success before the artifact exists
    return code
