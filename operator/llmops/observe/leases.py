"""Rank 0's progress report, read from the job's progress Lease (pure). A pod can write only
that Lease, and a report that does not parse must not break a reconcile: it is ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmops.api.labels import PROGRESS_ANNOTATION
from llmops.api.progress import ProgressReport


def progress_report(lease: Mapping[str, Any] | None, owner_uid: str | None = None) -> ProgressReport | None:
    """The report on ``lease``; with ``owner_uid``, only when that owner controls the Lease (a
    Lease left by an earlier owner of the same name is not this run's)."""
    if not lease:
        return None
    meta = lease.get("metadata") or {}
    if owner_uid is not None and not any(r.get("controller") and r.get("uid") == owner_uid for r in meta.get("ownerReferences") or []):
        return None
    raw = (meta.get("annotations") or {}).get(PROGRESS_ANNOTATION)
    if not raw:
        return None
    try:
        return ProgressReport.model_validate_json(raw)
    except ValueError:
        return None
