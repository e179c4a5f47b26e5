"""Why a finetune run refuses to start: one reason per bad input, one line to the kubelet.

Every rejection is a :class:`FinetuneError` carrying a CamelCase reason (it becomes the
FinetuneJob's condition reason through the pod's termination message ``<Reason>: <detail>``)
and an ``ExitCode``. All of them are raised before the output location is touched, so a
rejected run leaves nothing at the output URI.
"""

from __future__ import annotations

from llmops.api.runtime_env import ExitCode

# Reasons (written by llmops_runtime.finetune into the termination message; read by the
# FinetuneJob status as the Failed condition's reason).
INVALID_SPEC = "InvalidFinetuneSpec"  # LLMOPS_FINETUNE_SPEC missing, not JSON, or not a valid spec
UNSUPPORTED_STORAGE = "UnsupportedStorage"  # a dataset/output URI scheme this runtime cannot read/write yet
DATASET_NOT_FOUND = "DatasetNotFound"  # no file at the dataset URI
DATASET_EMPTY = "DatasetEmpty"  # the dataset holds no examples (or none left after the split)
DATASET_FIELD_MISSING = "DatasetFieldMissing"  # textField/messagesField absent from an example
DATASET_INVALID = "DatasetInvalid"  # does not parse as the declared format, or bad chat messages
DATASET_FETCH_FAILED = "DatasetFetchFailed"  # storage error reading an s3:// dataset (exit 1: retryable)
DATASET_DIGEST_MISMATCH = "DatasetDigestMismatch"  # dataset.sha256 differs from the bytes read
DATASET_TOO_SMALL = "DatasetTooSmall"  # fewer training examples than one optimizer step needs
PARQUET_UNAVAILABLE = "ParquetUnavailable"  # format parquet but pyarrow is not installed in the image
SEQUENCE_TOO_LONG = "SequenceTooLong"  # maxSeqLength above the model's position limit
CHAT_TEMPLATE_MISSING = "ChatTemplateMissing"  # messagesField set but the tokenizer has no chat template
QLORA_REQUIRES_GPU = "QLoRARequiresGPU"  # qlora without a CUDA device or without bitsandbytes
MODEL_LOAD_FAILED = "ModelLoadFailed"  # transformers could not build the model/tokenizer from the files
#: Model fetch/verify reasons come from llmops.api.runtime_env.FETCH_REASONS (PickleNotAllowed,
#: ModelDigestMismatch, ModelNotFound, UnsupportedModelSource, ModelFetchFailed).


class FinetuneError(Exception):
    """A rejected input: ``reason`` (CamelCase), a one-line message and the exit code."""

    def __init__(self, reason: str, message: str, code: ExitCode = ExitCode.CONFIG_ERROR) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code

    def line(self) -> str:
        return f"{self.reason}: {' '.join(str(self).split())}"
