"""The operator -> pod contract: every environment variable and exit code, named once.

The operator's builders write these variables into worker pods; ``llmops_runtime`` reads
them. Nothing else may spell these names. Users may not set any reserved name in their own
``env`` (rejected at admission), because a user value would silently break rendezvous or
resume.

Names the runtime reads that the operator never sets (the sandbox agent's, test and local
knobs) live with their reader in ``llmops_runtime.localenv``.
"""

from __future__ import annotations

import enum

# --- rendezvous (written by the TrainingJob builder, read by llmops_runtime.launch) -----------
MASTER_ADDR = "MASTER_ADDR"  # DNS name of rank 0's pod via the headless Service
MASTER_PORT = "MASTER_PORT"  # TCP port of the c10d store on rank 0
NNODES = "LLMOPS_NNODES"  # number of worker pods in the gang
NODE_RANK = "LLMOPS_NODE_RANK"  # this pod's index in the gang, 0..NNODES-1
NPROC_PER_NODE = "LLMOPS_NPROC_PER_NODE"  # processes started per pod (one per GPU)
LAUNCHER = "LLMOPS_LAUNCHER"  # "torchrun" or "deepspeed"
# "1", "2" or "3"; only with LAUNCHER=deepspeed (read by llmops_runtime.engines.deepspeed)
DEEPSPEED_ZERO_STAGE = "LLMOPS_DEEPSPEED_ZERO_STAGE"

# --- identity ---------------------------------------------------------------------------------
JOB_NAME = "LLMOPS_JOB_NAME"  # TrainingJob name
NAMESPACE = "LLMOPS_NAMESPACE"  # TrainingJob namespace
RUN_ID = "LLMOPS_RUN_ID"  # TrainingJob uid: checkpoints of another run are never resumed
ATTEMPT = "LLMOPS_ATTEMPT"  # gang restart attempt, 0 for the first start
POD_NAME = "LLMOPS_POD_NAME"  # downward API metadata.name

# --- checkpointing ----------------------------------------------------------------------------
CHECKPOINT_URI = "LLMOPS_CHECKPOINT_URI"  # s3://bucket/prefix or a local/PVC directory
CHECKPOINT_EVERY_STEPS = "LLMOPS_CHECKPOINT_EVERY_STEPS"  # 0 = not step-triggered
CHECKPOINT_EVERY_SECONDS = "LLMOPS_CHECKPOINT_EVERY_SECONDS"  # 0 = not time-triggered
CHECKPOINT_KEEP = "LLMOPS_CHECKPOINT_KEEP"  # keep-last-K retention
CHECKPOINT_MAX_AGE_SECONDS = "LLMOPS_CHECKPOINT_MAX_AGE_SECONDS"  # storage errors tolerated while the last good checkpoint is younger
RESUME_FROM = "LLMOPS_RESUME_FROM"  # checkpoint id the operator saw committed (hint; verified by the runtime)
RESUME_POLICY = "LLMOPS_RESUME_POLICY"  # "SameRun" (default) or "Continue": may another run's checkpoints be resumed

# --- progress channel -------------------------------------------------------------------------
PROGRESS_LEASE = "LLMOPS_PROGRESS_LEASE"  # coordination.k8s.io Lease rank 0 renews with progress
TOTAL_STEPS = "LLMOPS_TOTAL_STEPS"  # declared total steps, for ETA (0 = unknown)

#: Names a user may not set in spec.template.env (exact names) ...
RESERVED_NAMES = frozenset(
    {
        MASTER_ADDR,
        MASTER_PORT,
        "RANK",
        "LOCAL_RANK",
        "WORLD_SIZE",
        "LOCAL_WORLD_SIZE",
        "NODE_RANK",
        "GROUP_RANK",
        "ROLE_RANK",
    }
)
#: ... nor any name with these prefixes.
RESERVED_PREFIXES = ("LLMOPS_", "TORCHELASTIC_", "PET_")


def is_reserved(name: str) -> bool:
    """True when a user-supplied env name collides with the operator/runtime contract."""
    return name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES)


class ExitCode(enum.IntEnum):
    """Exit codes of llmops_runtime processes; the failure classifier maps them to actions."""

    OK = 0
    USER_ERROR = 1  # an exception in user code: restart the gang (counted)
    CONFIG_ERROR = 78  # bad configuration (EX_CONFIG): fail now, no restart budget burned
    NON_FINITE_LOSS = 79  # loss was NaN/Inf: nothing committed; roll back once, then fail
    CHECKPOINT_UNRECOVERABLE = 80  # no usable checkpoint and storage failing past its max age
    TERMINATED = 81  # SIGTERM received; a final checkpoint was committed (or none was due)

# --- checkpoint stores (read by llmops_runtime.checkpoint.open_store) ------------------------
PVC_ROOT = "LLMOPS_PVC_ROOT"  # where pvc://claim/path URIs are mounted (default /mnt/pvc/<claim>)
# threads hashing a checkpoint in the background (default: usable CPUs - 1, 2..16)
CHECKPOINT_IO_THREADS = "LLMOPS_CHECKPOINT_IO_THREADS"
# niceness added to the background checkpoint threads (default 0 = training priority; e.g. 5 yields to the loop)
CHECKPOINT_IO_NICE = "LLMOPS_CHECKPOINT_IO_NICE"
# "0": local checkpoint files are written through the page cache instead of with O_DIRECT (default 1)
CHECKPOINT_DIRECT_IO = "LLMOPS_CHECKPOINT_DIRECT_IO"

# --- model fetch init step (written by llmops_runtime.serve.fetch, read by the InferenceService status) ---
# The fetcher ends with a one-line termination message "<Reason>: <detail>" (to
# /dev/termination-log, or llmops_runtime.localenv.TERMINATION_LOG); the reason is a condition
# reason the InferenceService status reads back from the init container.
FETCH_OK_REASON = "ModelVerified"  # success; detail carries "digest=sha256:<hex> bytes=N seconds=S cache=hit|miss"


class FetchExit(enum.IntEnum):
    """Exit codes of the model fetcher; the name's reason is the termination message's reason."""

    OK = 0
    UNSUPPORTED_SOURCE = 78  # reason UnsupportedModelSource (oci://, bad URI): config error, no retry
    PICKLE_NOT_ALLOWED = 82  # reason PickleNotAllowed: only pickle weights and allowPickle is false
    DIGEST_MISMATCH = 83  # reason ModelDigestMismatch: a file (or the manifest) differs from its sha256
    MODEL_NOT_FOUND = 84  # reason ModelNotFound: no such prefix/dir/snapshot/revision, or a listed file missing
    FETCH_FAILED = 85  # reason ModelFetchFailed: storage/network error; retrying may help


FETCH_REASONS = {
    FetchExit.OK: FETCH_OK_REASON,
    FetchExit.UNSUPPORTED_SOURCE: "UnsupportedModelSource",
    FetchExit.PICKLE_NOT_ALLOWED: "PickleNotAllowed",
    FetchExit.DIGEST_MISMATCH: "ModelDigestMismatch",
    FetchExit.MODEL_NOT_FOUND: "ModelNotFound",
    FetchExit.FETCH_FAILED: "ModelFetchFailed",
}


def parse_termination_message(text: str) -> tuple[str, str, dict[str, str]]:
    """"Reason: detail k=v ..." -> (reason, detail, {k: v}); ("", text, {}) when it has no reason."""
    line = (text or "").strip().splitlines()[-1] if (text or "").strip() else ""
    head, sep, detail = line.partition(": ")
    if not sep or not head.isalnum():
        return "", line, {}
    fields = dict(tok.split("=", 1) for tok in detail.split() if tok.split("=", 1)[0].isidentifier() and "=" in tok)
    return head, detail, fields

# --- finetune runtime (written by the TrainingJob builder from the FinetuneJob's annotation, read by llmops_runtime.finetune) ---
FINETUNE_SPEC = "LLMOPS_FINETUNE_SPEC"  # the FinetuneJob spec as JSON (camelCase)
