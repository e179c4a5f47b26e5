"""Structural-schema markers the generated CRD carries for a field (``json_schema_extra``
values), and the pydantic check that mirrors the keyed-list one, so the model and the API
server refuse the same objects."""

from __future__ import annotations

from typing import Any


def keyed(*keys: str) -> dict[str, Any]:
    """json_schema_extra for a list of objects keyed by ``keys`` (listType=map): server-side
    apply merges items by key and the API server rejects duplicate keys."""
    return {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)}


def as_set() -> dict[str, Any]:
    """json_schema_extra for a list of unique scalars (listType=set)."""
    return {"x-kubernetes-list-type": "set"}


def preserve_unknown() -> dict[str, Any]:
    """json_schema_extra for opaque Kubernetes objects passed through unchanged (e.g. affinity)."""
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def require_unique(values: list[str], what: str) -> None:
    """Refuse a duplicate key in a keyed list (listType=map): the pydantic side of ``keyed``."""
    seen: set[str] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate {what} {v!r}")
        seen.add(v)
