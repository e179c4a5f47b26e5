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

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llmops.api import conditions as C
from llmops.api.conditions import Condition, ConditionStatus, parse_time, rfc3339
from llmops.api.progress import ProgressReport
from llmops.api.scheduling import GangBackend
from llmops.api.training import (
    CheckpointStatus,
    GangStatus,
    LastFailure,
    Progress,
    Restarts,
    TrainingJob,
    TrainingJobStatus,
)
from llmops.builders.training import BuildInputs, build_training_children, gang_name, per_pod_requests
from llmops.failures import (
    GANG_BACKEND_UNAVAILABLE,
    NODE_LOST_GRACE_SECONDS,
    REFUSAL_REASONS,
    STARTUP_GRACE_SECONDS,
    WAITING_FOR_TERMINATING_PODS,
    Action,
    ClassifyInput,
    Refusal,
    Verdict,
    classify,
)
from llmops.observe.leases import progress_report
from llmops.observe.pods import NodeFacts, PodFacts, node_facts
from llmops.plan.conditions import Event, changed, merged
from llmops.plan.conditions import cond as _cond  # one name per planner: tests/plan/conftest.py checks each one's reasons
from llmops.scheduling import Placement, backend_for, choose, misfits, unavailable, unschedulable_message

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
    last_failure: LastFailure | None = None  # overrides status.lastFailure (tests); see api.training.LastFailure
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
        node_map, alloc = node_facts(nodes) if nodes is not None else (None, None)
        report = progress_report(lease)
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        return cls(
            pods=tuple(PodFacts.from_pod(p) for p in pods),
            nodes=node_map,
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
    creates: tuple[dict[str, Any], ...] = ()  # objects to create that are not children (none for this kind)


# --- small helpers -----------------------------------------------------------------------------


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
    """Decide the reconcile (see the module essay): a lifecycle phase, then the status and children."""
    now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    start = _Start.of(job, observed)
    phase = _lifecycle(job, observed, now, start)
    return _assemble(job, observed, now, start, phase)


@dataclass(frozen=True)
class _Start:
    """The bookkeeping a reconcile starts from (the stored status, plus what the pods show)."""

    backend: GangBackend
    attempt: int
    restarts: Restarts
    checkpoint: CheckpointStatus | None
    last_failure: LastFailure | None
    cur_pods: tuple[PodFacts, ...]  # the current attempt's pods, by rank
    old_live: tuple[PodFacts, ...]  # an older attempt's pods that are not terminal yet

    @classmethod
    def of(cls, job: TrainingJob, observed: Observed) -> _Start:
        prev = job.status
        backend = prev.gang.backend if prev.gang and prev.gang.backend != GangBackend.AUTO else choose(
            job.spec.scheduling.gang.backend, observed.served or ())
        # An attempt number the status did not record yet (the operator died between creating
        # pods and writing status) is adopted, never recreated.
        attempt = max([prev.attempt, *(p.attempt for p in observed.pods)])
        checkpoint = prev.checkpoint
        ck = observed.progress.checkpoint if observed.progress is not None else None
        if ck is not None and (checkpoint is None or ck.step >= checkpoint.step):
            checkpoint = CheckpointStatus(id=ck.id, step=ck.step, uri=ck.uri, time=ck.time)
        last = observed.last_failure or prev.last_failure
        return cls(backend=backend, attempt=attempt, restarts=prev.restarts.model_copy(deep=True), checkpoint=checkpoint, last_failure=last,
                   cur_pods=tuple(sorted((p for p in observed.pods if p.attempt == attempt), key=lambda p: p.rank)),
                   old_live=tuple(p for p in observed.pods if p.attempt != attempt and not p.terminal))


@dataclass(frozen=True)
class _Phase:
    """What the lifecycle decided this reconcile: conditions to set, Events, and the attempt's
    bookkeeping after it."""

    attempt: int
    restarts: Restarts
    last_failure: LastFailure | None
    wanted: tuple[Condition, ...] = ()
    events: tuple[Event, ...] = ()
    force_flip: frozenset[str] = frozenset()  # types whose transition time moves even if the status stays
    requeue: float | None = None
    workers: bool = False  # the current attempt's pods are desired
    final: bool = False  # Succeeded or Failed was decided now (the completion time is now)
    started: bool = False  # a new attempt's pods are created now: it resumes from the newest checkpoint
    verdict: Verdict | None = None


def _final(start: _Start, kind: str, reason: str, message: str, gen: int | None, **changes: Any) -> _Phase:
    wanted = tuple(_cond(t, t == kind, reason, message, gen) for t in (kind, C.RUNNING, C.QUEUED, C.RESTARTING))
    return _Phase(**{"attempt": start.attempt, "restarts": start.restarts, "last_failure": start.last_failure,
                     "wanted": wanted, "final": True, **changes})


def _lifecycle(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start) -> _Phase:
    spec, prev, gen = job.spec, job.status, job.metadata.generation
    deadline, started = spec.run_policy.active_deadline_seconds, parse_time(prev.start_time)
    if C.is_true(prev.conditions, C.SUCCEEDED) or C.is_true(prev.conditions, C.FAILED):
        return _Phase(start.attempt, start.restarts, start.last_failure)  # final: conditions kept; pods go (prune), TTL
    if spec.run_policy.suspend:
        return _suspended(job, start)
    if deadline is not None and started is not None and (now - started).total_seconds() >= deadline:
        return _final(start, C.FAILED, C.DEADLINE_EXCEEDED, f"activeDeadlineSeconds ({deadline}) passed since {prev.start_time}", gen)
    if observed.refusal is not None and observed.refusal.permanent:
        # Only a new spec can pass (Pod Security: silently dropping IPC_LOCK would break RDMA
        # later; a 422 on a child we built). The API's words, verbatim, in the message.
        return _final(start, C.FAILED, observed.refusal.reason, observed.refusal.message, gen)
    resumed = _resumed_condition(prev, gen)
    verdict = _classify(job, observed, now, start)
    if verdict.action in (Action.SUCCEED, Action.FAIL_NOW, Action.RESTART_GANG, Action.RESTART_NOT_COUNTED):
        phase = _on_verdict(job, start, verdict)
    else:
        phase = _placing(job, observed, now, start, verdict)
    return dataclasses.replace(phase, wanted=(*resumed, *phase.wanted), verdict=verdict)


def _suspended(job: TrainingJob, start: _Start) -> _Phase:
    prev, gen = job.status, job.metadata.generation
    attempt = start.attempt
    if not C.is_true(prev.conditions, C.SUSPENDED) and (start.cur_pods or C.find_condition(prev.conditions, C.RUNNING) is not None):
        attempt += 1  # resume starts a fresh attempt; the old pods are pruned
    msg = "spec.runPolicy.suspend is true: worker pods deleted, checkpoint kept"
    wanted = (_cond(C.SUSPENDED, True, C.SUSPENDED_BY_USER, msg, gen),
              *(_cond(t, False, C.SUSPENDED_BY_USER, msg, gen) for t in (C.RUNNING, C.QUEUED, C.RESTARTING)))
    return _Phase(attempt, start.restarts, start.last_failure, wanted=wanted,
                  requeue=POLL_SECONDS if start.old_live or start.cur_pods else None)


def _resumed_condition(prev: TrainingJobStatus, gen: int | None) -> tuple[Condition, ...]:
    """Suspended=False once a suspended job resumed; Resumed stays the reason once set (no flip
    to NotSuspended on the next reconcile: churn)."""
    was = C.find_condition(prev.conditions, C.SUSPENDED)
    if was is None:
        return ()
    reason = C.RESUMED if was.status == ConditionStatus.TRUE else (was.reason or NOT_SUSPENDED)
    return (_cond(C.SUSPENDED, False, reason, was.message if reason == was.reason else "", gen),)


def _running_since(prev: TrainingJobStatus) -> dt.datetime | None:
    c = C.find_condition(prev.conditions, C.RUNNING)
    return parse_time(c.last_transition_time) if c and c.status == ConditionStatus.TRUE else None


def _classify(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start) -> Verdict:
    running_since = _running_since(job.status)
    if not start.cur_pods and running_since is None:
        return Verdict(Action.NONE)
    spec, attempt = job.spec, start.attempt
    return classify(ClassifyInput(
        pods=start.cur_pods, now=now, nodes=observed.nodes, heartbeat=_heartbeat(observed, attempt), running_since=running_since,
        hang_timeout_seconds=spec.failure_policy.hang_timeout_seconds,
        progress_step=observed.progress.step if observed.progress is not None and observed.progress.attempt == attempt else None,
        last_failure=start.last_failure, generation=job.metadata.generation, startup_grace_seconds=observed.startup_grace_seconds,
        node_lost_grace_seconds=observed.node_lost_grace_seconds, gang_size=spec.nodes,
    ))


def _on_verdict(job: TrainingJob, start: _Start, verdict: Verdict) -> _Phase:
    """Succeed, fail, or restart the gang as the next attempt (a restart with maxRestarts used fails)."""
    gen, policy, restarts = job.metadata.generation, job.spec.failure_policy, start.restarts
    if verdict.action == Action.SUCCEED:
        return _final(start, C.SUCCEEDED, C.COMPLETED, verdict.message, gen, events=(Event("Normal", C.COMPLETED, verdict.message),))
    failure = LastFailure(reason=verdict.reason or ("" if verdict.action == Action.FAIL_NOW else "Unknown"), attempt=start.attempt,
                          step=verdict.step, generation=gen)
    if verdict.action == Action.FAIL_NOW:
        return _final(start, C.FAILED, verdict.reason or C.FAILED, verdict.message, gen, last_failure=failure)
    reason = failure.reason
    if verdict.counted and restarts.counted >= policy.max_restarts:
        return _final(start, C.FAILED, C.MAX_RESTARTS_EXCEEDED, f"{restarts.counted} counted restarts used (maxRestarts "
                      f"{policy.max_restarts}); last cause {reason}: {verdict.message}", gen, last_failure=failure)
    attempt = start.attempt + 1
    restarts = Restarts(total=restarts.total + 1, counted=restarts.counted + (1 if verdict.counted else 0),
                        by_cause={**restarts.by_cause, reason: restarts.by_cause.get(reason, 0) + 1})
    counted_note = "counted" if verdict.counted else "not counted against maxRestarts"
    msg = f"{verdict.message}; restarting the gang as attempt {attempt} ({counted_note})"
    return _Phase(attempt, restarts, failure,
                  wanted=(_cond(C.RESTARTING, True, reason, msg, gen), _cond(C.RUNNING, False, reason, msg, gen)),
                  events=(Event("Warning", reason, msg),), force_flip=frozenset({C.RESTARTING}), requeue=POLL_SECONDS)


def _placing(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start, verdict: Verdict) -> _Phase:
    """Place or run the current attempt (``_place``); a scheduling timeout drops the attempt."""
    gen, restarts = job.metadata.generation, start.restarts
    placed = _place(job, observed, now, start)
    if placed.mode == "timeout":
        n_timeouts = restarts.by_cause.get(C.SCHEDULING_TIMEOUT, 0) + 1
        restarts = restarts.model_copy(update={"by_cause": {**restarts.by_cause, C.SCHEDULING_TIMEOUT: n_timeouts}})
        if n_timeouts >= MAX_SCHEDULING_TIMEOUTS:
            return _final(start, C.FAILED, C.SCHEDULING_TIMEOUT, f"the gang was not fully running within the scheduling timeout "
                          f"{n_timeouts} times; giving up", gen, attempt=start.attempt + 1, restarts=restarts,
                          force_flip=frozenset({C.QUEUED}))
        # the backoff is measured from this transition
        return _Phase(start.attempt + 1, restarts, start.last_failure, wanted=placed.wanted, events=placed.events,
                      force_flip=frozenset({C.QUEUED}), requeue=placed.requeue)
    workers = placed.mode == "run"
    wanted = list(placed.wanted)
    if verdict.action == Action.NONE and verdict.reason and workers:
        # A tolerated problem (image pull, missing Secret) inside its grace: say so.
        wanted.append(_cond(C.QUEUED, True, verdict.reason, verdict.message, gen))
    refusal = observed.refusal
    if refusal is not None and workers and not C.is_true(wanted, C.RUNNING):
        # A retried refusal (a missing ServiceAccount, quota): the job waits for the cluster to
        # change; the handler re-applies with a growing delay.
        wanted += [_cond(C.QUEUED, True, refusal.reason, refusal.message, gen),
                   _cond(C.RUNNING, False, refusal.reason, refusal.message, gen)]
    return _Phase(start.attempt, restarts, start.last_failure, wanted=tuple(wanted), events=placed.events, requeue=placed.requeue,
                  workers=workers, started=workers and not start.cur_pods)


def _assemble(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start, phase: _Phase) -> Plan:
    """The status and children the phase leads to (health conditions, progress, Events, TTL, deadline)."""
    spec, prev, gen, attempt = job.spec, job.status, job.metadata.generation, phase.attempt
    resumed_from, resumed_id = prev.resumed_from_step, prev.resumed_from_checkpoint
    if phase.started:  # creating a new attempt now: it resumes from the newest committed checkpoint
        resumed_from, resumed_id = (start.checkpoint.step, start.checkpoint.id) if start.checkpoint else (None, None)
    start_time = prev.start_time or (rfc3339(now) if C.is_true(list(phase.wanted), C.RUNNING) else None)
    completion_time = prev.completion_time or (rfc3339(now) if phase.final else None)
    conditions = _health(merged(prev.conditions, phase.wanted, now, C.JOB_TYPES, phase.force_flip), job, observed, attempt, now, gen)
    if observed.foreign_children:
        # Never adopted or overwritten: the user decides (shown on Queued, which is what blocks).
        names = ", ".join(sorted(observed.foreign_children))
        foreign = _cond(C.QUEUED, True, FOREIGN_CHILD, f"children with our names belong to another owner: {names}", gen)
        conditions = merged(conditions, [foreign], now, C.JOB_TYPES)
    # A report left on the Lease by an older attempt is not this attempt's progress.
    report = observed.progress if observed.progress is not None and observed.progress.attempt == attempt else None
    last = phase.last_failure
    status = TrainingJobStatus(
        conditions=conditions, observed_generation=gen, attempt=attempt, restarts=phase.restarts,
        progress=_progress(report, spec.total_steps, resumed_from, prev.progress), checkpoint=start.checkpoint,
        resumed_from_step=resumed_from, resumed_from_checkpoint=resumed_id,
        gang=GangStatus(backend=start.backend, name=gang_name(job.metadata.name, attempt) if start.backend != GangBackend.NONE else None),
        start_time=start_time, completion_time=completion_time,
        last_failure=last,
    )
    events = (*phase.events, *_transition_events(prev.conditions, conditions, already={e.reason for e in phase.events}))
    desired, requeue = _children(job, observed, now, status, phase)
    return Plan(status=status, desired=desired, requeue_after=requeue, events=events, last_failure=last, verdict=phase.verdict)


def _children(
    job: TrainingJob, observed: Observed, now: dt.datetime, status: TrainingJobStatus, phase: _Phase
) -> tuple[list[dict[str, Any]], float | None]:
    """The base objects always (until the TTL after the end), the workers only while placing or
    running; and when to look again (the TTL, the deadline)."""
    done = C.is_true(status.conditions, C.SUCCEEDED) or C.is_true(status.conditions, C.FAILED)
    ttl, requeue = job.spec.run_policy.ttl_seconds_after_finished, phase.requeue
    inputs = BuildInputs(attempt=status.attempt, backend=status.gang.backend if status.gang else GangBackend.NONE,
                         resume_from=status.resumed_from_checkpoint, include_workers=phase.workers and not done)
    completed = parse_time(status.completion_time)
    if done and ttl is not None and completed is not None:
        expires = completed + dt.timedelta(seconds=ttl)
        if now >= expires:
            return [], requeue  # children only; the Git-owned CR stays
        return build_training_children(job, dataclasses.replace(inputs, include_workers=False)), (expires - now).total_seconds()
    if done:
        return build_training_children(job, inputs), POLL_SECONDS if any(not p.terminal for p in observed.pods) else None
    deadline, started = job.spec.run_policy.active_deadline_seconds, parse_time(status.start_time)
    if deadline is not None and started is not None:
        # Wake up at the deadline even when a longer poll (or none) was planned: nothing else
        # triggers a reconcile when a running job's time is up.
        left = max(1.0, deadline - (now - started).total_seconds())
        requeue = left if requeue is None else min(requeue, left)
    return build_training_children(job, inputs), requeue


@dataclass(frozen=True)
class _Placed:
    """Placing the current attempt: mode "run" = its pods are desired, "hold" = no pods now
    (waiting, or unschedulable), "timeout" = drop it (scheduling timeout)."""

    mode: str
    requeue: float | None
    wanted: tuple[Condition, ...]
    events: tuple[Event, ...] = ()


def _place(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start) -> _Placed:
    return _held(job, observed, now, start) or _gang(job, observed, now, start)


def _held(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start) -> _Placed | None:
    """Why no pod of the current attempt may be created now, if there is a reason."""
    spec, gen, attempt, cur_pods = job.spec, job.metadata.generation, start.attempt, start.cur_pods
    restart_cond = C.find_condition(job.status.conditions, C.RESTARTING)
    restarting = restart_cond is not None and restart_cond.status == ConditionStatus.TRUE

    def hold(type_: str, reason: str, msg: str, requeue: float) -> _Placed:
        return _Placed("hold", requeue, (_cond(type_, True, reason, msg, gen), _cond(C.RUNNING, False, reason, msg, gen)))

    # 1. Never a second pod for a rank while an older one is not terminal.
    if start.old_live:
        msg = (f"waiting for {len(start.old_live)} pod(s) of an earlier attempt to terminate before attempt {attempt} starts: "
               + ", ".join(_stuck(p, observed, now) for p in sorted(start.old_live, key=lambda p: p.name)))
        return hold(C.RESTARTING if restarting else C.QUEUED, WAITING_FOR_TERMINATING_PODS, msg, POLL_SECONDS)
    # 2. Backoff before a restarted attempt's pods are created, and after a scheduling timeout.
    backoff = spec.failure_policy.backoff
    if not cur_pods and restarting and restart_cond is not None:
        left = _left(restart_cond, _backoff(backoff.initial_seconds, backoff.max_seconds, start.restarts.total), now)
        if left > 0:
            msg = f"next attempt {attempt} starts in {int(left)}s (restart backoff)"
            return _Placed("hold", max(0.5, left), (_cond(C.RUNNING, False, BACKOFF, msg, gen),))
    timeouts = start.restarts.by_cause.get(C.SCHEDULING_TIMEOUT, 0)
    queued_cond = C.find_condition(job.status.conditions, C.QUEUED)
    if not cur_pods and timeouts and queued_cond is not None and queued_cond.reason == C.SCHEDULING_TIMEOUT:
        left = _left(queued_cond, _backoff(backoff.initial_seconds, backoff.max_seconds, timeouts), now)
        if left > 0:
            return _Placed("hold", max(0.5, left), ())
    # 3. A request no node can hold: report at once, create nothing.
    found = misfits(per_pod_requests(job), observed.node_allocatable) if observed.node_allocatable is not None and not cur_pods else None
    if found:
        return hold(C.QUEUED, UNSCHEDULABLE, unschedulable_message(found), UNSCHEDULABLE_RECHECK_SECONDS)
    # 4. An explicitly requested gang backend this cluster does not serve: say so, create nothing
    #    (Volcano's PodGroup could not be applied; Kueue's gated pods would wait forever).
    why = unavailable(start.backend, observed.served) if observed.served is not None and not cur_pods else None
    return hold(C.QUEUED, GANG_BACKEND_UNAVAILABLE, why, GANG_RECHECK_SECONDS) if why else None


def _left(cond: Condition, delay: float, now: dt.datetime) -> float:
    """Seconds of ``delay`` left since ``cond`` last moved (0 when its time is unknown)."""
    since = parse_time(cond.last_transition_time)
    return 0.0 if since is None else delay - (now - since).total_seconds()


def _stuck(p: PodFacts, observed: Observed, now: dt.datetime) -> str:
    end = parse_time(p.deletion_timestamp)
    if end is None or now <= end:
        return p.name
    node = (observed.nodes or {}).get(p.node_name or "")
    where = f" on NotReady node {p.node_name}" if node is not None and not node.ready else ""
    return (f"{p.name} (Terminating past its grace period{where}; an admin may taint the node "
            "node.kubernetes.io/out-of-service or force-delete the pod)")


def _gang(job: TrainingJob, observed: Observed, now: dt.datetime, start: _Start) -> _Placed:
    """Placement of the current attempt. Workers that exited 0 before rank 0 are done, not
    pending: the job is ending, and it never shows Queued again (rank 0's exit decides)."""
    spec, gen, attempt, cur_pods, n = job.spec, job.metadata.generation, start.attempt, start.cur_pods, job.spec.nodes
    running = [p for p in cur_pods if p.phase == "Running"]
    finished = [p for p in cur_pods if p.phase == "Succeeded"]
    if running and len(running) + len(finished) == n and len(cur_pods) == n:
        if finished:
            reason, msg = C.WORKERS_FINISHING, f"{len(finished)} of {n} worker pods finished, waiting for rank 0 (attempt {attempt})"
        else:
            reason, msg = C.ALL_PODS_RUNNING, f"all {n} worker pods are running (attempt {attempt})"
        wanted: tuple[Condition, ...] = (_cond(C.QUEUED, False, reason, msg, gen), _cond(C.RUNNING, True, reason, msg, gen))
        if C.is_true(job.status.conditions, C.RESTARTING):
            wanted += (_cond(C.RESTARTING, False, reason, msg, gen),)
        hang = spec.failure_policy.hang_timeout_seconds
        # A missing heartbeat wakes nobody: look again at least this often while running.
        return _Placed("run", float(min(hang / 4, 60)) if hang else 60.0, wanted)
    placement = (
        backend_for(start.backend).placement(observed.gang_object, [_pod_view(p) for p in cur_pods]) if cur_pods else Placement.PENDING
    )
    if placement == Placement.WAITING_FOR_QUOTA:
        reason, what = C.WAITING_FOR_QUOTA, "waiting for queue quota"
    elif not cur_pods or placement == Placement.PENDING:
        reason, what = C.GANG_PENDING, "waiting for the whole gang to be placed"
    else:
        reason, what = C.POD_PENDING, "gang placed, waiting for containers to start"
    # Each reason says what is awaited, so the Events of a start (GangPending -> PodPending ->
    # AllPodsRunning) read as distinct steps in `kubectl describe`.
    msg = f"{what}: {len(running)}/{n} worker pods running (attempt {attempt}, gang backend {start.backend.value})"
    unsched = [c.message for p in cur_pods for c in p.conditions if c.type == "PodScheduled" and c.status == "False" and c.message]
    if unsched:
        msg += f"; scheduler: {unsched[0]}"
    # The operator's own all-or-nothing timeout (not while a queue holds the gang: gated pods hold nothing).
    timeout = spec.scheduling.gang.timeout_seconds or DEFAULT_SCHEDULING_TIMEOUT
    created = [t for p in cur_pods if (t := parse_time(p.created)) is not None]
    if created and placement != Placement.WAITING_FOR_QUOTA and (now - min(created)).total_seconds() >= timeout:
        msg = f"the gang was not fully running within {timeout}s ({len(running)}/{n} running); all pods deleted, retrying after backoff"
        return _Placed("timeout", POLL_SECONDS,
                       (_cond(C.QUEUED, True, C.SCHEDULING_TIMEOUT, msg, gen), _cond(C.RUNNING, False, C.SCHEDULING_TIMEOUT, msg, gen)),
                       (Event("Warning", C.SCHEDULING_TIMEOUT, msg),))
    return _Placed("run", POLL_SECONDS, (_cond(C.QUEUED, True, reason, msg, gen), _cond(C.RUNNING, False, reason, msg, gen)))


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


def _health(
    conditions: list[Condition], job: TrainingJob, observed: Observed, attempt: int, now: dt.datetime, gen: int | None
) -> list[Condition]:
    """Stalled and CheckpointFailing: present when True, set False once recovered."""
    wanted: list[Condition] = []
    running = C.is_true(conditions, C.RUNNING)
    hang = job.spec.failure_policy.hang_timeout_seconds
    threshold = hang / 2 if hang else DEFAULT_STALL_SECONDS
    beat = _heartbeat(observed, attempt)
    if running and beat is not None and (now - beat).total_seconds() >= threshold:
        age = int((now - beat).total_seconds())
        step = observed.progress.step if observed.progress else 0
        wanted.append(_cond(C.STALLED, True, HEARTBEAT_STALE, f"no heartbeat from rank 0 for {age}s at step {step}", gen))
    elif C.find_condition(conditions, C.STALLED) is not None:
        wanted.append(_cond(C.STALLED, False, HEARTBEAT_FRESH, "", gen))
    rep = observed.progress
    if rep is not None and rep.checkpoint_failing_since:
        ck = rep.checkpoint
        msg = f"checkpoint saves failing since {rep.checkpoint_failing_since}: {rep.checkpoint_error or 'storage error'}"
        if ck is not None and ck.time:
            at = parse_time(ck.time)
            msg += f"; last good checkpoint {ck.id} at {ck.time}" + (f" ({int((now - at).total_seconds())}s old)" if at else "")
        wanted.append(_cond(C.CHECKPOINT_FAILING, True, C.CHECKPOINT_STORAGE_ERROR, msg, gen))
    elif C.find_condition(conditions, C.CHECKPOINT_FAILING) is not None and rep is not None:
        wanted.append(_cond(C.CHECKPOINT_FAILING, False, CHECKPOINT_HEALTHY, "", gen))
    return merged(conditions, wanted, now, C.JOB_TYPES) if wanted else conditions


def _transition_events(before: list[Condition], after: list[Condition], already: set[str]) -> list[Event]:
    """One event per condition that became True (or changed reason while True); restarts emit their own."""
    warnings = (UNSCHEDULABLE, C.SCHEDULING_TIMEOUT, FOREIGN_CHILD, *REFUSAL_REASONS)
    return [Event("Warning" if c.type in (C.FAILED, C.STALLED, C.CHECKPOINT_FAILING) or c.reason in warnings else "Normal",
                  c.reason, f"{c.type}: {c.message}" if c.message else c.type)
            for c, _ in changed(before, after)
            if c.status == ConditionStatus.TRUE and c.type != C.RESTARTING and c.reason not in already]


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
