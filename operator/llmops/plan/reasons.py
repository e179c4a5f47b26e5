"""Every condition reason each kind writes, and what it means: the one table
docs/reference/conditions.md is generated from (``llmops crds``), and that the status tests
hold the status computers to (tests/plan/conftest.py: a condition whose reason is not here
fails the test that produced it).

A reason names the cause in CamelCase; the message says it in words. The job lifecycle
conditions (Queued, Running, Restarting) set to False carry the reason of the condition that
took over (``DISPLACED``): Running=False with reason OOMKilled says why the job stopped running.
"""

from __future__ import annotations

from llmops import failures as F
from llmops.api import conditions as C
from llmops.api.runtime_env import FETCH_REASONS, FetchExit
from llmops.plan import finetune as FT
from llmops.plan import inference as IS
from llmops.plan import training as TJ

#: The status of a lifecycle condition displaced by another: any reason of the same kind.
DISPLACED = "displaced"

Reasons = dict[str, str]  # reason -> meaning

#: Refusals of a child by the API server (docs/failures.md says which are retried).
REFUSALS: Reasons = {
    F.SERVICE_ACCOUNT_MISSING: "the pods' ServiceAccount does not exist (retried)",
    F.PRIORITY_CLASS_MISSING: "scheduling.priorityClassName names no PriorityClass (retried)",
    F.QUOTA_EXCEEDED: "a ResourceQuota refused a child (retried)",
    F.POD_SECURITY_VIOLATION: "Pod Security admission refused the pods (permanent)",
    F.ADMISSION_DENIED: "a webhook or admission policy refused a child (retried)",
    F.ADMISSION_UNAVAILABLE: "an admission webhook could not be called (retried)",
    F.OPERATOR_FORBIDDEN: "RBAC: the operator may not write a child here (retried)",
    F.GANG_BACKEND_UNAVAILABLE: "the requested gang backend's API is not served (retried)",
    F.API_NOT_SERVED: "a child's API group/version is not served (retried)",
    F.CHILD_REJECTED: "the API server refused an object the operator built (permanent)",
}
RETRIED_REFUSALS = {k: v for k, v in REFUSALS.items() if k not in (F.POD_SECURITY_VIOLATION, F.CHILD_REJECTED)}
PERMANENT_REFUSALS = {k: v for k, v in REFUSALS.items() if k not in RETRIED_REFUSALS}

#: Why a gang restarts (the failure classifier's causes; also keys of status.restarts.byCause).
RESTART_CAUSES: Reasons = {
    C.USER_ERROR: "user code exited non-zero (counted)",
    F.WORKER_FAILED: "a worker died by a signal or an undocumented exit code (counted)",
    C.OOM_KILLED: "a container was OOMKilled (counted)",
    F.HANG: "hangTimeoutSeconds passed without a heartbeat (counted)",
    C.NON_FINITE_LOSS: "the loss became NaN/Inf: rolled back to the last checkpoint once (counted)",
    C.NODE_LOST: "a node went NotReady or was deleted (not counted)",
    C.PREEMPTED: "preempted by a higher priority (not counted)",
    C.EVICTED: "evicted (not counted)",
    C.TERMINATED: "a pod was deleted from outside: exit 81 after SIGTERM, or gone from the running gang (not counted)",
    F.WAITING_FOR_TERMINATING_PODS: "an earlier attempt's pod has not terminated yet; no new pod for its rank",
}

#: Why a job fails for good.
FAILURES: Reasons = {
    C.DEADLINE_EXCEEDED: "runPolicy.activeDeadlineSeconds passed",
    C.MAX_RESTARTS_EXCEEDED: "counted restarts used up failurePolicy.maxRestarts",
    C.SCHEDULING_TIMEOUT: "the gang was not placed within its timeout, too many times",
    C.CONFIG_ERROR: "exit 78 or a container config error past the startup grace",
    C.NON_FINITE_LOSS: "the loss became NaN/Inf again after the rollback",
    C.OOM_KILLED: "OOMKilled again at the same step",
    F.HANG: "hung twice at the same step",
    C.IMAGE_PULL_FAILED: "the image could not be pulled within the startup grace",
    F.CREDENTIALS_UNAVAILABLE: "a Secret the pods need was still missing after the startup grace",
    C.CHECKPOINT_UNRECOVERABLE: "exit 80: no checkpoint can be restored",
    C.INVALID_SPEC: "the spec passed the CRD but not the typed model (fields named in the message)",
    **PERMANENT_REFUSALS,
}

#: Why a job waits in the queue.
WAITING: Reasons = {
    C.GANG_PENDING: "pods created, the gang is not placed yet",
    C.WAITING_FOR_QUOTA: "the Kueue/Volcano queue has not admitted the gang",
    C.POD_PENDING: "the gang is placed, containers are starting",
    C.SCHEDULING_TIMEOUT: "the gang was not placed within its timeout: all pods deleted, retried after backoff",
    TJ.UNSCHEDULABLE: "a worker's request exceeds every node's allocatable: nothing created",
    TJ.FOREIGN_CHILD: "a child's name is held by an object another owner controls (never adopted)",
    F.WAITING_FOR_TERMINATING_PODS: "an earlier attempt's pod has not terminated yet",
    C.IMAGE_PULL_FAILED: "the image does not pull yet (within the startup grace)",
    C.CONFIG_ERROR: "a container config error (a missing ConfigMap key) within the startup grace",
    F.CREDENTIALS_UNAVAILABLE: "a Secret the pods need is missing (within the startup grace)",
    **RETRIED_REFUSALS,
}

_JOB: dict[str, dict[bool, Reasons | str]] = {
    C.QUEUED: {True: WAITING, False: DISPLACED},
    C.RUNNING: {True: {C.ALL_PODS_RUNNING: "every worker pod runs",
                       C.WORKERS_FINISHING: "some workers exited 0, rank 0 still runs: the job is ending"},
                False: {TJ.BACKOFF: "waiting out the restart backoff before the next attempt", DISPLACED: ""}},
    C.RESTARTING: {True: RESTART_CAUSES, False: DISPLACED},
    C.SUSPENDED: {True: {C.SUSPENDED_BY_USER: "spec.runPolicy.suspend is true: pods deleted"},
                  False: {C.RESUMED: "suspend flipped back to false", TJ.NOT_SUSPENDED: "never suspended"}},
    C.SUCCEEDED: {True: {C.COMPLETED: "rank 0 exited 0"}},
    C.FAILED: {True: FAILURES},
    C.STALLED: {True: {TJ.HEARTBEAT_STALE: "rank 0's heartbeat is older than the stall threshold"},
                False: {TJ.HEARTBEAT_FRESH: "the heartbeat is fresh again"}},
    C.CHECKPOINT_FAILING: {True: {C.CHECKPOINT_STORAGE_ERROR: "saves fail; training continues within checkpoint.maxAge"},
                           False: {TJ.CHECKPOINT_HEALTHY: "saves succeed again"}},
}

#: The model fetcher's failures (its exit code's reason, from the termination message).
_FETCH_MEANINGS = {
    FetchExit.UNSUPPORTED_SOURCE: "the model URI's scheme is not supported",
    FetchExit.PICKLE_NOT_ALLOWED: "only pickle weights were found and allowPickle is false",
    FetchExit.DIGEST_MISMATCH: "a file (or the manifest) differs from its sha256",
    FetchExit.MODEL_NOT_FOUND: "no such model, revision or file",
    FetchExit.FETCH_FAILED: "a storage or network error while fetching (retried)",
}
FETCH_FAILURES: Reasons = {FETCH_REASONS[code]: meaning for code, meaning in _FETCH_MEANINGS.items()}

TABLE: dict[str, dict[str, dict[bool, Reasons | str]]] = {
    "TrainingJob": _JOB,
    "FinetuneJob": {
        **_JOB,  # mirrored from its TrainingJob
        C.QUEUED: {True: {C.CREATED: "the TrainingJob is being created or has no status yet",
                          FT.FOREIGN_CHILD: "the TrainingJob's name is held by another owner's object", **WAITING},
                   False: DISPLACED},
        C.PUBLISHED: {True: {C.OUTPUT_PUBLISHED: "the output is committed and the InferenceService lists the adapter ready"},
                      False: {C.TRAINING: "publishes after training succeeds",
                              C.WAITING_FOR_OUTPUT: "the job succeeded; its output report was not seen yet",
                              C.WAITING_FOR_SERVICE: "serve.inferenceServiceName does not exist yet",
                              C.SERVICE_CREATE_FAILED: "creating the InferenceService was refused (message says why)",
                              C.ADAPTER_NOT_READY: "the InferenceService has not loaded the adapter yet",
                              C.JOB_FAILED: "the training failed: nothing to publish",
                              FT.NOT_AN_ADAPTER: "serve with output.mode merged"}},
    },
    "InferenceService": {
        C.READY: {True: {C.REPLICAS_READY: "at least the minimum of replicas are ready"},
                  False: {C.REPLICAS_UNAVAILABLE: "fewer ready replicas than the minimum",
                          C.SCALED_TO_ZERO: "no replicas by opt-in scale-to-zero; the next request scales up",
                          C.INVALID_SPEC: "the spec passed the CRD but not the typed model", **REFUSALS}},
        C.DEGRADED: {True: {**FETCH_FAILURES, C.INSUFFICIENT_GPU_MEMORY: "vLLM could not fit the weights and the KV cache",
                            C.SERVER_FAILED: "the server container exited for another reason", **REFUSALS},
                     False: {C.REPLICAS_READY: "every desired replica is ready",
                             C.REPLICAS_LOADING: "fewer ready than desired, none failing: they are starting"}},
        C.MODEL_CACHED: {True: {C.MODEL_VERIFIED: "the sha256 manifest matched; the model is in the cache"},
                         False: {C.MODEL_FETCHING: "fetching and verifying, or waiting for a server pod", **FETCH_FAILURES}},
        C.PROGRESSING: {True: {C.SCALING_UP: "the autoscaler raised the replica count",
                               C.SCALING_DOWN: "the autoscaler lowered the replica count",
                               C.ROLLOUT_IN_PROGRESS: "a new revision is rolling out"},
                        False: {IS.STABLE: "every replica is at the current revision"}},
        C.ADAPTERS_READY: {True: {C.ADAPTERS_LOADED: "every wanted adapter is loaded on every ready replica",
                                  C.NO_ADAPTERS: "the service has no adapters"},
                           False: {C.ADAPTERS_LOADING: "adapters are being fetched or loaded",
                                   C.ADAPTER_NOT_READY: "a listed adapter failed to load",
                                   C.ADAPTER_LIMIT_EXCEEDED: "more adapters wanted than engine.maxLoras allows"}},
    },
}


def allowed(kind: str, type_: str, status: bool, reason: str) -> bool:
    """Whether ``kind`` may write condition ``type_`` with that status and reason."""
    listed = TABLE[kind].get(type_, {}).get(status)
    if isinstance(listed, dict) and reason in listed:
        return True
    if listed == DISPLACED or (isinstance(listed, dict) and DISPLACED in listed):
        return reason in every_reason(kind)
    return False


def every_reason(kind: str) -> set[str]:
    """Every reason ``kind`` lists anywhere (what a displaced condition may carry)."""
    return {r for by_status in TABLE[kind].values() for listed in by_status.values() if isinstance(listed, dict)
            for r in listed if r != DISPLACED}
