"""The label and annotation vocabulary. Every key is a constant with who writes / who reads it."""

from __future__ import annotations

PREFIX = "llmops.dev"

# --- labels on every child object -------------------------------------------------------------
MANAGED_BY = "app.kubernetes.io/managed-by"  # operator writes "llmops-operator"; prune selects on it
MANAGED_BY_VALUE = "llmops-operator"
PART_OF = f"{PREFIX}/owner-kind"  # operator writes the owning kind; prune and admins read it
OWNER_NAME = f"{PREFIX}/owner-name"  # operator writes the owner's name; selectors read it
JOB_NAME = f"{PREFIX}/job-name"  # operator writes on worker pods; Service selector and kubectl -l read it
ATTEMPT = f"{PREFIX}/attempt"  # operator writes the restart attempt on pods; status/observe read it
NODE_RANK = f"{PREFIX}/node-rank"  # operator writes the worker index on pods; observe reads it
ROLE = f"{PREFIX}/role"  # operator writes "worker"/"server"; selectors read it
# FinetuneJob publisher writes its name on an InferenceService it created (serve.create; not owned); admins read it
CREATED_BY_FINETUNE_JOB = f"{PREFIX}/created-by-finetunejob"

# --- annotations -------------------------------------------------------------------------------
PROGRESS_ANNOTATION = f"{PREFIX}/progress"  # rank 0 writes ProgressReport JSON on the Lease; operator reads it
# FinetuneJob builder writes the runtime's spec JSON on its child TrainingJob; the TrainingJob builder passes it to the
# pods as LLMOPS_FINETUNE_SPEC
FINETUNE_SPEC_ANNOTATION = f"{PREFIX}/finetune-spec"
KOPF_PROGRESS_PREFIX = PREFIX  # Kopf's per-handler progress storage prefix (not kopf.zalando.org)
KOPF_DIFFBASE_KEY = f"{PREFIX}/last-handled-configuration"  # Kopf's diff-base annotation, spec only
