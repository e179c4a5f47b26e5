"""A LoRA finetune run end to end through the real launcher (issue 6 acceptance, CPU).

A tiny random-init Llama and a WordLevel tokenizer are built here, a jsonl dataset written,
and ``python -m llmops_runtime.launch -m llmops_runtime.finetune`` run three times: an
uninterrupted reference, and a run SIGKILLed mid-run (whole process group, like a lost
node) then resumed by the next attempt. Checks: per-step losses (hex floats) and the
published adapter bytes are bitwise identical to the reference; validation loss falls below
the base model's; the adapter loads back onto the base model and reproduces the recorded
validation loss; the sha256 manifest verifies and the model card names the inputs. The same
kill/resume check runs with 2 ranks (gloo, DDP); a variant without the RNG state in the
checkpoint must diverge (the check can fail). Also: merged output, and S3 in and out.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from finetune_fixtures import base_env, build_model, corpus, kill, losses, make_spec, start, wait_step, write_jsonl
from llmops_runtime.serve import manifest as M

pytestmark = pytest.mark.timeout(300)

STEPS, EVERY = 12, 4
SPEC = make_spec(hyperparameters={"maxSteps": STEPS, "learningRate": 0.05, "batchSize": 4, "maxSeqLength": 32, "seed": 3})


def _world(root: Path) -> Path:
    build_model(root / "models" / "tiny")
    write_jsonl(root / "data" / "train.jsonl", [{"text": t} for t in corpus(80, 1)])
    return root


def _env(root: Path, run: str, **extra: str) -> dict[str, str]:
    spec = {**SPEC, "output": {"uri": f"pvc://out/{run}"}}
    return base_env(root, spec, FINETUNE_LOG_FILE=str(root / f"{run}.log"), LLMOPS_RUN_ID=run,
                    LLMOPS_CHECKPOINT_URI=str(root / "ckpt" / run), LLMOPS_CHECKPOINT_EVERY_STEPS=str(EVERY),
                    LLMOPS_PROGRESS_FILE=str(root / f"{run}.progress.jsonl"), **extra)


def _published(root: Path, run: str, attempt: int) -> dict:
    text = (root / f"{run}.a{attempt}.out").read_text()
    found = re.findall(r"llmops finetune: published (\{.*\})", text)
    assert found, text[-3000:]
    return json.loads(found[-1])


class Runs:
    def __init__(self, root: Path, nproc: int) -> None:
        self.root, self.nproc = root, nproc
        ref = start(root, _env(root, "ref"), nproc=nproc, name="ref")
        assert ref.wait(180) == 0, (root / "ref.a0.out").read_text()[-3000:]
        self.killed_at = self.kill_and_resume("kill")

    def kill_and_resume(self, run: str, **extra: str) -> int:
        """SIGKILL the whole gang a few steps after the first checkpoint, resume as attempt 1."""
        env = _env(self.root, run, FINETUNE_STEP_DELAY="0.25", **extra)
        first = start(self.root, env, nproc=self.nproc, name=run)
        wait_step(first, self.root / f"{run}.log", EVERY + 3)
        kill(first)
        killed_at = max(losses(self.root / f"{run}.log"))
        second = start(self.root, env, nproc=self.nproc, attempt=1, name=run)
        assert second.wait(180) == 0, (self.root / f"{run}.a1.out").read_text()[-3000:]
        return killed_at

    def out(self, run: str) -> Path:
        return self.root / "out" / run

    def results(self, run: str) -> dict:
        return json.loads((self.out(run) / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    return Runs(_world(tmp_path_factory.mktemp("ft1")), 1)


def _check_exact(r: Runs) -> None:
    for rank in range(r.nproc):
        ref, resumed = losses(r.root / "ref.log", rank), losses(r.root / "kill.log", rank)
        assert sorted(ref) == list(range(1, STEPS + 1))
        assert resumed == ref, f"rank {rank}: killed after step {r.killed_at}"
    attempts = [json.loads(line) for line in (r.root / "kill.log.rank0").read_text().splitlines() if line.startswith("{")]
    first_resumed = min(e["step"] for e in attempts if e["attempt"] == 1)
    assert 1 < first_resumed <= r.killed_at + 1, "the resumed attempt must start from a committed checkpoint"
    ref_bytes = (r.out("ref") / "adapter_model.safetensors").read_bytes()
    assert (r.out("kill") / "adapter_model.safetensors").read_bytes() == ref_bytes
    assert r.results("kill")["evaluation"] == r.results("ref")["evaluation"]


def test_killed_and_resumed_run_is_bitwise_identical(runs):
    _check_exact(runs)


def test_the_exactness_check_can_fail(runs):
    """Without the RNG state in the checkpoint, LoRA dropout diverges after the resume."""
    runs.kill_and_resume("norng", LLMOPS_TEST_OMIT_STATE="rng")
    ref, resumed = losses(runs.root / "ref.log"), losses(runs.root / "norng.log")
    assert sorted(resumed) == sorted(ref) and resumed != ref


def test_validation_loss_falls_below_the_base_model(runs):
    ev = runs.results("ref")["evaluation"]
    assert ev["baseValidationLoss"] is not None and ev["bestValidationLoss"] < ev["baseValidationLoss"] - 0.05
    assert math.isclose(ev["perplexity"], math.exp(ev["validationLoss"]))
    assert [h["step"] for h in ev["history"]] == [4, 8, 12]  # every checkpoint interval, and the end


def test_adapter_reloads_onto_the_base_and_reproduces_the_validation_loss(runs, monkeypatch):
    from llmops_runtime.finetune import load_spec
    from llmops_runtime.finetune.run import prepare, validation_loss
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("LLMOPS_PVC_ROOT", str(runs.root))
    monkeypatch.setenv("LLMOPS_FINETUNE_MODEL_CACHE", str(runs.root / "cache-check"))
    spec = load_spec(json.dumps({**SPEC, "output": {"uri": "pvc://out/ref"}}))
    prepared = prepare(spec, 1)
    results = runs.results("ref")
    base = AutoModelForCausalLM.from_pretrained(runs.root / "models" / "tiny", use_safetensors=True)
    import torch

    pad = int(prepared.tokenizer.pad_token_id)
    base_loss = validation_loss(base, prepared.val_seqs, pad, 4, torch.device("cpu"))
    assert math.isclose(base_loss, results["evaluation"]["baseValidationLoss"], rel_tol=1e-6)
    tuned = PeftModel.from_pretrained(base, runs.out("ref"))
    loss = validation_loss(tuned, prepared.val_seqs, pad, 4, torch.device("cpu"))
    assert results["published"] == "best"
    assert math.isclose(loss, results["evaluation"]["bestValidationLoss"], rel_tol=1e-6)


def test_manifest_verifies_and_the_card_names_the_inputs(runs):
    out = runs.out("ref")
    raw = (out / M.DEFAULT_NAME).read_bytes()
    listed = M.parse(raw)
    assert listed == M.build(out, exclude=frozenset({M.DEFAULT_NAME}))
    assert {"adapter_model.safetensors", "adapter_config.json", "README.md", "results.json"} <= set(listed)
    assert not any(p.suffix in {".bin", ".pt", ".pth"} for p in out.rglob("*"))
    published = _published(runs.root, "ref", 0)
    assert published["manifestSha256"] == M.digest(raw)
    assert published["sizeBytes"] == sum(e.size for e in listed.values())
    card = (out / "README.md").read_text()
    results = runs.results("ref")
    for needle in ("pvc://models/tiny", results["baseModel"]["revision"], "pvc://data/train.jsonl", results["dataset"]["sha256"],
                   '"learningRate": 0.05'):
        assert needle in card
    assert not list((runs.root / "out").glob(".ref.tmp-*")), "temp dir left behind"


def test_progress_reports_carry_the_finetune_section(runs):
    """Rank 0 reports dataset and evaluation while training and the output last: what the
    FinetuneJob status is built from (llmops.api.progress.FinetuneReport)."""
    reports = [json.loads(line) for line in (runs.root / "ref.progress.jsonl").read_text().splitlines()]
    sections = [r["finetune"] for r in reports if "finetune" in r]
    results = runs.results("ref")
    assert sections[0]["dataset"] == {k: results["dataset"][k] for k in ("examples", "validationExamples", "tokens", "sha256")}
    assert sections[0]["evaluation"]["baseValidationLoss"] == results["evaluation"]["baseValidationLoss"]
    assert "output" not in sections[0]
    last = sections[-1]
    assert last["output"] == _published(runs.root, "ref", 0)  # uri, manifestSha256, sizeBytes, baseModelRevision
    ev = results["evaluation"]
    assert last["evaluation"] == {"baseValidationLoss": ev["baseValidationLoss"], "validationLoss": ev["validationLoss"],
                                  "perplexity": ev["perplexity"], "bestStep": ev["bestStep"],
                                  "bestValidationLoss": ev["bestValidationLoss"]}
    assert reports[-1]["step"] == STEPS and [("output" in s) for s in sections].index(True) == len(sections) - 1


def test_two_ranks_gloo_killed_and_resumed_is_bitwise_identical(tmp_path):
    _check_exact(Runs(_world(tmp_path), 2))


def test_merged_output_loads_as_a_plain_model(tmp_path, monkeypatch):
    """output.mode merged: base + adapter folded into one safetensors model (no checkpoints configured)."""
    import torch
    from llmops_runtime.finetune import load_spec
    from llmops_runtime.finetune.run import prepare, validation_loss
    from transformers import AutoModelForCausalLM

    root = _world(tmp_path)
    spec = make_spec(hyperparameters={"maxSteps": 4, "learningRate": 0.05, "batchSize": 4, "maxSeqLength": 32, "seed": 3},
                     output={"uri": "pvc://out/merged", "mode": "merged"}, evaluation={"everySteps": 2})
    proc = start(root, base_env(root, spec), name="merged")
    assert proc.wait(180) == 0, (root / "merged.a0.out").read_text()[-3000:]
    out = root / "out" / "merged"
    assert (out / "model.safetensors").exists() and not (out / "adapter_config.json").exists()
    results = json.loads((out / "results.json").read_text())
    assert [h["step"] for h in results["evaluation"]["history"]] == [2, 4]
    monkeypatch.setenv("LLMOPS_PVC_ROOT", str(root))
    monkeypatch.setenv("LLMOPS_FINETUNE_MODEL_CACHE", str(root / "cache-check"))
    prepared = prepare(load_spec(json.dumps(spec)), 1)
    merged = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    loss = validation_loss(merged, prepared.val_seqs, int(prepared.tokenizer.pad_token_id), 4, torch.device("cpu"))
    assert math.isclose(loss, results["evaluation"]["bestValidationLoss"], rel_tol=1e-4)


def test_s3_dataset_and_s3_output_fetch_back_verified(tmp_path, s3_endpoint, monkeypatch):
    """Dataset read from S3, adapter published to S3 manifest-last; the serving fetcher then
    downloads and verifies it against the pinned manifest digest (moto on 127.0.0.1)."""
    import hashlib

    import boto3
    from llmops_runtime.serve import fetch as F

    aws = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": s3_endpoint}
    for key, value in aws.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket="ftdata")
    root = _world(tmp_path)
    client.upload_file(str(root / "data" / "train.jsonl"), "ftdata", "sets/train.jsonl")
    client.put_object(Bucket="ftdata", Key="adapters/a1/stale.txt", Body=b"from an older publish")
    spec = make_spec(data_uri="s3://ftdata/sets/train.jsonl", out_uri="s3://ftdata/adapters/a1",
                     hyperparameters={"maxSteps": 2, "learningRate": 0.05, "batchSize": 4, "maxSeqLength": 32, "seed": 3})
    proc = start(root, base_env(root, spec, **aws), name="s3")
    assert proc.wait(180) == 0, (root / "s3.a0.out").read_text()[-3000:]
    published = _published(root, "s3", 0)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="ftdata", Prefix="adapters/a1/")["Contents"]}
    assert "adapters/a1/adapter_model.safetensors" in keys and "adapters/a1/stale.txt" not in keys
    got = F.fetch(F.FetchRequest(uri="s3://ftdata/adapters/a1", dest=tmp_path / "serve-cache",
                                 manifest_sha256=published["manifestSha256"]))
    assert got.digest == published["manifestSha256"] and (got.path / "adapter_config.json").exists()
    results = json.loads((got.path / "results.json").read_text())
    assert results["dataset"]["sha256"] == hashlib.sha256((root / "data" / "train.jsonl").read_bytes()).hexdigest()
