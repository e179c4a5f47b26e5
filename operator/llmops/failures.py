"""The failure classifier: pod and node facts of one gang attempt -> what to do and why.

Why one pure function. The anchors spread this decision over pod events, job failure
messages and per-framework exit-code ranges, and get the expensive cases wrong: evictions
and preemptions burn the retry budget, a lost node leaves a job Restarting forever, a bad
image restarts in a loop. Here every fact about an attempt goes through one table, in an
order that puts the *root cause* first:

1. **Hopeless without a human** (FAIL_NOW, budget untouched): the runtime's CONFIG_ERROR
   (78) and CHECKPOINT_UNRECOVERABLE (80) exits, an invalid image name, and image pulls or
   container config errors (a missing Secret) that outlast the startup grace. Restarting
   would only hold GPUs.
2. **The infrastructure took a pod away** (RESTART_NOT_COUNTED): a DisruptionTarget
   condition (preemption, API eviction, taint manager, kubelet), a kubelet eviction, or the
   pod's node NotReady past a short grace or gone. These come before user-code causes on
   purpose: when one pod disappears its peers die in the next collective with an error of
   their own, and blaming them would charge the user for the cluster's doing.
3. **The job's own failure** (RESTART_GANG, counted): OOMKilled, non-finite loss (79, one
   rollback; the same step again fails the job), death by a signal (>= 128), any other
   non-zero exit (1 = an exception in user code). A second OOMKilled in a row with the same
   spec fails the job instead of looping (more memory is the only fix).
4. **Hang**: every pod runs but rank 0's heartbeat is older than ``hangTimeoutSeconds``
   (measured from the attempt's start when no heartbeat came yet). Counted; the same step
   hanging twice fails the job.
5. A SIGTERM exit (81/143) without a disruption condition, or a rank whose pod vanished
   while the gang ran (force-deleted): someone deleted the pod; the gang restarts, not counted.

Success is rank 0 exiting 0: the runtime only does so after the last step and its final
checkpoint, so peers still shutting down do not matter.

The verdict also carries the cause used to count restarts by cause (the condition reason)
and the step it happened at, which the status layer remembers for the "same step twice"
rules. Nothing here reads the clock: ``now`` is an argument.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmops.api import conditions as C
from llmops.api.conditions import parse_time
from llmops.api.runtime_env import ExitCode
from llmops.api.training import LastFailure
from llmops.observe.pods import ContainerFacts, NodeFacts, PodFacts

# --- reasons this module adds to the vocabulary in llmops.api.conditions ------------------------
# Writer: this classifier (via the status computer); readers: users, alerts, tests.
WORKER_FAILED = "WorkerFailed"  # a worker died by a signal or a non-documented exit code (counted)
HANG = "Hang"  # hangTimeoutSeconds passed without a heartbeat (counted; the same step twice fails)
CREDENTIALS_UNAVAILABLE = "CredentialsUnavailable"  # CreateContainerConfigError naming a Secret (no budget used)
WAITING_FOR_TERMINATING_PODS = "WaitingForTerminatingPods"  # an old pod is not terminal yet; no new pod for its rank

#: Defaults for the time-based rules (overridable per call).
STARTUP_GRACE_SECONDS = 300  # image pull / container config errors tolerated this long
NODE_LOST_GRACE_SECONDS = 40  # a node NotReady this long is treated as lost (kubelet's default monitor grace)

#: The runtime ends its stderr with "non-finite loss at step N" (llmops_runtime.session);
#: the termination message (FallbackToLogsOnError) carries it to us.
_NON_FINITE_STEP = re.compile(r"non-finite loss at step (\d+)")


class Action(str, enum.Enum):
    """What the reconcile should do with the current attempt."""

    NONE = "None"  # nothing to do (running, pending, or a tolerated problem still in its grace)
    SUCCEED = "Succeed"  # rank 0 finished: the job succeeded
    RESTART_GANG = "RestartGang"  # tear the attempt down and start the next one (counted)
    RESTART_NOT_COUNTED = "RestartNotCounted"  # same, not counted against maxRestarts
    FAIL_NOW = "FailNow"  # give up: restarting cannot help


@dataclass(frozen=True)
class Verdict:
    """The classifier's answer."""

    action: Action
    reason: str | None = None  # condition reason; also the restart cause
    message: str = ""
    step: int | None = None  # step at which it happened, when known
    pods: tuple[str, ...] = ()  # pods that show the cause

    @property
    def counted(self) -> bool:
        return self.action == Action.RESTART_GANG


NOTHING = Verdict(Action.NONE)


# --- rules -------------------------------------------------------------------------------------

_DISRUPTION_REASONS = {
    "PreemptionByScheduler": C.PREEMPTED,
    "PreemptionByKubeScheduler": C.PREEMPTED,
    "EvictionByEvictionAPI": C.EVICTED,
    "TerminationByKubelet": C.EVICTED,
    "DeletionByPodGC": C.NODE_LOST,
    "DeletionByTaintManager": C.NODE_LOST,
}
_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "RegistryUnavailable", "SignatureValidationFailed")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return f"signal {code - 128}"


def _age(since: str | None, now: dt.datetime) -> float | None:
    t = parse_time(since)
    return None if t is None else (now - t).total_seconds()


def _fail_fast(pods: Sequence[PodFacts], now: dt.datetime, grace: float) -> Verdict | None:
    tolerated: Verdict | None = None
    for p in pods:
        for c in p.containers:
            if c.state == "terminated" and c.exit_code == ExitCode.CONFIG_ERROR:
                msg = f"pod {p.name} exited {c.exit_code} (configuration error): {c.message or ''}".rstrip(": ")
                return Verdict(Action.FAIL_NOW, C.CONFIG_ERROR, msg, pods=(p.name,))
            if c.state == "terminated" and c.exit_code == ExitCode.CHECKPOINT_UNRECOVERABLE:
                msg = f"pod {p.name} exited {c.exit_code}: no usable checkpoint and storage failing past maxAgeSeconds"
                return Verdict(Action.FAIL_NOW, C.CHECKPOINT_UNRECOVERABLE, msg, pods=(p.name,))
            if c.state == "terminated" and c.reason in ("ContainerCannotRun", "StartError"):
                # The command could not even start (not found, not executable): a restart
                # runs the same image and command again.
                return Verdict(Action.FAIL_NOW, C.CONFIG_ERROR, f"pod {p.name}: {c.reason}: {c.message or ''}".rstrip(": "), pods=(p.name,))
            if c.state != "waiting":
                continue
            if c.reason == "InvalidImageName":
                msg = f"pod {p.name}: invalid image name: {c.message or ''}".rstrip(": ")
                return Verdict(Action.FAIL_NOW, C.IMAGE_PULL_FAILED, msg, pods=(p.name,))
            if c.reason in _PULL_REASONS or c.reason in ("CreateContainerConfigError", "CreateContainerError", "ContainerCannotRun"):
                reason = C.IMAGE_PULL_FAILED if c.reason in _PULL_REASONS else (
                    CREDENTIALS_UNAVAILABLE if "secret" in (c.message or "").lower() else C.CONFIG_ERROR
                )
                age = _age(p.created, now)
                late = age is not None and age >= grace
                msg = f"pod {p.name}: {c.reason}: {c.message or ''}".rstrip(": ")
                if late:
                    return Verdict(Action.FAIL_NOW, reason, f"{msg} (for {int(age)}s, startup grace {int(grace)}s)", pods=(p.name,))
                tolerated = tolerated or Verdict(Action.NONE, reason, msg, pods=(p.name,))
    return tolerated


def _infrastructure(pods: Sequence[PodFacts], nodes: Mapping[str, NodeFacts] | None, now: dt.datetime, node_grace: float) -> Verdict | None:
    for p in pods:
        dt_cond = p.condition("DisruptionTarget")
        if dt_cond is not None and dt_cond.status == "True":
            reason = _DISRUPTION_REASONS.get(dt_cond.reason or "", C.EVICTED)
            msg = f"pod {p.name}: {dt_cond.reason or 'disrupted'}: {dt_cond.message or ''}".rstrip(": ")
            return Verdict(Action.RESTART_NOT_COUNTED, reason, msg, pods=(p.name,))
        if p.reason == "Evicted":
            return Verdict(Action.RESTART_NOT_COUNTED, C.EVICTED, f"pod {p.name} evicted: {p.message or ''}".rstrip(": "), pods=(p.name,))
        if p.reason in ("NodeLost", "NodeShutdown", "Terminated") and p.phase == "Failed":
            reason = C.NODE_LOST if p.reason != "Terminated" else C.EVICTED
            msg = f"pod {p.name}: {p.reason}: {p.message or ''}".rstrip(": ")
            return Verdict(Action.RESTART_NOT_COUNTED, reason, msg, pods=(p.name,))
    if nodes is not None:
        for p in pods:
            if not p.node_name or p.terminal:
                continue
            node = nodes.get(p.node_name)
            if node is None:
                msg = f"node {p.node_name} of pod {p.name} no longer exists"
                return Verdict(Action.RESTART_NOT_COUNTED, C.NODE_LOST, msg, pods=(p.name,))
            if not node.ready:
                age = _age(node.since, now)
                if age is None or age >= node_grace:
                    msg = f"node {p.node_name} of pod {p.name} is NotReady" + (f" for {int(age)}s" if age is not None else "")
                    return Verdict(Action.RESTART_NOT_COUNTED, C.NODE_LOST, msg, pods=(p.name,))
    for p in pods:
        if p.deletion_timestamp and not p.terminal:
            # Deleted by someone (no disruption condition): its rank is gone for this
            # attempt, so the gang restarts now rather than after the peers time out.
            return Verdict(Action.RESTART_NOT_COUNTED, C.TERMINATED, f"pod {p.name} is being deleted", pods=(p.name,))
    return None


def _vanished(pods: Sequence[PodFacts], gang_size: int | None, running_since: dt.datetime | None) -> Verdict | None:
    """A running gang with a rank whose pod is gone (force-deleted: no deletion ever seen).
    The peers die in their next collective; restart now, not counted, rather than recreate the
    one pod (a job that was Running would show Queued while its peers fail)."""
    if gang_size is None or running_since is None:
        return None
    missing = sorted(set(range(gang_size)) - {p.rank for p in pods})
    if not missing:
        return None
    return Verdict(Action.RESTART_NOT_COUNTED, C.TERMINATED,
                   f"the worker pod of rank {', '.join(map(str, missing))} was deleted while the gang ran")


def _non_finite_step(c: ContainerFacts) -> int | None:
    m = _NON_FINITE_STEP.search(c.message or "")
    return int(m.group(1)) if m else None


def _job_failure(pods: Sequence[PodFacts], last: LastFailure | None, generation: int | None, progress_step: int | None) -> Verdict | None:
    failed = [(p, p.terminated()) for p in pods if p.terminated() is not None and (p.terminated().exit_code or 0) != 0]
    if not failed:
        return None
    for p, c in failed:
        if c.reason == "OOMKilled":
            msg = f"pod {p.name}: container {c.name} OOMKilled (exit {c.exit_code})"
            if last and last.reason == C.OOM_KILLED and generation is not None and last.generation == generation:
                again = "; the previous attempt was OOMKilled too with the same spec: raise resources.memory"
                return Verdict(Action.FAIL_NOW, C.OOM_KILLED, msg + again, pods=(p.name,))
            return Verdict(Action.RESTART_GANG, C.OOM_KILLED, msg, step=progress_step, pods=(p.name,))
    for p, c in failed:
        if c.exit_code == ExitCode.NON_FINITE_LOSS:
            step = _non_finite_step(c)
            step = step if step is not None else progress_step
            where = f" at step {step}" if step is not None else ""
            if last and last.reason == C.NON_FINITE_LOSS and last.step == step:
                msg = f"loss became non-finite{where} again after a rollback (pod {p.name})"
                return Verdict(Action.FAIL_NOW, C.NON_FINITE_LOSS, msg, step=step, pods=(p.name,))
            msg = f"loss became non-finite{where} (pod {p.name}); rolling back to the last committed checkpoint"
            return Verdict(Action.RESTART_GANG, C.NON_FINITE_LOSS, msg, step=step, pods=(p.name,))
    terminated_codes = (ExitCode.TERMINATED, 128 + signal.SIGTERM)
    for p, c in failed:
        code = c.exit_code or 0
        if code in terminated_codes:
            continue
        if code >= 128:
            msg = f"pod {p.name}: container {c.name} killed by {_signal_name(code)} (exit {code})"
            return Verdict(Action.RESTART_GANG, WORKER_FAILED, msg, step=progress_step, pods=(p.name,))
        reason = C.USER_ERROR if code == ExitCode.USER_ERROR else WORKER_FAILED
        last_line = f": {c.message.strip().splitlines()[-1]}" if c.message and c.message.strip() else ""
        msg = f"pod {p.name}: container {c.name} exited {code}{last_line}"
        return Verdict(Action.RESTART_GANG, reason, msg, step=progress_step, pods=(p.name,))
    p, c = failed[0]
    msg = f"pod {p.name} was terminated (exit {c.exit_code}) without a disruption condition"
    return Verdict(Action.RESTART_NOT_COUNTED, C.TERMINATED, msg, step=progress_step, pods=(p.name,))


def _phase_failed_without_container(pods: Sequence[PodFacts]) -> Verdict | None:
    for p in pods:
        if p.phase == "Failed" and p.terminated() is None:
            msg = f"pod {p.name} failed: {p.reason or ''} {p.message or ''}".strip()
            return Verdict(Action.RESTART_GANG, WORKER_FAILED, msg, pods=(p.name,))
    return None


def _hang(pods: Sequence[PodFacts], heartbeat: dt.datetime | None, running_since: dt.datetime | None, now: dt.datetime,
          timeout: float | None, last: LastFailure | None, progress_step: int | None) -> Verdict | None:
    if not timeout or not pods or any(p.phase != "Running" for p in pods):
        return None
    ref = max((t for t in (heartbeat, running_since) if t is not None), default=None)
    if ref is None:
        return None
    silent = (now - ref).total_seconds()
    if silent < timeout:
        return None
    where = f" at step {progress_step}" if progress_step is not None else ""
    msg = f"no heartbeat from rank 0 for {int(silent)}s (hangTimeoutSeconds {int(timeout)}){where}"
    if last and last.reason == HANG and last.step == progress_step:
        return Verdict(Action.FAIL_NOW, HANG, msg + "; the previous attempt hung at the same step", step=progress_step)
    return Verdict(Action.RESTART_GANG, HANG, msg, step=progress_step)


@dataclass(frozen=True)
class ClassifyInput:
    """Everything the classifier looks at for one attempt."""

    pods: tuple[PodFacts, ...]  # the current attempt's worker pods
    now: dt.datetime
    nodes: Mapping[str, NodeFacts] | None = None  # None: node facts unknown (rule off)
    heartbeat: dt.datetime | None = None  # newest heartbeat of this attempt (Lease renewTime / report)
    running_since: dt.datetime | None = None  # when this attempt's pods were all Running
    gang_size: int | None = None  # worker pods of an attempt (ranks 0..n-1); None: rule off
    hang_timeout_seconds: float | None = None
    progress_step: int | None = None  # step of this attempt's newest report
    last_failure: LastFailure | None = None
    generation: int | None = None
    startup_grace_seconds: float = STARTUP_GRACE_SECONDS
    node_lost_grace_seconds: float = NODE_LOST_GRACE_SECONDS
    extra: Mapping[str, Any] = field(default_factory=dict)


def classify(x: ClassifyInput) -> Verdict:
    """The verdict for one attempt (see the module essay for the order of the rules)."""
    pods = x.pods
    rank0 = next((p for p in pods if p.rank == 0), None)
    if rank0 is not None and rank0.phase == "Succeeded":
        return Verdict(Action.SUCCEED, C.COMPLETED, f"rank 0 ({rank0.name}) finished", step=x.progress_step, pods=(rank0.name,))
    tolerated: Verdict | None = None
    for rule in (
        lambda: _fail_fast(pods, x.now, x.startup_grace_seconds),
        lambda: _infrastructure(pods, x.nodes, x.now, x.node_lost_grace_seconds),
        lambda: _vanished(pods, x.gang_size, x.running_since),
        lambda: _job_failure(pods, x.last_failure, x.generation, x.progress_step),
        lambda: _phase_failed_without_container(pods),
        lambda: _hang(pods, x.heartbeat, x.running_since, x.now, x.hang_timeout_seconds, x.last_failure, x.progress_step),
    ):
        verdict = rule()
        if verdict is None:
            continue
        if verdict.action == Action.NONE:
            # A tolerated problem still in its grace: a decisive cause found later wins,
            # otherwise this one is reported (status shows it while we wait).
            tolerated = tolerated or verdict
            continue
        return verdict
    return tolerated or NOTHING


# --- refusals: the API server said no to a child the operator applied ---------------------------
#
# Why a second, smaller table. Everything above is about pods that ran; a refusal happens
# before anything runs: the API server (its admission chain, its discovery, its validation)
# answers the apply of a child with 403, 404 or 422. A real cluster does this for reasons the
# user can fix and the operator cannot: a ServiceAccount or PriorityClass named in the spec
# that GitOps has not created yet, a ResourceQuota that is full, a Pod Security level or an
# admission policy that forbids what the spec asks, a gang scheduler that is not installed.
# Each becomes one stable condition reason with the server's own words, and a decision:
#
# * **retried** (``permanent=False``): the cluster may change without the job changing (GitOps
#   creates the ServiceAccount, quota frees up, an admin installs Volcano or relaxes a policy).
#   The job shows ``Queued=True`` with the reason and the operator re-applies with a growing
#   delay. Nothing is held while it waits: the refused pods do not exist.
# * **permanent** (``permanent=True``): only a new spec can pass. Pod Security (dropping the
#   capability quietly would break RDMA later), and a 422 on a child the operator built (the
#   operator produced something the server considers invalid: a bug, or a spec combination the
#   CRD did not catch). The job fails with the reason.
#
# Matching is on the server's message text because that is all the API gives: every
# admission refusal is a 403 Status with reason Forbidden (a ValidatingAdmissionPolicy
# without a reason even answers 422). The texts are the upstream admission plugins' (stable
# for years); anything else that is a 403 is an admission policy of some kind (webhook,
# ValidatingAdmissionPolicy, NamespaceLifecycle) and keeps its message.

SERVICE_ACCOUNT_MISSING = "ServiceAccountMissing"  # the pods' ServiceAccount does not exist (retried)
PRIORITY_CLASS_MISSING = "PriorityClassMissing"  # scheduling.priorityClassName names no PriorityClass (retried)
QUOTA_EXCEEDED = "QuotaExceeded"  # a ResourceQuota refused the child (retried: quota frees up)
POD_SECURITY_VIOLATION = "PodSecurityViolation"  # Pod Security admission refused the pods (permanent)
ADMISSION_DENIED = "AdmissionDenied"  # a webhook or admission policy refused the child (retried)
ADMISSION_UNAVAILABLE = "AdmissionWebhookUnavailable"  # a webhook could not be called (500; retried)
OPERATOR_FORBIDDEN = "OperatorForbidden"  # RBAC: the operator may not write this kind here (retried)
GANG_BACKEND_UNAVAILABLE = "GangBackendUnavailable"  # the requested gang backend's API is not served (retried)
API_NOT_SERVED = "ApiNotServed"  # another child's API group/version is not served (retried)
CHILD_REJECTED = "ChildRejected"  # 400/422 on a child the operator built (permanent)

REFUSAL_REASONS = (SERVICE_ACCOUNT_MISSING, PRIORITY_CLASS_MISSING, QUOTA_EXCEEDED, POD_SECURITY_VIOLATION,
                   ADMISSION_DENIED, ADMISSION_UNAVAILABLE, OPERATOR_FORBIDDEN, GANG_BACKEND_UNAVAILABLE,
                   API_NOT_SERVED, CHILD_REJECTED)

#: 403 message texts of the upstream admission plugins -> reason (first match wins).
_FORBIDDEN_TEXTS = (
    ("violates PodSecurity", POD_SECURITY_VIOLATION),
    ("error looking up service account", SERVICE_ACCOUNT_MISSING),
    ("no PriorityClass with name", PRIORITY_CLASS_MISSING),
    ("exceeded quota", QUOTA_EXCEEDED),
    ("failed quota", QUOTA_EXCEEDED),
)
#: A policy's refusal, whatever status it chose (a ValidatingAdmissionPolicy without a reason
#: answers 422 Invalid, a webhook usually 403 or 400): not a child we built wrong.
_POLICY_TEXTS = ("ValidatingAdmissionPolicy", "admission webhook")
_RBAC = re.compile(r'is forbidden: User "[^"]*" cannot ')
_HINTS = {
    POD_SECURITY_VIOLATION: "permanent: relax the namespace's pod-security.kubernetes.io/enforce level or drop "
                            "spec.network.rdma, then recreate the job",
    SERVICE_ACCOUNT_MISSING: "retried with backoff: create the ServiceAccount or change serviceAccountName",
    PRIORITY_CLASS_MISSING: "retried with backoff: create the PriorityClass or change scheduling.priorityClassName",
    QUOTA_EXCEEDED: "retried with backoff until the namespace's quota allows it",
    ADMISSION_DENIED: "retried with backoff: an admission policy refused it",
    ADMISSION_UNAVAILABLE: "retried with backoff",
    OPERATOR_FORBIDDEN: "retried with backoff: grant the operator's ServiceAccount this verb (RBAC)",
    API_NOT_SERVED: "retried when discovery is refreshed: install the API or change the spec",
    GANG_BACKEND_UNAVAILABLE: "retried when discovery is refreshed: install it, or set scheduling.gang.backend: auto",
    CHILD_REJECTED: "permanent: the API server refused an object the operator built; fix the spec (or report a bug)",
}


@dataclass(frozen=True)
class Refusal:
    """One refusal, classified: the condition reason, whether only a new spec can pass, and
    the message (which child, the server's words, what happens next)."""

    reason: str
    permanent: bool
    message: str
    child: str = ""  # "Kind/name"


def classify_refusal(status: int, message: str, child_kind: str, child_name: str, *,
                     api_version: str = "", not_served: bool = False, gang_apis: frozenset[str] = frozenset()) -> Refusal | None:
    """The refusal an apply error is, or None when it is not one (a conflict, an outage, a
    throttle: those are the work queue's to retry, with a log line).

    ``not_served`` says the kube layer found the child's API group/version absent in discovery
    (a 404 from discovery, not a missing object); ``gang_apis`` are the group/versions of gang
    objects, whose absence means the requested gang backend is not installed."""
    child = f"{child_kind}/{child_name}"
    reason: str | None = None
    if not_served:
        reason = GANG_BACKEND_UNAVAILABLE if api_version in gang_apis else API_NOT_SERVED
        message = f"{api_version} {child_kind} is not served by this cluster ({message})" if message else \
            f"{api_version} {child_kind} is not served by this cluster"
    elif status in (400, 403, 422) and any(text in message for text in _POLICY_TEXTS):
        reason = ADMISSION_DENIED
    elif status == 403:
        reason = next((r for text, r in _FORBIDDEN_TEXTS if text in message), None)
        if reason is None:
            reason = OPERATOR_FORBIDDEN if _RBAC.search(message) else ADMISSION_DENIED
    elif status == 500 and "failed calling webhook" in message:
        reason = ADMISSION_UNAVAILABLE
    elif status in (400, 422):
        reason = CHILD_REJECTED
    if reason is None:
        return None
    permanent = reason in (POD_SECURITY_VIOLATION, CHILD_REJECTED)
    return Refusal(reason, permanent, f"{child}: {message} ({_HINTS[reason]})", child)

