"""Inputs of a finetune run: the spec, the base model (staged and verified), the dataset.

Everything here runs before the first optimizer step and raises :class:`FinetuneError`
with a reason on bad input; nothing here writes to the output location.

*Base model.* Whatever the URI (``pvc://``, an ``hf://`` snapshot staged under
``$LLMOPS_HF_SNAPSHOT_ROOT``, ``s3://``), the model goes through the serving fetcher
(:func:`llmops_runtime.serve.fetch.fetch`) into a local cache: one code path enforces
"safetensors only unless allowPickle", checks every file against the manifest and the
manifest against ``manifestSha256``. Local sources are hard-linked, so this costs no copy
on the same filesystem. transformers then loads with ``use_safetensors`` unless pickle is
allowed, and never runs shipped code unless ``trustRemoteCode``.

*Dataset.* One file (or every file of the format under a directory, in name order); its
sha256 is of the bytes read (for a directory: of the sorted ``name sha256`` lines). The
validation split is a seeded permutation of example indices, so it is the same in every
run and on every rank. Examples are tokenized once; with packing the training tokens are
concatenated (EOS between examples) and cut into ``maxSeqLength`` windows, otherwise each
example is truncated to ``maxSeqLength`` and batches are right-padded (padding does not
count in the loss).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from llmops.api import runtime_env as E
from llmops.api.finetune import DatasetFormat, FinetuneJobSpec, MethodType, Quantization
from pydantic import ValidationError
from torch.utils.data import Dataset

from llmops_runtime import localenv as L
from llmops_runtime.serve import fetch as F

from . import errors as X

#: The FinetuneJob spec as JSON (camelCase, as in the CR), set by the operator on the worker.
SPEC_ENV = E.FINETUNE_SPEC
#: Local directory where the base model is staged and verified (default /tmp/llmops-models).
MODEL_CACHE_ENV = L.FINETUNE_MODEL_CACHE
DEFAULT_MODEL_CACHE = "/tmp/llmops-models"


def load_spec(raw: str | None) -> FinetuneJobSpec:
    if not raw:
        raise X.FinetuneError(X.INVALID_SPEC, f"{SPEC_ENV} is not set (the FinetuneJob spec as JSON)")
    try:
        return FinetuneJobSpec.model_validate(json.loads(raw))
    except json.JSONDecodeError as error:
        raise X.FinetuneError(X.INVALID_SPEC, f"{SPEC_ENV} is not JSON: {error}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise X.FinetuneError(X.INVALID_SPEC, f"{where}: {first['msg']} ({error.error_count()} error(s))") from None


def local_path(uri: str, what: str, *, allow_s3: bool = False) -> Path | None:
    """pvc://claim/path -> $LLMOPS_PVC_ROOT/claim/path (sandbox-aware); s3:// -> None when allowed."""
    parsed = urlparse(uri)
    if parsed.scheme == "pvc":
        root = Path(os.environ.get(E.PVC_ROOT) or F.DEFAULT_PVC_ROOT)
        return F.pod_path(root / parsed.netloc / parsed.path.strip("/"))
    if parsed.scheme == "file" or (not parsed.scheme and uri.startswith("/")):
        return F.pod_path(parsed.path if parsed.scheme else uri)
    if parsed.scheme == "s3" and parsed.netloc and allow_s3:
        return None
    raise X.FinetuneError(X.UNSUPPORTED_STORAGE, f"{what} {uri}: unsupported location (pvc://, s3:// or a local path)")


def model_cache() -> Path:
    return F.pod_path(os.environ.get(MODEL_CACHE_ENV) or DEFAULT_MODEL_CACHE)


def stage_dataset(uri: str) -> Path:
    """A local path for the dataset: pvc/local as is; s3 (one object, or every object under
    a prefix) downloaded into a fresh directory of the cache."""
    path = local_path(uri, "dataset", allow_s3=True)
    if path is not None:
        return path
    name = ""
    # One directory per process: ranks on one node never race on each other's files.
    dest = model_cache() / "datasets" / f"{hashlib.sha256(uri.encode()).hexdigest()[:24]}.{os.getpid()}"
    try:
        source, rels = None, []
        if "/" in uri[len("s3://"):].strip("/"):  # maybe one object: list its parent, look for the name
            parent, name = uri.rstrip("/").rsplit("/", 1)
            try:
                candidate = F.S3Source(parent)
                if name in candidate.listing():
                    source, rels = candidate, [name]
            except F.FetchError as error:
                if error.code != E.FetchExit.MODEL_NOT_FOUND:
                    raise
        if source is None:
            source = F.S3Source(uri)
            rels = sorted(source.listing())
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for rel in rels:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read(rel))
    except F.FetchError as error:
        if error.code == E.FetchExit.MODEL_NOT_FOUND:
            raise X.FinetuneError(X.DATASET_NOT_FOUND, f"{uri}: no such object or prefix") from None
        raise X.FinetuneError(X.DATASET_FETCH_FAILED, f"{uri}: {error}", E.ExitCode.USER_ERROR) from None
    return dest / rels[0] if rels == [name] else dest


# --- base model ---------------------------------------------------------------------------------


@dataclass
class StagedModel:
    path: Path
    digest: str  # sha256 of the model manifest
    revision: str  # the pinned revision, else "sha256:<manifest digest>"


def stage_model(spec: FinetuneJobSpec) -> StagedModel:
    ref = spec.base_model
    cache = model_cache()
    request = F.FetchRequest(uri=ref.uri, dest=cache, manifest=None, manifest_sha256=ref.manifest_sha256,
                             revision=ref.revision, allow_pickle=ref.allow_pickle)
    try:
        result = F.fetch(request)
    except F.FetchError as error:
        code = E.ExitCode.USER_ERROR if error.code == E.FetchExit.FETCH_FAILED else E.ExitCode.CONFIG_ERROR
        raise X.FinetuneError(error.reason, str(error), code) from None
    return StagedModel(result.path, result.digest, ref.revision or f"sha256:{result.digest}")


def model_position_limit(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_tokenizer(path: Path, spec: FinetuneJobSpec) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=spec.base_model.trust_remote_code)
    except Exception as error:  # noqa: BLE001 - any loader failure is the model's fault here
        raise X.FinetuneError(X.MODEL_LOAD_FAILED, f"tokenizer: {type(error).__name__}: {error}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if spec.dataset.messages_field and not getattr(tokenizer, "chat_template", None):
        raise X.FinetuneError(X.CHAT_TEMPLATE_MISSING, "dataset.messagesField is set but the tokenizer has no chat template")
    return tokenizer


def check_model_config(path: Path, spec: FinetuneJobSpec) -> Any:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=spec.base_model.trust_remote_code)
    except Exception as error:  # noqa: BLE001
        raise X.FinetuneError(X.MODEL_LOAD_FAILED, f"config: {type(error).__name__}: {error}") from None
    limit = model_position_limit(config)
    want = spec.hyperparameters.max_seq_length
    if limit is not None and want > limit:
        raise X.FinetuneError(X.SEQUENCE_TOO_LONG, f"hyperparameters.maxSeqLength {want} exceeds the model's limit of {limit} positions")
    return config


def load_model(path: Path, spec: FinetuneJobSpec, dtype: torch.dtype, device: torch.device) -> Any:
    """The base model; for qlora quantized by bitsandbytes (4-bit NF4 or 8-bit) onto ``device``."""
    from transformers import AutoModelForCausalLM

    extra: dict[str, Any] = {}
    if spec.method.type == MethodType.QLORA:
        from transformers import BitsAndBytesConfig

        four = spec.method.quantization == Quantization.INT4
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=four, load_in_8bit=not four, bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        extra["device_map"] = {"": device.index or 0}
    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=not spec.base_model.allow_pickle,
            trust_remote_code=spec.base_model.trust_remote_code, **extra,
        )
    except Exception as error:  # noqa: BLE001
        raise X.FinetuneError(X.MODEL_LOAD_FAILED, f"model: {type(error).__name__}: {error}") from None


# --- dataset ------------------------------------------------------------------------------------

_SUFFIXES = {DatasetFormat.JSONL: (".jsonl",), DatasetFormat.JSON: (".json",), DatasetFormat.PARQUET: (".parquet",)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


def _read_records(path: Path, fmt: DatasetFormat) -> list[Any]:
    if fmt == DatasetFormat.PARQUET:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise X.FinetuneError(X.PARQUET_UNAVAILABLE,
                                  "format parquet needs pyarrow, which this image lacks; use jsonl or json") from None
        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        if fmt == DatasetFormat.JSONL:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        doc = json.loads(text) if text.strip() else []
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise X.FinetuneError(X.DATASET_INVALID, f"{path.name}: not {fmt.value}: {error}") from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise X.FinetuneError(X.DATASET_INVALID, f"{path.name}: a json dataset is a list of objects (or {{\"data\": [...]}})")
    return doc


@dataclass
class RawDataset:
    records: list[Any]
    sha256: str
    files: list[str]


def read_dataset(spec: FinetuneJobSpec) -> RawDataset:
    ds = spec.dataset
    path = stage_dataset(ds.uri)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES[ds.format]))
        if not files:
            raise X.FinetuneError(X.DATASET_NOT_FOUND, f"{ds.uri}: no *{_SUFFIXES[ds.format][0]} files in the directory")
    elif path.is_file():
        files = [path]
    else:
        raise X.FinetuneError(X.DATASET_NOT_FOUND, f"{ds.uri}: no such file")
    hashes = [(p.relative_to(path).as_posix() if p != path else p.name, _sha256(p)) for p in files]
    digest = hashes[0][1] if files == [path] else hashlib.sha256("".join(f"{n} {h}\n" for n, h in hashes).encode()).hexdigest()
    if ds.sha256 and ds.sha256 != digest:
        raise X.FinetuneError(X.DATASET_DIGEST_MISMATCH, f"{ds.uri}: sha256 {digest} != dataset.sha256 {ds.sha256}")
    records: list[Any] = []
    for p in files:
        records.extend(_read_records(p, ds.format))
    if not records:
        raise X.FinetuneError(X.DATASET_EMPTY, f"{ds.uri}: no examples")
    field = ds.text_field or ds.messages_field
    for index, record in enumerate(records):
        if not isinstance(record, dict) or field not in record:
            keys = sorted(record)[:8] if isinstance(record, dict) else type(record).__name__
            raise X.FinetuneError(X.DATASET_FIELD_MISSING, f"example {index} has no field {field!r} (has {keys})")
    return RawDataset(records, digest, [n for n, _ in hashes])


def split_indices(n: int, share: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices: a seeded permutation, the first round(n*share) held out."""
    n_val = round(n * share)
    if share > 0 and n_val == 0 and n >= 2:
        n_val = 1
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + 17)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])


def _text_of(record: dict[str, Any], spec: FinetuneJobSpec, tokenizer: Any, index: int) -> str:
    ds = spec.dataset
    if ds.text_field:
        value = record[ds.text_field]
        if not isinstance(value, str):
            raise X.FinetuneError(X.DATASET_INVALID, f"example {index}: {ds.text_field} is {type(value).__name__}, not text")
        return value
    messages = record[ds.messages_field]
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise X.FinetuneError(X.DATASET_INVALID, f"example {index}: {ds.messages_field} must be a list of {{role, content}}")
    return tokenizer.apply_chat_template(messages, tokenize=False)


def tokenize(records: list[Any], indices: list[int], spec: FinetuneJobSpec, tokenizer: Any) -> list[list[int]]:
    out = []
    eos = tokenizer.eos_token_id
    for index in indices:
        text = _text_of(records[index], spec, tokenizer, index)
        ids = list(tokenizer(text, add_special_tokens=not spec.dataset.messages_field)["input_ids"])
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(ids)
    return out


def to_sequences(examples: list[list[int]], max_len: int, packing: bool) -> list[list[int]]:
    """Packing: concatenated and cut into max_len windows; else each truncated to max_len."""
    if not packing:
        return [ids[:max_len] for ids in examples if ids]
    flat = [t for ids in examples for t in ids]
    return [flat[i : i + max_len] for i in range(0, len(flat), max_len) if len(flat[i : i + max_len]) >= 2]


class SequenceDataset(Dataset):
    """Token sequences with their index (the id the exactness logs record)."""

    def __init__(self, sequences: list[list[int]]) -> None:
        self.sequences = sequences

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"id": index, "input_ids": self.sequences[index]}


def collate(pad_id: int):
    """Right-pad to the longest sequence; padding is masked out of attention and loss."""

    def fn(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(item["input_ids"]) for item in items)
        ids = torch.full((len(items), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            seq = torch.tensor(item["input_ids"], dtype=torch.long)
            ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        return {"id": torch.tensor([item["id"] for item in items]), "input_ids": ids, "attention_mask": mask, "labels": labels}

    return fn
