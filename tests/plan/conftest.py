"""Every condition the status computers write in these tests must be in the reason table
(llmops.plan.reasons, from which docs/reference/conditions.md is generated): a new reason
without a row, or a reason written on the wrong condition, fails the test that produced it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import llmops.plan.finetune as finetune_status
import llmops.plan.inference as inference_status
import llmops.plan.training as training_status
import pytest
from llmops.api.conditions import Condition, ConditionStatus
from llmops.plan.reasons import allowed

MODULES = ((training_status, "TrainingJob"), (finetune_status, "FinetuneJob"), (inference_status, "InferenceService"))


@pytest.fixture(autouse=True)
def _reasons_in_the_table(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for module, kind in MODULES:
        def checked(*args: Any, _make: Any = module._cond, _kind: str = kind, **kwargs: Any) -> Condition:
            cond = _make(*args, **kwargs)
            if cond.status != ConditionStatus.UNKNOWN:
                true = cond.status == ConditionStatus.TRUE
                assert allowed(_kind, cond.type, true, cond.reason), (
                    f"{_kind} wrote {cond.type}={cond.status.value} reason {cond.reason}: not in llmops.plan.reasons.TABLE")
            return cond
        monkeypatch.setattr(module, "_cond", checked)
    yield
