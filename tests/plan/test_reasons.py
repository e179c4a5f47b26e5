"""The reason table (llmops.plan.reasons) against the vocabulary: every reason constant the
code defines has a row (no undocumented or dead reason), every row is CamelCase with a meaning,
and the generated docs/reference/conditions.md is the table (checked by `llmops crds --check`
in tests/crdgen). That the status computers write only listed reasons is tests/plan/conftest.py."""

from __future__ import annotations

import inspect
import re

import pytest
from llmops import failures
from llmops.api import conditions as C
from llmops.plan import reasons as R

CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def _constants(source: str) -> dict[str, str]:
    return dict(re.findall(r'^([A-Z_]+) = "([A-Za-z]+)"', source, re.M))


def vocabulary() -> dict[str, str]:
    """Reason constants: the reasons section of llmops.api.conditions and the classifier's own."""
    src = inspect.getsource(C)
    section = src[src.index("# --- reasons"):src.index("class ConditionStatus")]
    return {**_constants(section), **_constants(inspect.getsource(failures))}


def every_listed() -> set[str]:
    return {r for kind in R.TABLE for r in R.every_reason(kind)}


@pytest.mark.parametrize(("name", "reason"), sorted(vocabulary().items()))
def test_every_reason_constant_has_a_row(name: str, reason: str) -> None:
    assert reason in every_listed(), f"{name} = {reason!r} is written nowhere in llmops.plan.reasons.TABLE (dead, or undocumented)"


def test_rows_are_camel_case_with_a_meaning() -> None:
    for kind, by_type in R.TABLE.items():
        for type_, by_status in by_type.items():
            for status, listed in by_status.items():
                if listed == R.DISPLACED:
                    continue
                assert isinstance(listed, dict)
                for reason, meaning in listed.items():
                    if reason == R.DISPLACED:
                        continue
                    assert CAMEL.match(reason), (kind, type_, status, reason)
                    assert meaning.strip(), (kind, type_, status, reason)


def test_a_displaced_condition_carries_a_reason_of_its_kind() -> None:
    assert R.allowed("TrainingJob", C.RUNNING, False, C.OOM_KILLED)
    assert R.allowed("TrainingJob", C.QUEUED, False, C.SUSPENDED_BY_USER)
    assert not R.allowed("TrainingJob", C.QUEUED, False, C.SCALED_TO_ZERO)  # a serving reason
    assert not R.allowed("TrainingJob", C.SUCCEEDED, True, C.ALL_PODS_RUNNING)
    assert not R.allowed("TrainingJob", C.READY, True, C.REPLICAS_READY)  # not a job condition
