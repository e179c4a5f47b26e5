"""The one reconcile every kind runs; a kind plugs in what differs (``Kind``).

    read -> parse -> observe -> plan (pure, once) -> apply + prune (+ creates) -> Events and
    one status write -> requeue

* **read and parse.** A missing or deleting object ends the reconcile (its children go by
  garbage collection; the kind forgets its metrics). A body the typed model refuses is
  reported through ``report_invalid`` and nothing is created.
* **observe.** The kind turns its owned children and what else it reads into plain facts.
  Among the facts is what earlier apply passes met and no read can show: a child name held
  by another owner (never adopted), or a child the API server refused (``ApplyMemory``).
* **plan.** The kind's pure planner decides the whole status, the children, the objects to
  create (never apply: e.g. a FinetuneJob's InferenceService, which its users own), the
  Events and the requeue. It runs once per reconcile.
* **apply.** ``kube.children.sync_children`` applies and prunes; creates follow. When the
  pass meets something the plan did not know (a new refusal or foreign name, one that
  cleared, an object just created), the plan was made on stale facts: nothing is announced
  or written, and the next reconcile comes at once with the new facts.
* **tail.** The plan's Events, then one status write guarded by the resourceVersion read
  (``writeback``); a 409 re-reads at once. A refusal the plan reported waits with backoff.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from llmops import API_VERSION
from llmops.api.errors import ApiValidationError
from llmops.controller import Context
from llmops.failures import Refusal
from llmops.handlers.invalid import report_invalid
from llmops.handlers.writeback import write_back
from llmops.kube.children import ChildKey, Foreign, list_owned, refusal_of, sync_children
from llmops.kube.client import ApiError
from llmops.kube.events import Announced, emit
from llmops.kube.workqueue import Backoff

logger = logging.getLogger(__name__)

Met = Refusal | Foreign  # what an apply pass met at one child


class PlanLike(Protocol):
    @property
    def status(self) -> Any: ...  # the kind's status model (``.wire()``)
    @property
    def desired(self) -> list[dict[str, Any]]: ...
    @property
    def creates(self) -> tuple[dict[str, Any], ...]: ...
    @property
    def events(self) -> Sequence[Announced]: ...
    @property
    def requeue_after(self) -> float | None: ...


@dataclass(frozen=True)
class ApplyMemory:
    """What earlier apply passes met, per child (an observed fact for the plan)."""

    met: Mapping[ChildKey, Met] = field(default_factory=dict)

    @property
    def foreign(self) -> tuple[str, ...]:
        """"Kind/name" of the children whose names another owner holds."""
        return tuple(sorted(f"{k[1]}/{k[2]}" for k, m in self.met.items() if isinstance(m, Foreign)))

    def refusal(self, exclude: Sequence[ChildKey] = ()) -> Refusal | None:
        """The refusal to report: the first refused child's, by key."""
        return next((m for k, m in sorted(self.met.items()) if isinstance(m, Refusal) and k not in exclude), None)


class Kind(Protocol):
    """What a kind plugs into the driver."""

    kind: str
    #: a refused update of a child that exists is logged, not reported (it keeps running as it is)
    tolerate_refused_updates: bool

    def parse(self, body: dict[str, Any]) -> Any: ...
    def child_kinds(self, ctx: Context, model: Any) -> tuple[tuple[str, str], ...]: ...
    def observe(self, ctx: Context, model: Any, owned: dict[ChildKey, dict[str, Any]], memory: ApplyMemory) -> Any: ...
    def plan(self, model: Any, observed: Any, now: dt.datetime) -> PlanLike: ...
    def record(self, ctx: Context, model: Any, body: dict[str, Any], plan: PlanLike, observed: Any) -> None: ...
    def forget(self, ctx: Context, namespace: str, name: str) -> None: ...


def _identity(m: Met | None) -> str | None:
    """What makes a met fact new: its kind and reason, not its words (a quota message carries counts)."""
    return None if m is None else ("foreign" if isinstance(m, Foreign) else f"{m.reason}/{m.permanent}")


class Driver:
    """``reconcile(ctx, namespace, name)`` for one kind, registered on the Controller."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind
        # (namespace, name, uid) -> child -> what the last apply of it met; dropped with the owner
        self._memory: dict[tuple[str, str, str], dict[ChildKey, Met]] = {}

    def __call__(self, ctx: Context, namespace: str, name: str) -> float | Backoff | None:
        k = self.kind
        body = ctx.kube.get(API_VERSION, k.kind, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            k.forget(ctx, namespace, name)
            self._forget(namespace, name)
            return None
        now = dt.datetime.fromtimestamp(ctx.clock(), dt.UTC)
        try:
            model = k.parse(body)
        except ApiValidationError as exc:
            return None if report_invalid(ctx, k.kind, body, exc, now) else 0.0
        kinds = k.child_kinds(ctx, model)
        owned = list_owned(ctx.kube, body, kinds)
        before = dict(self._memory.get(_owner(body), {}))
        observed = k.observe(ctx, model, owned, ApplyMemory(before))
        plan = k.plan(model, observed, now)
        if self._apply(ctx, body, plan, owned, kinds, now):
            return 0.0  # the plan was made on facts this pass proved stale: plan again at once
        k.record(ctx, model, body, plan, observed)
        if not write_back(ctx.kube, body, plan.status.wire(), plan.events, now):
            ctx.kube.refresh(API_VERSION, k.kind, namespace, name)
            return 0.0  # the object moved under us: re-read at once
        refusal = ApplyMemory(before).refusal()
        return Backoff(refusal.reason) if refusal is not None and not refusal.permanent else plan.requeue_after

    def _apply(self, ctx: Context, body: dict[str, Any], plan: PlanLike, owned: dict[ChildKey, dict[str, Any]],
               kinds: tuple[tuple[str, str], ...], now: dt.datetime) -> bool:
        """Apply, prune and create, and remember what was met; True when this pass learned
        something the plan did not know (a child met otherwise than remembered, an object created).
        What is remembered of children the plan no longer wants is dropped; a permanent refusal
        so dropped does not count as news: the plan has acted on it (the job failed, which a
        re-plan without it must not undo), and the next reconcile's status shows it gone."""
        memory = self._memory.setdefault(_owner(body), {})
        sync = sync_children(ctx.kube, body, plan.desired, owned, kinds)
        met: dict[ChildKey, Met | None] = dict.fromkeys(sync.applied)
        met.update(dict.fromkeys(sync.foreign, Foreign()))
        if sync.refused is not None and sync.refused_key is not None:
            if self.kind.tolerate_refused_updates and sync.refused_key in owned:
                logger.warning("%s %s/%s: an update of %s was refused (it keeps running as it is): %s", self.kind.kind,
                               body["metadata"]["namespace"], body["metadata"]["name"], sync.refused_key[2], sync.refused.message)
            else:
                met[sync.refused_key] = sync.refused
        created = [self._create(ctx, body, obj, met, now) for obj in plan.creates]
        learned = any(created) or any(_identity(memory.get(key)) != _identity(m) for key, m in met.items())
        wanted = {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in (*plan.desired, *plan.creates)}
        for key in [k for k in memory if k not in wanted]:
            gone = memory.pop(key)
            learned = learned or not (isinstance(gone, Refusal) and gone.permanent)
        memory.update({key: m for key, m in met.items() if m is not None})
        for key in [k for k, m in met.items() if m is None]:
            memory.pop(key, None)
        if not memory:
            self._memory.pop(_owner(body), None)
        return learned

    @staticmethod
    def _create(ctx: Context, owner: dict[str, Any], obj: dict[str, Any], met: dict[ChildKey, Met | None], now: dt.datetime) -> bool:
        """Create ``obj`` (not a child: never applied, never pruned); True when this call created it."""
        key = (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])
        try:
            ctx.kube.create(obj)
        except ApiError as exc:
            if exc.status == 409:  # someone else created it meanwhile: theirs is used, never overwritten
                met[key] = None
                return False
            refusal = refusal_of(exc, obj)
            if refusal is None:
                raise
            met[key] = refusal
            return False
        met[key] = None
        emit(ctx.kube, owner, "Normal", f"{obj['kind']}Created",
             f"created {obj['kind']} {key[2]} (not owned by this {owner['kind']}: its users own its spec)", f"create/{key[2]}", now)
        return True

    def _forget(self, namespace: str, name: str) -> None:
        for owner in [o for o in self._memory if o[:2] == (namespace, name)]:
            del self._memory[owner]


def _owner(body: dict[str, Any]) -> tuple[str, str, str]:
    meta = body["metadata"]
    return meta["namespace"], meta["name"], meta["uid"]
