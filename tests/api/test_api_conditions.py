"""set_condition and the condition vocabulary: lastTransitionTime moves only on a status flip,
the input list is never mutated, order is stable, and every constant is CamelCase."""

from __future__ import annotations

import datetime as dt

import pytest
from llmops.api import conditions as c
from llmops.api.conditions import Condition, ConditionStatus, set_condition

T0 = "2026-01-01T00:00:00Z"
T1 = dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC)


def cond(type_: str, status: str, reason: str = "R", message: str = "", gen: int | None = None, ltt: str | None = None) -> Condition:
    return Condition(type=type_, status=ConditionStatus(status), reason=reason, message=message, observed_generation=gen,
                     last_transition_time=ltt)


@pytest.mark.parametrize(
    ("before", "new", "expected_ltt"),
    [
        ([], cond("Running", "True"), "2026-01-01T00:05:00Z"),  # new type: stamped now
        ([cond("Running", "True", ltt=T0)], cond("Running", "True", reason="Other"), T0),  # same status: kept
        ([cond("Running", "True", ltt=T0)], cond("Running", "False"), "2026-01-01T00:05:00Z"),  # flip: moved
        ([cond("Running", "Unknown", ltt=T0)], cond("Running", "True"), "2026-01-01T00:05:00Z"),
        ([cond("Running", "True")], cond("Running", "True"), "2026-01-01T00:05:00Z"),  # missing time is filled
    ],
)
def test_last_transition_time(before: list[Condition], new: Condition, expected_ltt: str) -> None:
    out = set_condition(before, new, T1)
    got = c.find_condition(out, "Running")
    assert got is not None and got.last_transition_time == expected_ltt
    assert got.reason == new.reason  # reason/message always follow the new condition


def test_input_not_mutated_and_order_stable() -> None:
    before = [cond("Queued", "False", ltt=T0), cond("Running", "True", ltt=T0), cond("Failed", "False", ltt=T0)]
    snapshot = [x.model_copy() for x in before]
    out = set_condition(before, cond("Running", "False", reason="PodPending", gen=3), T1)
    assert before == snapshot
    assert [x.type for x in out] == ["Queued", "Running", "Failed"]
    assert out[1].observed_generation == 3 and out[1].status == ConditionStatus.FALSE


def test_idempotent_when_unchanged() -> None:
    once = set_condition([], cond("Ready", "True", reason="ReplicasReady"), T0)
    twice = set_condition(once, cond("Ready", "True", reason="ReplicasReady"), T1)
    assert [x.wire() for x in once] == [x.wire() for x in twice]


def test_wire_shape_is_metav1() -> None:
    wire = set_condition([], cond("Running", "True", reason="AllPodsRunning", gen=2), "2026-02-03T04:05:06Z")[0].wire()
    assert wire == {"type": "Running", "status": "True", "reason": "AllPodsRunning", "message": "",
                    "lastTransitionTime": "2026-02-03T04:05:06Z", "observedGeneration": 2}


def test_vocabulary_is_camel_case_and_unique() -> None:
    names = [v for k, v in vars(c).items() if k.isupper() and isinstance(v, str)]
    assert len(names) == len(set(names)), "a type or reason is spelled twice"
    for v in names:
        Condition(type="X", status=ConditionStatus.TRUE, reason=v)  # every constant is a valid reason
        assert v[0].isupper(), v


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], ("Queued", "")),
        ([cond("Queued", "True", "GangPending")], ("Queued", "GangPending")),
        ([cond("Queued", "False", "AllPodsRunning"), cond("Running", "True", "AllPodsRunning")], ("Running", "AllPodsRunning")),
        ([cond("Running", "False", "NodeLost"), cond("Restarting", "True", "NodeLost")], ("Restarting", "NodeLost")),
        ([cond("Suspended", "True", "SuspendedByUser"), cond("Queued", "False", "SuspendedByUser")], ("Suspended", "SuspendedByUser")),
        ([cond("Running", "False", "Completed"), cond("Succeeded", "True", "Completed")], ("Succeeded", "Completed")),
        # Failed wins over anything still True (a final state is final)
        ([cond("Running", "True", "AllPodsRunning"), cond("Failed", "True", "DeadlineExceeded")], ("Failed", "DeadlineExceeded")),
    ],
)
def test_job_state_summarizes_the_conditions(conditions: list[Condition], expected: tuple[str, str]) -> None:
    assert c.job_state(conditions) == expected
    assert expected[0] in c.JOB_STATES


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([], ("Loading", "")),
        ([cond("Ready", "False", "ReplicasUnavailable"), cond("Degraded", "False", "ReplicasLoading")], ("Loading", "ReplicasUnavailable")),
        ([cond("Ready", "True", "ReplicasReady"), cond("Degraded", "False", "ReplicasReady")], ("Ready", "ReplicasReady")),
        ([cond("Ready", "True", "ReplicasReady"), cond("Degraded", "True", "ServerFailed")], ("Degraded", "ServerFailed")),
        ([cond("Ready", "False", "ReplicasUnavailable"), cond("Degraded", "True", "PickleNotAllowed")], ("Failed", "PickleNotAllowed")),
        ([cond("Ready", "False", "ScaledToZero")], ("ScaledToZero", "ScaledToZero")),
        ([cond("Ready", "False", "InvalidSpec")], ("Failed", "InvalidSpec")),
    ],
)
def test_service_state_summarizes_the_conditions(conditions: list[Condition], expected: tuple[str, str]) -> None:
    assert c.service_state(conditions) == expected
    assert expected[0] in c.SERVICE_STATES
