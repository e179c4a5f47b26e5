"""The condition and Event helpers every planner uses: build a condition, merge wanted ones
into the stored list (times move only on flips), keep the documented order, find what changed,
and the one Event type a plan returns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from llmops.api import conditions as C
from llmops.api.conditions import Condition, ConditionStatus

MESSAGE_LIMIT = 32768  # the CRD's bound on a condition message


@dataclass(frozen=True)
class Event:
    """One Kubernetes Event to emit on the custom resource (only on transitions)."""

    type: str  # Normal or Warning
    reason: str
    message: str


def cond(type_: str, status: bool | None, reason: str, message: str, generation: int | None, limit: int = MESSAGE_LIMIT) -> Condition:
    """A condition; ``status`` None is Unknown."""
    st = ConditionStatus.UNKNOWN if status is None else (ConditionStatus.TRUE if status else ConditionStatus.FALSE)
    return Condition(type=type_, status=st, reason=reason, message=message[:limit], observed_generation=generation)


def ordered(conditions: Iterable[Condition], types: Sequence[str]) -> list[Condition]:
    """By the kind's documented type order; unknown types last, by name."""
    order = {t: i for i, t in enumerate(types)}
    return sorted(conditions, key=lambda c: (order.get(c.type, len(order)), c.type))


def merged(previous: Sequence[Condition], wanted: Iterable[Condition], now: dt.datetime, types: Sequence[str],
           force_flip: frozenset[str] = frozenset()) -> list[Condition]:
    """``wanted`` set on ``previous``: times move only on flips (or for types in ``force_flip``,
    e.g. a new restart is a new transition even when Restarting stays True). Types not in
    ``wanted`` are kept."""
    out = [c for c in previous if c.type not in force_flip]
    for c in wanted:
        out = C.set_condition(out, c, now)
    return ordered(out, types)


def changed(before: Sequence[Condition], after: Iterable[Condition]) -> Iterator[tuple[Condition, Condition | None]]:
    """(condition, its previous self) for each condition whose status or reason moved."""
    old = {c.type: c for c in before}
    for c in after:
        o = old.get(c.type)
        if o is None or o.status != c.status or o.reason != c.reason:
            yield c, o
