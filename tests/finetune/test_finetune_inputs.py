"""Bad finetune inputs each end with exit 78, a one-line termination message naming the
reason, and nothing at the output URI (issue 6 acceptance). Runs the real entry in-process
(every rejection happens before a process group or Session exists) against a tiny model
and dataset built here. Also covers the pure helpers: deterministic split, packing, collate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from finetune_fixtures import build_model, corpus, make_spec, write_jsonl
from llmops.api.runtime_env import ExitCode, parse_termination_message
from llmops_runtime import finetune
from llmops_runtime.finetune import inputs as I


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftin")
    build_model(root / "models" / "tiny")
    build_model(root / "models" / "pickled", pickle_only=True)
    _manifest_digest(build_model(root / "models" / "signed"))
    tampered = build_model(root / "models" / "tampered")
    _manifest_digest(tampered)
    weights = tampered / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    weights.write_bytes(bytes(data))
    write_jsonl(root / "data" / "train.jsonl", [{"text": t} for t in corpus(40, 2)])
    (root / "data" / "empty.jsonl").write_text("")
    return root


def _run(world: Path, monkeypatch, spec: dict) -> tuple[int, str, str]:
    out = world / "out"
    shutil.rmtree(out, ignore_errors=True)
    log = world / "termination-log"
    log.unlink(missing_ok=True)
    monkeypatch.setenv("LLMOPS_PVC_ROOT", str(world))
    monkeypatch.setenv("LLMOPS_FINETUNE_MODEL_CACHE", str(world / "cache"))
    monkeypatch.setenv("LLMOPS_TERMINATION_LOG", str(log))
    monkeypatch.setenv(finetune.SPEC_ENV, json.dumps(spec))
    code = finetune.main([])
    reason, detail, _ = parse_termination_message(log.read_text() if log.exists() else "")
    leftovers = sorted(p.name for p in out.rglob("*")) if out.exists() else []
    assert leftovers == [], f"output written on a rejected run: {leftovers}"
    return code, reason, detail


def _manifest_digest(model_dir: Path) -> str:
    from llmops_runtime.serve import manifest as M

    raw = M.render(M.build(model_dir, exclude=frozenset({M.DEFAULT_NAME})))
    (model_dir / M.DEFAULT_NAME).write_bytes(raw)
    return M.digest(raw)


CASES = [
    ("missing dataset", dict(data_uri="pvc://data/nope.jsonl"), "DatasetNotFound", "nope.jsonl"),
    ("empty dataset", dict(data_uri="pvc://data/empty.jsonl"), "DatasetEmpty", "no examples"),
    ("field not in data", dict(dataset={"textField": "body"}), "DatasetFieldMissing", "'body'"),
    ("pickle-only model", dict(model_uri="pvc://models/pickled"), "PickleNotAllowed", "pytorch_model.bin"),
    ("model file sha256 mismatch", dict(model_uri="pvc://models/tampered"), "ModelDigestMismatch", "model.safetensors"),
    ("pinned manifest mismatch", dict(baseModel={"uri": "pvc://models/signed", "manifestSha256": "0" * 64}),
     "ModelDigestMismatch", "pinned"),
    ("dataset sha256 mismatch", dict(dataset={"sha256": "f" * 64}), "DatasetDigestMismatch", "sha256"),
    ("sequence too long", dict(hyperparameters={"maxSteps": 2, "batchSize": 2, "maxSeqLength": 128}), "SequenceTooLong", "64"),
    ("qlora without gpu", dict(method={"type": "qlora", "quantization": "4bit"}), "QLoRARequiresGPU", "qlora"),
    ("parquet without pyarrow", dict(dataset={"format": "parquet", "uri": "pvc://data/train.jsonl"}), "ParquetUnavailable", "pyarrow"),
    ("dataset too small", dict(hyperparameters={"maxSteps": 2, "batchSize": 64, "maxSeqLength": 32}), "DatasetTooSmall", "64"),
]


@pytest.mark.parametrize("name,over,reason,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_its_reason(world, monkeypatch, name, over, reason, needle):
    if reason == "ParquetUnavailable":
        try:
            import pyarrow  # noqa: F401
            pytest.skip("pyarrow is installed here")
        except ImportError:
            pass
    code, got, detail = _run(world, monkeypatch, make_spec(**over))
    assert (code, got) == (int(ExitCode.CONFIG_ERROR), reason), detail
    assert needle in detail


def test_invalid_spec_is_rejected(world, monkeypatch):
    spec = make_spec()
    spec["hyperparameters"]["epochs"] = 1  # both maxSteps and epochs
    code, reason, detail = _run(world, monkeypatch, spec)
    assert (code, reason) == (int(ExitCode.CONFIG_ERROR), "InvalidFinetuneSpec")
    assert "maxSteps" in detail


def test_model_manifest_pin_accepts_the_right_digest(world, monkeypatch, tmp_path):
    """The same pin machinery that rejects a wrong digest accepts the right one (the check can pass)."""
    digest = _manifest_digest(world / "models" / "signed")
    monkeypatch.setenv("LLMOPS_PVC_ROOT", str(world))
    monkeypatch.setenv("LLMOPS_FINETUNE_MODEL_CACHE", str(tmp_path / "cache"))
    spec = I.load_spec(json.dumps(make_spec(baseModel={"uri": "pvc://models/signed", "manifestSha256": digest})))
    staged = I.stage_model(spec)
    assert staged.digest == digest and (staged.path / "model.safetensors").exists()


def test_split_is_deterministic_and_disjoint():
    a = I.split_indices(100, 0.1, seed=5)
    assert a == I.split_indices(100, 0.1, seed=5)
    assert a != I.split_indices(100, 0.1, seed=6)
    train, val = a
    assert len(val) == 10 and not set(train) & set(val) and sorted(train + val) == list(range(100))
    assert I.split_indices(3, 0.05, seed=0)[1] != []  # a requested split never rounds to nothing


def test_packing_and_truncation():
    examples = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert I.to_sequences(examples, 4, packing=True) == [[1, 2, 3, 4], [5, 6, 7, 8]]  # a 1-token tail cannot train
    assert I.to_sequences(examples, 2, packing=False) == [[1, 2], [4, 5], [6, 7]]


def test_collate_masks_padding_out_of_the_loss():
    batch = I.collate(0)([{"id": 0, "input_ids": [5, 6, 7]}, {"id": 1, "input_ids": [8]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[5, 6, 7], [8, -100, -100]]


def test_eval_tracker_keeps_best_and_stops_after_patience():
    import torch
    from llmops_runtime.finetune.run import EvalTracker, TrainableState

    model = torch.nn.Linear(2, 1)
    tracker = EvalTracker(TrainableState(model), patience=2, keep_best=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    tracker.record(10, 2.0)
    with torch.no_grad():
        model.weight.fill_(5.0)
    tracker.record(20, 2.5)
    assert (tracker.best_step, tracker.bad, tracker.stopped) == (10, 1, False)
    state = tracker.state_dict()
    again = EvalTracker(TrainableState(torch.nn.Linear(2, 1)), patience=2, keep_best=True)
    again.load_state_dict(state)
    again.record(30, 2.1)
    assert again.stopped and again.best_step == 10
    assert torch.equal(again.best["weight"], torch.ones(1, 2))
    assert again.summary()["history"][-1] == {"step": 30, "validationLoss": 2.1, "perplexity": pytest.approx(8.166, rel=1e-3)}


def test_chat_examples_render_through_the_chat_template(world):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(world / "models" / "tiny")
    spec = I.load_spec(json.dumps(make_spec(dataset={"textField": None, "messagesField": "messages"})))
    records = [{"messages": [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on the mat"}]}]
    (ids,) = I.tokenize(records, [0], spec, tokenizer)
    assert tokenizer.decode(ids) == "<user> the cat <assistant> sat on the mat </s>"
    with pytest.raises(finetune.FinetuneError) as bad:
        I.tokenize([{"messages": "hello"}], [0], spec, tokenizer)
    assert bad.value.reason == "DatasetInvalid"
