"""Environment the in-pod code reads that the operator never writes.

The operator -> pod contract (``llmops.api.runtime_env``) holds only the names the operator's
builders set and the runtime reads, and the exit codes and termination messages the operator
reads back. The names here are the runtime's own: set by the sandbox's node agent (sandbox
pods only; unset on a real cluster), by tests, or by a person running the in-pod tools
locally. They are named once, here, by their reader; the sandbox agent imports them from here.
All but ``POD_IP`` carry the ``LLMOPS_`` prefix, so a user cannot set them through a job's
``spec.template.env`` (reserved at admission).
"""

from __future__ import annotations

# --- sandbox node agent -> pods (written by llmops.sandbox.node; unset on a real cluster) -----
# hosts(5) file of headless-Service pod names -> pod IPs (llmops_runtime.hosts resolves through it)
SANDBOX_HOSTS_FILE = "LLMOPS_SANDBOX_HOSTS_FILE"
SANDBOX_ROOT = "LLMOPS_SANDBOX_ROOT"  # per-pod root: absolute path P inside a sandbox pod means $LLMOPS_SANDBOX_ROOT/P
POD_IP = "POD_IP"  # the pod's own address (a loopback address per sandbox pod); the server tools bind and call there

# --- local and test knobs (read by llmops_runtime.session/progress/serve/finetune) ------------
PROGRESS_FILE = "LLMOPS_PROGRESS_FILE"  # without a progress Lease: JSON-lines file for reports (else stderr)
PROGRESS_INTERVAL_SECONDS = "LLMOPS_PROGRESS_INTERVAL_SECONDS"  # min seconds between progress publications (default 5)
TEST_OMIT_STATE = "LLMOPS_TEST_OMIT_STATE"  # tests only: "loader,rng" parts NOT checkpointed, to prove exactness tests can fail
# The model fetcher and the finetune runtime end with a one-line termination message
# "<Reason>: <detail>" (llmops.api.runtime_env.parse_termination_message reads it back).
TERMINATION_LOG = "LLMOPS_TERMINATION_LOG"  # where in-pod tools write their termination message (default /dev/termination-log)
HF_SNAPSHOT_ROOT = "LLMOPS_HF_SNAPSHOT_ROOT"  # local HF hub cache holding pre-staged hf:// snapshots
FETCH_MAX_BYTES_PER_SECOND = "LLMOPS_FETCH_MAX_BYTES_PER_SECOND"  # optional bandwidth cap of the fetcher (0 = none)
FINETUNE_MODEL_CACHE = "LLMOPS_FINETUNE_MODEL_CACHE"  # where the finetune runtime stages and verifies the base model
FINETUNE_RESULTS_FILE = "LLMOPS_FINETUNE_RESULTS_FILE"  # evaluation results JSON the finetune runtime rewrites after each eval
