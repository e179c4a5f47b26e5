"""FinetuneJob lifecycle: (job, child TrainingJob, finetune report, InferenceService, now) -> plan.

A FinetuneJob is a thin layer over one TrainingJob (``llmops.builders.finetune``), so its
status is mostly a **mirror**: the child's job conditions (Queued, Running, Restarting,
Suspended, Succeeded, Failed, Stalled, CheckpointFailing -- reasons, messages and transition
times as the child has them), attempt, restarts, progress, checkpoint, start and completion
time. One translation: a child that Failed with ``ConfigError`` (the runtime exited 78)
carries the pod's termination message ``<Reason>: <detail>`` in its message; the FinetuneJob
shows the runtime's own reason (``DatasetFieldMissing``, ``ModelDigestMismatch``, ...) and
the detail instead, which is what a user can act on.

What the FinetuneJob adds comes from two places:

* the ``finetune`` section of rank 0's progress report on the child's Lease
  (``llmops.api.progress.FinetuneReport``): dataset statistics, evaluation, and -- once the
  artifact is committed, before rank 0 exits 0 -- the output (uri, manifest digest, size,
  base revision). Each part is kept in status once seen, so the child's TTL cannot take
  it away;
* with ``spec.serve``: the named InferenceService. The **publish contract**: the operator
  never writes an InferenceService's spec (Argo CD would see drift). Instead the
  InferenceService reconcile asks :func:`published_adapters` which FinetuneJobs of its
  namespace publish into it (``spec.serve.inferenceServiceName`` = its name, condition
  Succeeded True, ``status.output.uri`` set, ``output.mode`` adapter) and loads each as one
  more adapter named ``serve.adapterName`` (default: the FinetuneJob's name), reporting it in
  its ``status.adapters``. This side then reads that status: ``Published`` is True once the
  adapter is listed ready, else False with the reason (Training, JobFailed,
  WaitingForOutput, WaitingForService, ServiceCreateFailed, AdapterNotReady), and the
  reconcile polls while it waits. ``serve.create`` makes the InferenceService (base model,
  not owned) when it does not exist, after the job succeeded.

Lifecycle rules. A job that finished (Succeeded, or Failed for any reason but InvalidSpec)
never gets a new child: if the child is gone (TTL, or deleted by hand) the last mirrored
status stays. ``runPolicy.ttlSecondsAfterFinished`` deletes the child TrainingJob (and with
it pods, Lease, Service) that long after completion; the FinetuneJob and its status stay.

Refusals: the child TrainingJob's own (a missing ServiceAccount, an uninstalled gang backend)
reach this status through the mirror, reason and message as the child has them. A refusal of
the child itself (quota on TrainingJobs, a policy, a 422) is this job's condition: Queued with
the reason while it is retried, Failed when only a new spec can pass.

Determinism: for an unchanged world the plan repeats the previous status exactly; events
are emitted only for transitions.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from llmops.api import conditions as C
from llmops.api.conditions import Condition, ConditionStatus, parse_time, rfc3339
from llmops.api.finetune import FinetuneJob, FinetuneJobStatus, OutputMode, ServedStatus
from llmops.api.progress import FinetuneReport
from llmops.api.runtime_env import parse_termination_message
from llmops.api.training import TrainingJobStatus
from llmops.builders.finetune import adapter_name, build_finetune_children, build_inference_service, training_job_name
from llmops.failures import REFUSAL_REASONS, Refusal
from llmops.observe.leases import progress_report
from llmops.plan.conditions import Event, changed, ordered
from llmops.plan.conditions import cond as _cond  # one name per planner: tests/plan/conftest.py checks each one's reasons

# --- reasons this module adds (writer: this status computer; readers: users, alerts) ----------
FOREIGN_CHILD = "ChildOwnedByOther"  # the child TrainingJob's name is held by an object another owner controls
NOT_AN_ADAPTER = "OutputNotAnAdapter"  # Published=False: serve with output.mode merged (refused at admission)

WAIT_SECONDS = 5.0  # poll while waiting for the InferenceService to load the adapter
WATCH_SECONDS = 60.0  # look again this often otherwise (the child's status changes wake us anyway)
#: The classifier's message for an exit-78 pod: "pod <name> exited 78 (configuration error): <termination message>".
_CONFIG_ERROR_MARK = "(configuration error): "
_REASON = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


# --- observed facts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Facts the handler gathers for one reconcile (plain data)."""

    training_job: Mapping[str, Any] | None = None  # the child TrainingJob as read (controlled by this job), or None
    report: FinetuneReport | None = None  # the finetune section of the child's progress Lease
    inference_service: Mapping[str, Any] | None = None  # serve.inferenceServiceName as read; None = absent or serve unset
    service_create_error: str | None = None  # serve.create was refused: the API server's message
    foreign_children: tuple[str, ...] = ()  # "Kind/name" of children another owner controls
    refusal: Refusal | None = None  # the API server refused to create the child TrainingJob (failures.classify_refusal)

    @classmethod
    def from_objects(
        cls,
        training_job: Mapping[str, Any] | None = None,
        lease: Mapping[str, Any] | None = None,
        inference_service: Mapping[str, Any] | None = None,
        service_create_error: str | None = None,
        foreign_children: Iterable[str] = (),
        refusal: Refusal | None = None,
    ) -> Observed:
        """Facts from raw objects. The Lease counts only when the child controls it (a Lease
        left by an earlier child of the same name is not this run's); a report that does not
        parse is ignored (pods write it)."""
        return cls(
            training_job=training_job,
            report=finetune_report(lease, (training_job or {}).get("metadata", {}).get("uid")) if training_job else None,
            inference_service=inference_service,
            service_create_error=service_create_error,
            foreign_children=tuple(sorted(foreign_children)),
            refusal=refusal,
        )


def finetune_report(lease: Mapping[str, Any] | None, owner_uid: str | None) -> FinetuneReport | None:
    """The ``finetune`` section of a progress Lease controlled by ``owner_uid`` (pure)."""
    report = progress_report(lease, owner_uid) if owner_uid else None
    return report.finetune if report is not None else None


@dataclass(frozen=True)
class Plan:
    """What the reconcile should do."""

    status: FinetuneJobStatus
    desired: list[dict[str, Any]]  # apply these; prune every other owned child
    creates: tuple[dict[str, Any], ...] = ()  # serve.create: create this InferenceService (it is absent)
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()


# --- helpers -----------------------------------------------------------------------------------


def runtime_failure(message: str) -> tuple[str, str] | None:
    """(reason, detail) of the finetune runtime's termination message inside the failure
    classifier's exit-78 message, or None when there is none."""
    at = message.find(_CONFIG_ERROR_MARK)
    if at < 0:
        return None
    reason, detail, _ = parse_termination_message(message[at + len(_CONFIG_ERROR_MARK) :])
    if not reason or not _REASON.match(reason):
        return None
    return reason, detail


def _mirror(child: list[Condition], generation: int | None, now: dt.datetime) -> list[Condition]:
    """The child's job conditions as the FinetuneJob's (see the module essay)."""
    out = []
    for c in child:
        if c.type not in C.JOB_TYPES:
            continue
        reason, message = c.reason, c.message
        if reason == C.CONFIG_ERROR:
            found = runtime_failure(message)
            if found:
                reason, message = found
        out.append(c.model_copy(update={"reason": reason, "message": message, "observed_generation": generation,
                                        "last_transition_time": c.last_transition_time or rfc3339(now)}))
    return out


def _finished(conditions: list[Condition]) -> bool:
    """Succeeded, or Failed for a reason other than an invalid spec (a fixed spec may start)."""
    if C.is_true(conditions, C.SUCCEEDED):
        return True
    failed = C.find_condition(conditions, C.FAILED)
    return failed is not None and failed.status == ConditionStatus.TRUE and failed.reason != C.INVALID_SPEC


def _adapter_state(service: Mapping[str, Any], name: str) -> tuple[bool, str]:
    for entry in ((service.get("status") or {}).get("adapters") or []):
        if entry.get("name") == name:
            return bool(entry.get("ready")), str(entry.get("message") or "")
    return False, ""


# --- the plan ----------------------------------------------------------------------------------


def plan(job: FinetuneJob, observed: Observed, now: dt.datetime) -> Plan:
    """Decide the reconcile (see the module essay): the child's conditions mirrored, the
    finetune report, publishing, and the child until the TTL after the end."""
    now = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    spec, prev, gen = job.spec, job.status, job.metadata.generation
    status = prev.model_copy(deep=True)
    status.training_job_name = training_job_name(job.metadata.name)
    status.observed_generation = gen
    conditions = _job_conditions(job, observed, status, now)
    report = observed.report
    if report is not None:
        status.dataset = report.dataset or status.dataset
        status.evaluation = report.evaluation or status.evaluation
        status.output = report.output or status.output
    succeeded, failed = C.is_true(conditions, C.SUCCEEDED), C.is_true(conditions, C.FAILED)
    create_service = None
    requeue: float | None = None if succeeded or failed else WATCH_SECONDS
    if spec.serve is not None:
        published, requeue, create_service = _publish(job, observed, status, succeeded, failed, requeue)
        previous = C.find_condition(prev.conditions, C.PUBLISHED)
        conditions = C.set_condition(conditions if previous is None else [*conditions, previous], published, now)
    status.conditions = ordered(conditions, C.FINETUNE_TYPES)
    desired, requeue = _children(job, observed, status, succeeded or failed, requeue, now)
    return Plan(status=status, desired=desired, creates=(create_service,) if create_service else (), requeue_after=requeue,
                events=tuple(_events(prev.conditions, status.conditions)))


def _job_conditions(job: FinetuneJob, observed: Observed, status: FinetuneJobStatus, now: dt.datetime) -> list[Condition]:
    """The child's job conditions mirrored (and its attempt, progress, times copied into
    ``status``); before the child exists, Queued says why."""
    prev, gen, child, tj_name = job.status, job.metadata.generation, observed.training_job, status.training_job_name
    was_finished = _finished(prev.conditions)
    if child is not None:
        tj = TrainingJobStatus.model_validate(child.get("status") or {})
        conditions = _mirror(tj.conditions, gen, now)
        if not conditions:
            created = _cond(C.QUEUED, True, C.CREATED, f"TrainingJob {tj_name} created; waiting for its first status", gen)
            conditions = C.set_condition([c for c in prev.conditions if c.type == C.QUEUED], created, now)
        status.attempt, status.restarts = tj.attempt, tj.restarts
        status.progress = tj.progress or prev.progress
        status.checkpoint = tj.checkpoint or prev.checkpoint
        status.start_time = tj.start_time or prev.start_time
        status.completion_time = tj.completion_time or prev.completion_time
    elif was_finished:
        conditions = [c for c in prev.conditions if c.type != C.PUBLISHED]  # the child is gone (TTL): the last mirror stays
    else:
        queued = [c for c in prev.conditions if c.type == C.QUEUED]
        conditions = C.set_condition(queued, _cond(C.QUEUED, True, C.CREATED, f"creating TrainingJob {tj_name}", gen), now)
    if observed.foreign_children:
        names = ", ".join(observed.foreign_children)
        foreign = _cond(C.QUEUED, True, FOREIGN_CHILD, f"children with our names belong to another owner: {names}", gen)
        conditions = C.set_condition(conditions, foreign, now)
    refusal = observed.refusal
    if refusal is not None and child is None and not was_finished:
        # The TrainingJob could not even be created: its reason is ours (a 422 can only pass
        # with a new spec; quota or a policy may change, and the handler retries with backoff).
        if refusal.permanent:
            conditions = C.set_condition(conditions, _cond(C.FAILED, True, refusal.reason, refusal.message, gen), now)
        conditions = C.set_condition(conditions, _cond(C.QUEUED, not refusal.permanent, refusal.reason, refusal.message, gen), now)
    return conditions


def _children(job: FinetuneJob, observed: Observed, status: FinetuneJobStatus, done: bool, requeue: float | None,
              now: dt.datetime) -> tuple[list[dict[str, Any]], float | None]:
    """The child TrainingJob, until the TTL after the end (a finished job never starts again)."""
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    completed = parse_time(status.completion_time)
    expires = completed + dt.timedelta(seconds=ttl) if done and ttl is not None and completed is not None else None
    if expires is not None and now >= expires:
        return [], requeue  # the child goes; this CR and its status stay
    if observed.training_job is None and (_finished(job.status.conditions) or done):
        return [], requeue
    if expires is not None:
        left = max(0.5, (expires - now).total_seconds())
        requeue = left if requeue is None else min(requeue, left)
    return build_finetune_children(job), requeue


def _publish(job: FinetuneJob, observed: Observed, status: FinetuneJobStatus, succeeded: bool, failed: bool,
             requeue: float | None) -> tuple[Condition, float | None, dict[str, Any] | None]:
    """The Published condition (and served status, the InferenceService to create, the requeue)."""
    serve = job.spec.serve
    assert serve is not None
    gen = job.metadata.generation
    svc_name, adapter = serve.inference_service_name, adapter_name(job)
    where = f"InferenceService {svc_name}"
    if failed:
        return _cond(C.PUBLISHED, False, C.JOB_FAILED, "the training failed: nothing to publish", gen), requeue, None
    if not succeeded:
        return (_cond(C.PUBLISHED, False, C.TRAINING, f"publishes adapter {adapter} into {where} after training succeeds", gen),
                requeue, None)
    if job.spec.output.mode != OutputMode.ADAPTER:  # refused at admission; kept for objects stored before that rule
        return _cond(C.PUBLISHED, False, NOT_AN_ADAPTER,
                     "output.mode merged is a whole model, not an adapter: serve it with an InferenceService of its own", gen), None, None
    if status.output is None:
        return (_cond(C.PUBLISHED, False, C.WAITING_FOR_OUTPUT, "the job succeeded; its output report was not seen yet", gen),
                WAIT_SECONDS, None)
    status.served = ServedStatus(inference_service_name=svc_name, adapter_name=adapter)
    service = observed.inference_service
    if service is None:
        if observed.service_create_error and serve.create:  # retried, more slowly: a policy or quota may change
            return (_cond(C.PUBLISHED, False, C.SERVICE_CREATE_FAILED, f"creating {where}: {observed.service_create_error}", gen),
                    WAIT_SECONDS * 6, build_inference_service(job))
        if serve.create:
            return (_cond(C.PUBLISHED, False, C.WAITING_FOR_SERVICE, f"creating {where} for the base model", gen), WAIT_SECONDS,
                    build_inference_service(job))
        return (_cond(C.PUBLISHED, False, C.WAITING_FOR_SERVICE,
                      f"{where} does not exist in namespace {job.metadata.namespace}: create it, or set serve.create", gen),
                WAIT_SECONDS * 6, None)
    ready, message = _adapter_state(service, adapter)
    if ready:
        return (_cond(C.PUBLISHED, True, C.OUTPUT_PUBLISHED, f"adapter {adapter} ({status.output.uri}) is ready in {where}", gen),
                WATCH_SECONDS, None)
    detail = f": {message}" if message else " yet"
    return _cond(C.PUBLISHED, False, C.ADAPTER_NOT_READY, f"{where} has not loaded adapter {adapter}{detail}", gen), WAIT_SECONDS, None


def _events(before: list[Condition], after: list[Condition]) -> list[Event]:
    """One Event per condition that became True (or changed reason while True); a Warning
    when publishing is refused."""
    out = []
    for c, _ in changed(before, after):
        if c.status == ConditionStatus.TRUE:
            warn = c.type in (C.FAILED, C.RESTARTING, C.STALLED, C.CHECKPOINT_FAILING) or c.reason in (FOREIGN_CHILD, *REFUSAL_REASONS)
        elif c.type == C.PUBLISHED and c.reason == C.SERVICE_CREATE_FAILED:
            warn = True
        else:
            continue
        out.append(Event("Warning" if warn else "Normal", c.reason, f"{c.type}: {c.message}" if c.message else c.type))
    return out


def compute_status(job: FinetuneJob, observed: Observed, now: dt.datetime) -> FinetuneJobStatus:
    """The whole status for this reconcile (pure; the status part of ``plan``)."""
    return plan(job, observed, now).status


# --- the publish contract (read by the InferenceService reconcile) -----------------------------


@dataclass(frozen=True)
class PublishedAdapter:
    """One adapter a FinetuneJob publishes into an InferenceService."""

    name: str  # serve.adapterName, else the FinetuneJob's name
    uri: str  # status.output.uri
    manifest_sha256: str | None  # status.output.manifestSha256: verify the fetched adapter against it
    finetune_job: str  # the publishing FinetuneJob's name


def published_adapter_details(finetune_job_bodies: Iterable[Mapping[str, Any]], service_name: str) -> dict[str, PublishedAdapter]:
    """Adapters the given FinetuneJobs (the caller lists those of the service's namespace)
    publish into InferenceService ``service_name``, by adapter name.

    A FinetuneJob publishes when ``spec.serve.inferenceServiceName`` is ``service_name``,
    ``spec.output.mode`` is adapter (the default), its condition Succeeded is True and
    ``status.output.uri`` is set, and it is not being deleted (deleting the FinetuneJob
    unpublishes its adapter; the InferenceService itself stays). When several publish under
    one adapter name, the most recently completed wins (then the larger name), so retraining
    under a new FinetuneJob name replaces the adapter. Raw bodies, not parsed: one invalid
    FinetuneJob must not break the InferenceService's reconcile. The InferenceService's own
    ``spec.adapters`` entries are the caller's to merge (they should win on a name clash)."""
    found: list[tuple[str, str, PublishedAdapter]] = []
    for body in finetune_job_bodies:
        meta = body.get("metadata") or {}
        spec = body.get("spec") or {}
        serve = spec.get("serve") or {}
        if meta.get("deletionTimestamp") or serve.get("inferenceServiceName") != service_name:
            continue
        if ((spec.get("output") or {}).get("mode") or OutputMode.ADAPTER.value) != OutputMode.ADAPTER.value:
            continue
        st = body.get("status") or {}
        output = st.get("output") or {}
        succeeded = any(c.get("type") == C.SUCCEEDED and c.get("status") == "True" for c in st.get("conditions") or [])
        if not (succeeded and output.get("uri")):
            continue
        name = serve.get("adapterName") or meta.get("name", "")
        found.append((st.get("completionTime") or "", meta.get("name", ""),
                      PublishedAdapter(name=name, uri=output["uri"], manifest_sha256=output.get("manifestSha256"),
                                       finetune_job=meta.get("name", ""))))
    out: dict[str, PublishedAdapter] = {}
    for _, _, adapter in sorted(found, key=lambda t: (t[0], t[1])):
        out[adapter.name] = adapter  # later completion (then larger name) wins
    return dict(sorted(out.items()))


def published_adapters(finetune_job_bodies: Iterable[Mapping[str, Any]], service_name: str) -> dict[str, str]:
    """``{adapter name: uri}`` that the FinetuneJobs publish into ``service_name`` (see
    :func:`published_adapter_details` for the rules)."""
    return {name: a.uri for name, a in published_adapter_details(finetune_job_bodies, service_name).items()}
