"""TrainingJob lifecycle: (job, observed facts, now) -> the whole status and what to do.

``plan`` is the one place that decides; the reconcile handler only executes the plan (apply
``desired``, prune every owned child not in it, write ``status`` once, emit ``events``,
requeue after ``requeue_after``). ``compute_status`` is its status part.

The lifecycle, as a small state machine whose state lives in the status itself
(``status.attempt`` and the conditions), so a restarted operator resumes exactly where the
last status write left it:

* **Placing** the current attempt: its pods are desired. Until every pod runs, ``Queued``
  is True (reason: the backend's placement, e.g. WaitingForQuota or GangPending) and
  ``Running`` is False, even when some pods run: the anchors' "Running while Pending" lie
  is impossible by construction. A per-pod request that no node can hold is reported at
  once (``Unschedulable`` with the numbers) and no pod is created. If the gang is not fully
  running within the scheduling timeout, the attempt is dropped (GPUs released), the next
  one waits an exponential backoff, and after ``MAX_SCHEDULING_TIMEOUTS`` the job fails.
* **Running**: every pod runs. The failure classifier looks at each reconcile's facts.
* **Restarting**: a verdict asked for a gang restart. ``status.attempt`` moves to the next
  number at once, so the old pods are no longer desired (the prune deletes them); no pod of
  the new attempt is created while any pod of an older attempt is not terminal
  (``WaitingForTerminatingPods``), and not before the backoff has passed. The new attempt
  resumes from the newest committed checkpoint the operator saw.
* **Suspended** (spec.runPolicy.suspend): no pods; the checkpoint stays; resuming starts a
  new attempt from it. **Succeeded / Failed** are final: pods are deleted (GPUs released)
  and, after ``ttlSecondsAfterFinished``, the other children too; the CR itself stays.

Determinism: for an unchanged world the plan repeats the previous status exactly (no
churn); condition times move only on flips; events are emitted only for transitions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.api import conditions as C
from llmops.api.conditions import Condition, ConditionStatus, parse_time, rfc3339
from llmops.api.labels import PROGRESS_ANNOTATION
from llmops.api.progress import ProgressReport
from llmops.api.scheduling import GangBackend
from llmops.api.training import (
    CheckpointStatus,
    GangStatus,
    Progress,
    Restarts,
    TrainingJob,
    TrainingJobStatus,
)
from llmops.builders.training import BuildInputs, build_training_children, gang_name, per_pod_requests
from llmops.failures import (
    GANG_BACKEND_UNAVAILABLE,
    NODE_LOST_GRACE_SECONDS,
    POD_SECURITY_VIOLATION,  # noqa: F401 - re-exported: the reason's old home
    REFUSAL_REASONS,
    STARTUP_GRACE_SECONDS,
    WAITING_FOR_TERMINATING_PODS,
    Action,
    ClassifyInput,
    LastFailure,
    NodeFacts,
    PodFacts,
    Refusal,
    Verdict,
    classify,
)
from llmops.scheduling import Placement, backend_for, choose, misfits, unavailable, unschedulable_message
from llmops.status.events import Event

# --- reasons this module adds (writer: this status computer; readers: users, alerts) ----------
UNSCHEDULABLE = "Unschedulable"  # a worker's request exceeds every node's allocatable; nothing created
BACKOFF = "BackingOff"  # waiting the restart/requeue backoff before the next attempt
HEARTBEAT_STALE = "HeartbeatStale"  # Stalled=True: rank 0's heartbeat is older than the stall threshold
HEARTBEAT_FRESH = "HeartbeatFresh"  # Stalled=False again
CHECKPOINT_HEALTHY = "CheckpointHealthy"  # CheckpointFailing=False again
FOREIGN_CHILD = "ChildOwnedByOther"  # a child name is taken by an object another owner controls
NOT_SUSPENDED = "NotSuspended"

DEFAULT_SCHEDULING_TIMEOUT = 600  # seconds, when spec.scheduling.gang.timeoutSeconds is unset
MAX_SCHEDULING_TIMEOUTS = 5  # scheduling timeouts before the job fails
DEFAULT_STALL_SECONDS = 600  # Stalled threshold without hang detection (half the hang timeout with it)
POLL_SECONDS = 5.0  # requeue while waiting for pods to terminate or start
UNSCHEDULABLE_RECHECK_SECONDS = 60.0  # nodes may be added: look again this often
GANG_RECHECK_SECONDS = 60.0  # a gang backend may be installed: look again as often as discovery is refreshed


@dataclass(frozen=True)
class Observed:
    """Facts the kube layer gathers for one reconcile (plain data; no client objects)."""

    pods: tuple[PodFacts, ...] = ()  # every worker pod of the job, any attempt
    nodes: Mapping[str, NodeFacts] | None = None  # node name -> readiness; None = unknown
    node_allocatable: Mapping[str, Mapping[str, str]] | None = None  # node -> status.allocatable; None = unknown
    progress: ProgressReport | None = None  # rank 0's report from the progress Lease
    lease_renew_time: str | None = None  # the Lease's spec.renewTime (the heartbeat)
    gang_object: Mapping[str, Any] | None = None  # the current attempt's gang object, as read
    served: frozenset[str] | None = None  # "group/version/plural" from discovery (gang auto, availability); None = unknown
    last_failure: LastFailure | None = None  # overrides status.lastFailure (tests); see failures.LastFailure
    foreign_children: tuple[str, ...] = ()  # "Kind/name" of children another owner controls
    refusal: Refusal | None = None  # the API server refused a child this reconcile (see failures.classify_refusal)
    # the cluster's policy the operator was started with (llmops operator --*-grace-seconds)
    startup_grace_seconds: float = STARTUP_GRACE_SECONDS
    node_lost_grace_seconds: float = NODE_LOST_GRACE_SECONDS

    @classmethod
    def from_objects(
        cls,
        pods: Sequence[Mapping[str, Any]] = (),
        nodes: Sequence[Mapping[str, Any]] | None = None,
        lease: Mapping[str, Any] | None = None,
        gang_object: Mapping[str, Any] | None = None,
        served: Iterable[str] | None = None,
        last_failure: LastFailure | None = None,
        foreign_children: Iterable[str] = (),
        refusal: Refusal | None = None,
        startup_grace_seconds: float = STARTUP_GRACE_SECONDS,
        node_lost_grace_seconds: float = NODE_LOST_GRACE_SECONDS,
    ) -> Observed:
        """Facts from raw API objects as the kube layer lists them (pure parsing).

        ``nodes`` None means node facts are unknown (e.g. no RBAC to list nodes): the node-lost
        and fits rules are then off. A progress annotation that does not parse is ignored (a
        pod can write only that Lease, and a bad report must not break the reconcile)."""
        node_facts = None
        alloc = None
        if nodes is not None:
            node_facts, alloc = {}, {}
            for n in nodes:
                name = (n.get("metadata") or {}).get("name", "")
                st = n.get("status") or {}
                ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
                node_facts[name] = NodeFacts(ready is not None and ready.get("status") == "True", (ready or {}).get("lastTransitionTime"))
                alloc[name] = {k: str(v) for k, v in (st.get("allocatable") or {}).items()}
        report = None
        renew = None
        if lease is not None:
            renew = (lease.get("spec") or {}).get("renewTime")
            raw = ((lease.get("metadata") or {}).get("annotations") or {}).get(PROGRESS_ANNOTATION)
            if raw:
                try:
                    report = ProgressReport.model_validate_json(raw)
                except ValueError:
                    report = None
        return cls(
            pods=tuple(PodFacts.from_pod(p) for p in pods),
            nodes=node_facts,
            node_allocatable=alloc,
            progress=report,
            lease_renew_time=renew,
            gang_object=gang_object,
            served=None if served is None else frozenset(served),
            last_failure=last_failure,
            foreign_children=tuple(sorted(foreign_children)),
            refusal=refusal,
            startup_grace_seconds=startup_grace_seconds,
            node_lost_grace_seconds=node_lost_grace_seconds,
        )


@dataclass(frozen=True)
class Plan:
    """What the reconcile should do."""

    status: TrainingJobStatus
    desired: list[dict[str, Any]]  # apply these; prune every other owned child
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()
    last_failure: LastFailure | None = None  # to remember for the next attempt
    verdict: Verdict | None = None  # the classifier's verdict this reconcile (for metrics/logs)


# --- small helpers -----------------------------------------------------------------------------


def _cond(type_: str, true: bool, reason: str, message: str, generation: int | None) -> Condition:
    return Condition(
        type=type_,
        status=ConditionStatus.TRUE if true else ConditionStatus.FALSE,
        reason=reason,
        message=message[:32768],
        observed_generation=generation,
    )


def _merge(previous: list[Condition], wanted: list[Condition], now: dt.datetime, force_flip: frozenset[str] = frozenset()) -> list[Condition]:
    """Merge ``wanted`` into ``previous``: times move only on flips (or for types in
    ``force_flip``: a new restart is a new transition even when Restarting stays True).
    Types not in ``wanted`` are kept; the list is ordered by the documented type order."""
    out = [c for c in previous if c.type not in force_flip]
    for c in wanted:
        out = C.set_condition(out, c, now)
    order = {t: i for i, t in enumerate(C.JOB_TYPES)}
    return sorted(out, key=lambda c: (order.get(c.type, len(order)), c.type))


def _backoff(initial: int, maximum: int, n: int) -> float:
    """Delay before the n-th retry (n >= 1): initial * 2^(n-1), capped."""
    if n <= 0:
        return 0.0
    return float(min(maximum, initial * (2 ** min(n - 1, 30))))


def _progress(report: ProgressReport | None, total: int | None, resumed_from: int | None, previous: Progress | None) -> Progress | None:
    if report is None:
        return previous
    total = report.total_steps or total
    eta = None
    beat = parse_time(report.heartbeat)
    first = parse_time(report.first_step_time)
    base = resumed_from or 0
    if total and beat and first and report.step > base and beat > first:
        # steps done since this attempt's first step over the time they took
        rate = (report.step - base) / (beat - first).total_seconds()
        if rate > 0:
            eta = rfc3339(beat + dt.timedelta(seconds=max(0, total - report.step) / rate))
    return Progress(
        step=report.step,
        total_steps=total,
        loss=report.loss,
        tokens_per_second=report.tokens_per_second,
        eta=eta,
        last_heartbeat=report.heartbeat,
    )


def _heartbeat(observed: Observed, attempt: int) -> dt.datetime | None:
    """Newest heartbeat of the current attempt (a report from an older attempt does not count)."""
    times = []
    if observed.progress is not None and observed.progress.attempt == attempt:
        times.append(parse_time(observed.progress.heartbeat))
        if observed.lease_renew_time:
            times.append(parse_time(observed.lease_renew_time))
    return max((t for t in times if t is not None), default=None)


# --- the plan ----------------------------------------------------------------------------------


def plan(job: TrainingJob, observed: Observed, now: dt.datetime) -> Plan:
    """Decide the reconcile (see the module essay)."""
    spec = job.spec
    prev = job.status
    gen = job.metadata.generation
    now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)

    backend = prev.gang.backend if prev.gang and prev.gang.backend != GangBackend.AUTO else choose(spec.scheduling.gang.backend, observed.served or ())
    # An attempt number the status did not record yet (the operator died between creating
    # pods and writing status) is adopted, never recreated.
    attempt = max([prev.attempt, *(p.attempt for p in observed.pods)])
    restarts = prev.restarts.model_copy(deep=True)
    checkpoint = prev.checkpoint
    if observed.progress is not None and observed.progress.checkpoint is not None:
        ck = observed.progress.checkpoint
        if checkpoint is None or ck.step >= checkpoint.step:
            checkpoint = CheckpointStatus(id=ck.id, step=ck.step, uri=ck.uri, time=ck.time)
    resumed_from = prev.resumed_from_step
    resumed_id = prev.resumed_from_checkpoint
    start_time = prev.start_time
    completion_time = prev.completion_time
    last_failure = observed.last_failure or _remembered(prev)
    events: list[Event] = []
    wanted: list[Condition] = []
    force_flip: set[str] = set()
    requeue: float | None = None
    include_workers = False
    verdict: Verdict | None = None

    cur_pods = tuple(sorted((p for p in observed.pods if p.attempt == attempt), key=lambda p: p.rank))
    old_live = tuple(p for p in observed.pods if p.attempt != attempt and not p.terminal)
    finished = C.is_true(prev.conditions, C.SUCCEEDED) or C.is_true(prev.conditions, C.FAILED)

    def final(kind: str, reason: str, message: str) -> None:
        nonlocal completion_time
        completion_time = completion_time or rfc3339(now)
        wanted.extend(
            [
                _cond(kind, True, reason, message, gen),
                _cond(C.RUNNING, False, reason, message, gen),
                _cond(C.QUEUED, False, reason, message, gen),
                _cond(C.RESTARTING, False, reason, message, gen),
            ]
        )

    def running_since() -> dt.datetime | None:
        c = C.find_condition(prev.conditions, C.RUNNING)
        return parse_time(c.last_transition_time) if c and c.status == ConditionStatus.TRUE else None

    deadline = spec.run_policy.active_deadline_seconds
    started = parse_time(start_time)

    if finished:
        pass  # final: keep conditions; pods go (prune), TTL below
    elif spec.run_policy.suspend:
        was = C.is_true(prev.conditions, C.SUSPENDED)
        if not was and (cur_pods or C.find_condition(prev.conditions, C.RUNNING) is not None):
            attempt += 1  # resume starts a fresh attempt; the old pods are pruned
        msg = "spec.runPolicy.suspend is true: worker pods deleted, checkpoint kept"
        wanted += [
            _cond(C.SUSPENDED, True, C.SUSPENDED_BY_USER, msg, gen),
            _cond(C.RUNNING, False, C.SUSPENDED_BY_USER, msg, gen),
            _cond(C.QUEUED, False, C.SUSPENDED_BY_USER, msg, gen),
            _cond(C.RESTARTING, False, C.SUSPENDED_BY_USER, msg, gen),
        ]
        if old_live or cur_pods:
            requeue = POLL_SECONDS
    elif deadline is not None and started is not None and (now - started).total_seconds() >= deadline:
        final(C.FAILED, C.DEADLINE_EXCEEDED, f"activeDeadlineSeconds ({deadline}) passed since {start_time}")
    elif observed.refusal is not None and observed.refusal.permanent:
        # Only a new spec can pass (Pod Security: silently dropping IPC_LOCK would break RDMA
        # later; a 422 on a child we built). The API's words, verbatim, in the message.
        final(C.FAILED, observed.refusal.reason, observed.refusal.message)
    else:
        if C.find_condition(prev.conditions, C.SUSPENDED) is not None:
            # Resumed stays the reason once set (no flip to NotSuspended on the next reconcile: churn).
            was_suspended = C.find_condition(prev.conditions, C.SUSPENDED)
            reason = C.RESUMED if C.is_true(prev.conditions, C.SUSPENDED) else (was_suspended.reason or NOT_SUSPENDED)
            wanted.append(_cond(C.SUSPENDED, False, reason, was_suspended.message if reason == was_suspended.reason else "", gen))
        restarting = C.is_true(prev.conditions, C.RESTARTING)
        restart_cond = C.find_condition(prev.conditions, C.RESTARTING)

        verdict = classify(
            ClassifyInput(
                pods=cur_pods,
                now=now,
                nodes=observed.nodes,
                heartbeat=_heartbeat(observed, attempt),
                running_since=running_since(),
                hang_timeout_seconds=spec.failure_policy.hang_timeout_seconds,
                progress_step=observed.progress.step if observed.progress is not None and observed.progress.attempt == attempt else None,
                last_failure=last_failure,
                generation=gen,
                startup_grace_seconds=observed.startup_grace_seconds,
                node_lost_grace_seconds=observed.node_lost_grace_seconds,
                gang_size=spec.nodes,
            )
        ) if cur_pods or running_since() is not None else Verdict(Action.NONE)

        if verdict.action == Action.SUCCEED:
            final(C.SUCCEEDED, C.COMPLETED, verdict.message)
            events.append(Event("Normal", C.COMPLETED, verdict.message))
        elif verdict.action == Action.FAIL_NOW:
            final(C.FAILED, verdict.reason or C.FAILED, verdict.message)
            last_failure = LastFailure(verdict.reason or "", attempt, verdict.step, gen)
        elif verdict.action in (Action.RESTART_GANG, Action.RESTART_NOT_COUNTED):
            reason = verdict.reason or "Unknown"
            last_failure = LastFailure(reason, attempt, verdict.step, gen)
            if verdict.counted and restarts.counted >= spec.failure_policy.max_restarts:
                final(C.FAILED, C.MAX_RESTARTS_EXCEEDED, f"{restarts.counted} counted restarts used (maxRestarts {spec.failure_policy.max_restarts}); last cause {reason}: {verdict.message}")
            else:
                attempt += 1
                restarts = Restarts(
                    total=restarts.total + 1,
                    counted=restarts.counted + (1 if verdict.counted else 0),
                    by_cause={**restarts.by_cause, reason: restarts.by_cause.get(reason, 0) + 1},
                )
                counted_note = "counted" if verdict.counted else "not counted against maxRestarts"
                msg = f"{verdict.message}; restarting the gang as attempt {attempt} ({counted_note})"
                wanted += [
                    _cond(C.RESTARTING, True, reason, msg, gen),
                    _cond(C.RUNNING, False, reason, msg, gen),
                ]
                force_flip.add(C.RESTARTING)
                events.append(Event("Warning", reason, msg))
                requeue = POLL_SECONDS
        else:
            mode, requeue = _place(
                job, observed, now, attempt, backend, cur_pods, old_live, restarting, restart_cond, restarts, wanted, events, gen
            )
            include_workers = mode == "run"
            if mode == "timeout":
                force_flip.add(C.QUEUED)  # the backoff is measured from this transition
                attempt += 1
                n_timeouts = restarts.by_cause.get(C.SCHEDULING_TIMEOUT, 0) + 1
                restarts = restarts.model_copy(update={"by_cause": {**restarts.by_cause, C.SCHEDULING_TIMEOUT: n_timeouts}})
                if n_timeouts >= MAX_SCHEDULING_TIMEOUTS:
                    wanted.clear()
                    events.clear()
                    final(C.FAILED, C.SCHEDULING_TIMEOUT, f"the gang was not fully running within the scheduling timeout {n_timeouts} times; giving up")
                    requeue = None
            elif include_workers and not cur_pods:
                # Creating a new attempt now: it resumes from the newest committed checkpoint.
                resumed_from = checkpoint.step if checkpoint else None
                resumed_id = checkpoint.id if checkpoint else None
            if verdict.action == Action.NONE and verdict.reason and include_workers:
                # A tolerated problem (image pull, missing Secret) inside its grace: say so.
                wanted.append(_cond(C.QUEUED, True, verdict.reason, verdict.message, gen))
            refusal = observed.refusal
            if refusal is not None and include_workers and not C.is_true(wanted, C.RUNNING):
                # A retried refusal (a missing ServiceAccount, quota): the job waits for the
                # cluster to change; the handler re-applies with a growing delay.
                wanted += [_cond(C.QUEUED, True, refusal.reason, refusal.message, gen),
                           _cond(C.RUNNING, False, refusal.reason, refusal.message, gen)]
            if C.is_true([*wanted], C.RUNNING) and start_time is None:
                start_time = rfc3339(now)

    conditions = _merge(prev.conditions, wanted, now, frozenset(force_flip))
    conditions = _health(conditions, job, observed, attempt, now, gen)
    if observed.foreign_children:
        # Never adopted or overwritten: the user decides (shown on Queued, which is what blocks).
        names = ", ".join(sorted(observed.foreign_children))
        conditions = _merge(conditions, [_cond(C.QUEUED, True, FOREIGN_CHILD, f"children with our names belong to another owner: {names}", gen)], now)

    done = any(c.type in (C.SUCCEEDED, C.FAILED) and c.status == ConditionStatus.TRUE for c in conditions)
    # A report left on the Lease by an older attempt is not this attempt's progress.
    report = observed.progress if observed.progress is not None and observed.progress.attempt == attempt else None
    progress_model = _progress(report, spec.total_steps, resumed_from, prev.progress)

    status = TrainingJobStatus(
        conditions=conditions,
        observed_generation=gen,
        attempt=attempt,
        restarts=restarts,
        progress=progress_model,
        checkpoint=checkpoint,
        resumed_from_step=resumed_from,
        resumed_from_checkpoint=resumed_id,
        gang=GangStatus(backend=backend, name=gang_name(job.metadata.name, attempt) if backend not in (GangBackend.NONE,) else None),
        start_time=start_time,
        completion_time=completion_time,
        **_remember(last_failure),
    )
    events += _transition_events(prev.conditions, conditions, already={e.reason for e in events})

    # Children: the base objects always (until TTL), workers only when placing/running.
    ttl = spec.run_policy.ttl_seconds_after_finished
    desired: list[dict[str, Any]]
    if done and ttl is not None and completion_time is not None:
        expires = parse_time(completion_time) + dt.timedelta(seconds=ttl)
        if now >= expires:
            desired = []  # children only; the Git-owned CR stays
        else:
            desired = _build(job, attempt, backend, resumed_id, False)
            requeue = (expires - now).total_seconds()
    else:
        desired = _build(job, attempt, backend, resumed_id, bool(include_workers) and not done)
        if done:
            requeue = POLL_SECONDS if any(not p.terminal for p in observed.pods) else None
    started = parse_time(start_time)  # set by this reconcile too, when the job just started running
    if not done and deadline is not None and started is not None:
        # Wake up at the deadline even when a longer poll (or none) was planned: nothing else
        # triggers a reconcile when a running job's time is up.
        left = max(1.0, deadline - (now - started).total_seconds())
        requeue = left if requeue is None else min(requeue, left)
    return Plan(status=status, desired=desired, requeue_after=requeue, events=tuple(events), last_failure=last_failure, verdict=verdict)


def _remembered(prev: TrainingJobStatus) -> LastFailure | None:
    """The last failure from status, once TrainingJobStatus carries ``lastFailure``.

    TODO(api): TrainingJobStatus needs ``last_failure`` {reason, attempt, step, generation};
    until it exists this returns None and the kube layer may pass Observed.last_failure."""
    rec = getattr(prev, "last_failure", None)
    if rec is None:
        return None
    return LastFailure(rec.reason, rec.attempt, getattr(rec, "step", None), getattr(rec, "generation", None))


def _remember(last: LastFailure | None) -> dict[str, Any]:
    """Status keyword for the last failure, when the status model has the field."""
    if last is None or "last_failure" not in TrainingJobStatus.model_fields:
        return {}
    return {"last_failure": {"reason": last.reason, "attempt": last.attempt, "step": last.step, "generation": last.generation}}


def _build(job: TrainingJob, attempt: int, backend: GangBackend, resume_from: str | None, workers: bool) -> list[dict[str, Any]]:
    return build_training_children(
        job,
        BuildInputs(attempt=attempt, backend=backend, resume_from=resume_from, include_workers=workers),
    )


def _place(  # noqa: PLR0913
    job: TrainingJob,
    observed: Observed,
    now: dt.datetime,
    attempt: int,
    backend: GangBackend,
    cur_pods: tuple[PodFacts, ...],
    old_live: tuple[PodFacts, ...],
    restarting: bool,
    restart_cond: Condition | None,
    restarts: Restarts,
    wanted: list[Condition],
    events: list[Event],
    gen: int | None,
) -> tuple[str, float | None]:
    """Placing/running the current attempt; appends its conditions to ``wanted``.

    Returns (mode, requeue_after): mode "run" = the attempt's pods are desired, "hold" =
    no pods now (waiting or unschedulable), "timeout" = drop this attempt (scheduling timeout)."""
    spec = job.spec
    n = spec.nodes
    # 1. Never a second pod for a rank while an older one is not terminal.
    if old_live:
        stuck = []
        for p in sorted(old_live, key=lambda p: p.name):
            end = parse_time(p.deletion_timestamp)
            note = p.name
            if end is not None and now > end:
                node = (observed.nodes or {}).get(p.node_name or "")
                where = f" on NotReady node {p.node_name}" if node is not None and not node.ready else ""
                note += f" (Terminating past its grace period{where}; an admin may taint the node node.kubernetes.io/out-of-service or force-delete the pod)"
            stuck.append(note)
        msg = f"waiting for {len(old_live)} pod(s) of an earlier attempt to terminate before attempt {attempt} starts: " + ", ".join(stuck)
        wanted.append(_cond(C.RESTARTING if restarting else C.QUEUED, True, WAITING_FOR_TERMINATING_PODS, msg, gen))
        wanted.append(_cond(C.RUNNING, False, WAITING_FOR_TERMINATING_PODS, msg, gen))
        return "hold", POLL_SECONDS
    # 2. Backoff before a restarted attempt's pods are created.
    if not cur_pods and restarting and restart_cond is not None:
        since = parse_time(restart_cond.last_transition_time)
        delay = _backoff(spec.failure_policy.backoff.initial_seconds, spec.failure_policy.backoff.max_seconds, restarts.total)
        if since is not None and (now - since).total_seconds() < delay:
            left = delay - (now - since).total_seconds()
            wanted.append(_cond(C.RUNNING, False, BACKOFF, f"next attempt {attempt} starts in {int(left)}s (restart backoff)", gen))
            return "hold", max(0.5, left)
    timeouts = restarts.by_cause.get(C.SCHEDULING_TIMEOUT, 0)
    queued_cond = C.find_condition(job.status.conditions, C.QUEUED)
    if not cur_pods and timeouts and queued_cond is not None and queued_cond.reason == C.SCHEDULING_TIMEOUT:
        since = parse_time(queued_cond.last_transition_time)
        delay = _backoff(spec.failure_policy.backoff.initial_seconds, spec.failure_policy.backoff.max_seconds, timeouts)
        if since is not None and (now - since).total_seconds() < delay:
            return "hold", max(0.5, delay - (now - since).total_seconds())
    # 3. A request no node can hold: report at once, create nothing.
    if observed.node_allocatable is not None and not cur_pods:
        found = misfits(per_pod_requests(job), observed.node_allocatable)
        if found:
            msg = unschedulable_message(found)
            wanted.append(_cond(C.QUEUED, True, UNSCHEDULABLE, msg, gen))
            wanted.append(_cond(C.RUNNING, False, UNSCHEDULABLE, msg, gen))
            return "hold", UNSCHEDULABLE_RECHECK_SECONDS
    # 4. An explicitly requested gang backend this cluster does not serve: say so, create nothing
    #    (Volcano's PodGroup could not be applied; Kueue's gated pods would wait forever).
    why = unavailable(backend, observed.served) if observed.served is not None and not cur_pods else None
    if why:
        wanted.append(_cond(C.QUEUED, True, GANG_BACKEND_UNAVAILABLE, why, gen))
        wanted.append(_cond(C.RUNNING, False, GANG_BACKEND_UNAVAILABLE, why, gen))
        return "hold", GANG_RECHECK_SECONDS
    # 5. Placement of the current attempt. Workers that exited 0 before rank 0 are done, not
    # pending: the job is ending, and it never shows Queued again (rank 0's exit decides).
    running = [p for p in cur_pods if p.phase == "Running"]
    finished = [p for p in cur_pods if p.phase == "Succeeded"]
    if running and len(running) + len(finished) == n and len(cur_pods) == n:
        if finished:
            reason, msg = C.WORKERS_FINISHING, f"{len(finished)} of {n} worker pods finished, waiting for rank 0 (attempt {attempt})"
        else:
            reason, msg = C.ALL_PODS_RUNNING, f"all {n} worker pods are running (attempt {attempt})"
        wanted += [
            _cond(C.QUEUED, False, reason, msg, gen),
            _cond(C.RUNNING, True, reason, msg, gen),
        ]
        if restarting:
            wanted.append(_cond(C.RESTARTING, False, reason, msg, gen))
        hang = spec.failure_policy.hang_timeout_seconds
        # A missing heartbeat wakes nobody: look again at least this often while running.
        return "run", float(min(hang / 4, 60)) if hang else 60.0
    pod_dicts = [_pod_view(p) for p in cur_pods]
    placement = backend_for(backend).placement(observed.gang_object, pod_dicts) if cur_pods else Placement.PENDING
    if placement == Placement.WAITING_FOR_QUOTA:
        reason, what = C.WAITING_FOR_QUOTA, "waiting for queue quota"
    elif not cur_pods or placement == Placement.PENDING:
        reason, what = C.GANG_PENDING, "waiting for the whole gang to be placed"
    else:
        reason, what = C.POD_PENDING, "gang placed, waiting for containers to start"
    # Each reason says what is awaited, so the Events of a start (GangPending -> PodPending ->
    # AllPodsRunning) read as distinct steps in `kubectl describe`.
    msg = f"{what}: {len(running)}/{n} worker pods running (attempt {attempt}, gang backend {backend.value})"
    unsched = [c.message for p in cur_pods for c in p.conditions if c.type == "PodScheduled" and c.status == "False" and c.message]
    if unsched:
        msg += f"; scheduler: {unsched[0]}"
    # 6. The operator's own all-or-nothing timeout (not while a queue holds the gang: gated pods hold nothing).
    timeout = spec.scheduling.gang.timeout_seconds or DEFAULT_SCHEDULING_TIMEOUT
    created = [parse_time(p.created) for p in cur_pods if p.created]
    if created and placement != Placement.WAITING_FOR_QUOTA and (now - min(created)).total_seconds() >= timeout:
        msg = f"the gang was not fully running within {timeout}s ({len(running)}/{n} running); all pods deleted, retrying after backoff"
        wanted += [_cond(C.QUEUED, True, C.SCHEDULING_TIMEOUT, msg, gen), _cond(C.RUNNING, False, C.SCHEDULING_TIMEOUT, msg, gen)]
        events.append(Event("Warning", C.SCHEDULING_TIMEOUT, msg))
        return "timeout", POLL_SECONDS
    wanted += [_cond(C.QUEUED, True, reason, msg, gen), _cond(C.RUNNING, False, reason, msg, gen)]
    return "run", POLL_SECONDS


def _pod_view(p: PodFacts) -> dict[str, Any]:
    """The few pod fields the gang backends read, rebuilt from facts."""
    spec: dict[str, Any] = {}
    if p.node_name:
        spec["nodeName"] = p.node_name
    gated = any(c.type == "PodScheduled" and c.reason == "SchedulingGated" for c in p.conditions)
    if gated:
        from llmops.scheduling.backends import KUEUE_GATE

        spec["schedulingGates"] = [{"name": KUEUE_GATE}]
    return {
        "spec": spec,
        "status": {"conditions": [{"type": c.type, "status": c.status} for c in p.conditions]},
    }


def _health(conditions: list[Condition], job: TrainingJob, observed: Observed, attempt: int, now: dt.datetime, gen: int | None) -> list[Condition]:
    """Stalled and CheckpointFailing: present when True, set False once recovered."""
    wanted: list[Condition] = []
    running = C.is_true(conditions, C.RUNNING)
    hang = job.spec.failure_policy.hang_timeout_seconds
    threshold = hang / 2 if hang else DEFAULT_STALL_SECONDS
    beat = _heartbeat(observed, attempt)
    stalled = running and beat is not None and (now - beat).total_seconds() >= threshold
    if stalled:
        age = int((now - beat).total_seconds())
        step = observed.progress.step if observed.progress else 0
        wanted.append(_cond(C.STALLED, True, HEARTBEAT_STALE, f"no heartbeat from rank 0 for {age}s at step {step}", gen))
    elif C.find_condition(conditions, C.STALLED) is not None:
        wanted.append(_cond(C.STALLED, False, HEARTBEAT_FRESH, "", gen))
    rep = observed.progress
    if rep is not None and rep.checkpoint_failing_since:
        last = rep.checkpoint.time if rep.checkpoint else None
        msg = f"checkpoint saves failing since {rep.checkpoint_failing_since}: {rep.checkpoint_error or 'storage error'}"
        if last:
            age = parse_time(last)
            msg += f"; last good checkpoint {rep.checkpoint.id} at {last}" + (f" ({int((now - age).total_seconds())}s old)" if age else "")
        wanted.append(_cond(C.CHECKPOINT_FAILING, True, C.CHECKPOINT_STORAGE_ERROR, msg, gen))
    elif C.find_condition(conditions, C.CHECKPOINT_FAILING) is not None and rep is not None:
        wanted.append(_cond(C.CHECKPOINT_FAILING, False, CHECKPOINT_HEALTHY, "", gen))
    return _merge(conditions, wanted, now) if wanted else conditions


def _transition_events(before: list[Condition], after: list[Condition], already: set[str]) -> list[Event]:
    """One event per condition that became True (or changed reason while True)."""
    out = []
    old = {c.type: c for c in before}
    for c in after:
        if c.status != ConditionStatus.TRUE or c.type == C.RESTARTING:  # restarts emit their own event
            continue
        o = old.get(c.type)
        if o is not None and o.status == ConditionStatus.TRUE and o.reason == c.reason:
            continue
        if c.reason in already:
            continue
        warn = c.type in (C.FAILED, C.STALLED, C.CHECKPOINT_FAILING) or c.reason in (UNSCHEDULABLE, C.SCHEDULING_TIMEOUT, FOREIGN_CHILD, *REFUSAL_REASONS)
        out.append(Event("Warning" if warn else "Normal", c.reason, f"{c.type}: {c.message}" if c.message else c.type))
    return out


def compute_status(job: TrainingJob, observed: Observed, now: dt.datetime) -> TrainingJobStatus:
    """The whole status for this reconcile (pure; the status part of ``plan``)."""
    return plan(job, observed, now).status


# --- measurements for the operator's metrics (pure; the handler records them) ----------------


def time_to_first_step(report: ProgressReport | None, pods: Sequence[PodFacts], attempt: int) -> float | None:
    """Seconds from the creation of the attempt's first worker pod to the end of its first step.

    None until rank 0 of ``attempt`` reported ``firstStepTime`` and the attempt's pods are seen
    (scheduling, image pull, rendezvous, model build and checkpoint load are all inside it)."""
    if report is None or report.attempt != attempt or not report.first_step_time:
        return None
    created = [t for p in pods if p.attempt == attempt and (t := parse_time(p.created)) is not None]
    first = parse_time(report.first_step_time)
    if not created or first is None:
        return None
    return max(0.0, (first - min(created)).total_seconds())


def goodput(report: ProgressReport | None, resumed_from: int | None, start_time: str | None) -> float | None:
    """Useful step time / wall time since the job started, in [0, 1] (see docs/trainingjob.md).

    useful step time = ``step`` (the job's net progress: steps redone after a restart count
    once) x the current attempt's mean step time, measured between its first step's end and the
    latest heartbeat; wall time = latest heartbeat - ``status.startTime``. Queueing after the
    start, restarts, lost work since the last checkpoint, startup and checkpoint stalls all
    lower it. None while the current attempt has fewer than two steps to measure."""
    if report is None or not start_time or not report.first_step_time:
        return None
    first, beat, start = parse_time(report.first_step_time), parse_time(report.heartbeat), parse_time(start_time)
    if first is None or beat is None or start is None:
        return None
    measured = report.step - (resumed_from or 0) - 1  # steps between the first one's end and the heartbeat
    wall = (beat - start).total_seconds()
    if measured < 1 or wall <= 0 or beat <= first:
        return None
    step_seconds = (beat - first).total_seconds() / measured
    return max(0.0, min(1.0, report.step * step_seconds / wall))
