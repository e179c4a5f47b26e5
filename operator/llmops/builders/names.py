"""Deterministic child names that always fit in an RFC 1123 label (63 characters).

A name that would be too long is cut and given a short hash of the full name, so two long
names never collide after truncation and the same input always gives the same name.
"""

from __future__ import annotations

import hashlib

MAX_LABEL = 63
_HASH_LEN = 8


def bounded_name(base: str, suffix: str = "", limit: int = MAX_LABEL) -> str:
    """``base + suffix``, or ``base[:k] + "-" + hash + suffix`` when longer than ``limit``.

    The suffix (e.g. "-w3-a1") is kept whole because it carries the meaning (rank,
    attempt); the base is what gets cut."""
    full = f"{base}{suffix}"
    if len(full) <= limit:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_LEN]
    keep = limit - len(suffix) - _HASH_LEN - 1
    if keep < 1:
        raise ValueError(f"suffix {suffix!r} leaves no room for a name within {limit} characters")
    head = base[:keep].rstrip("-.")
    return f"{head}-{digest}{suffix}"
