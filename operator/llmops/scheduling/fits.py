"""Does one worker pod fit on any node at all? A pure check done before anything is created.

A gang whose per-pod request exceeds every node's allocatable can never start; gang
schedulers then hold it Pending forever with an opaque message (the anchors' "always pending
and can not failed"). We compare each requested resource with the largest allocatable value
of any node and report the numbers at once, holding no GPU. The check is deliberately per
resource, not a bin-packing search: it only finds requests that are impossible on every
node, which is the case users cannot diagnose themselves.

Quantities are parsed exactly (``fractions.Fraction``) so "500m" and "0.5" compare equal.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

_SUFFIX = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9]+(?:\.[0-9]*)?|[+-]?\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


def parse_quantity(q: str | int | float) -> Fraction:
    """A Kubernetes quantity as an exact number ("16Gi" -> 17179869184, "500m" -> 1/2)."""
    if isinstance(q, (int, float)):
        return Fraction(q)
    m = _QUANTITY.match(q.strip())
    if not m:
        raise ValueError(f"not a quantity: {q!r}")
    return Fraction(m.group(1)) * _SUFFIX[m.group(2) or ""]


def format_quantity(v: Fraction) -> str:
    """Canonical text: integers plain, whole Gi/Mi/Ki binary multiples with their suffix,
    other fractions in milli-units."""
    if v.denominator == 1:
        n = v.numerator
        for suffix in ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki"):
            unit = _SUFFIX[suffix].numerator
            if n >= unit and n % unit == 0:
                return f"{n // unit}{suffix}"
        return str(n)
    milli = v * 1000
    if milli.denominator == 1:
        return f"{milli.numerator}m"
    return f"{-(-milli.numerator // milli.denominator)}m"  # round up: a request must not shrink


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
