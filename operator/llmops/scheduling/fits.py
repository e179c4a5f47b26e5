"""Does one worker pod fit on any node at all? A pure check done before anything is created.

A gang whose per-pod request exceeds every node's allocatable can never start; gang
schedulers then hold it Pending forever with an opaque message (the anchors' "always pending
and can not failed"). We compare each requested resource with the largest allocatable value
of any node and report the numbers at once, holding no GPU. The check is deliberately per
resource, not a bin-packing search: it only finds requests that are impossible on every
node, which is the case users cannot diagnose themselves.

Quantities are parsed exactly (``llmops.api.quantity``) so "500m" and "0.5" compare equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from llmops.api.quantity import format_quantity, parse_quantity


@dataclass(frozen=True)
class Misfit:
    """One resource no node can give a single worker."""

    resource: str
    requested: str
    largest: str | None  # None: no node has the resource at all

    def message(self) -> str:
        if self.largest is None:
            return f"each worker needs {self.resource}={self.requested} but no node offers {self.resource}"
        return f"each worker needs {self.resource}={self.requested} but the largest node has {self.largest}"


def misfits(per_pod: Mapping[str, str], node_allocatable: Mapping[str, Mapping[str, str]]) -> list[Misfit]:
    """Resources of ``per_pod`` larger than every node's allocatable (sorted by resource).

    ``node_allocatable`` maps node name -> status.allocatable. With no nodes known the check
    cannot say anything and returns nothing (the scheduler will report instead)."""
    if not node_allocatable:
        return []
    out = []
    for resource, want in sorted(per_pod.items()):
        need = parse_quantity(want)
        if need <= 0:
            continue
        offered = [parse_quantity(a[resource]) for a in node_allocatable.values() if resource in a]
        if not offered:
            out.append(Misfit(resource, want, None))
        elif max(offered) < need:
            out.append(Misfit(resource, want, format_quantity(max(offered))))
    return out


def unschedulable_message(found: list[Misfit]) -> str:
    return "; ".join(m.message() for m in found)
