"""Kubernetes resource quantities: one parser (the kubernetes client's) and one formatter.

``parse_quantity`` is ``kubernetes.utils.parse_quantity``: an exact ``Decimal`` in base units
("500m" and "0.5" are equal, "16Gi" is 17179869184, "1e3" is 1000), ValueError on anything
the API server would not accept as a quantity.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from kubernetes.utils.quantity import parse_quantity

__all__ = ["format_quantity", "parse_quantity"]

_BINARY = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


def format_quantity(value: Decimal | int) -> str:
    """Canonical text: integers plain or as whole Ei/Pi/Ti/Gi/Mi/Ki multiples, other values in
    milli-units rounded up (a request must not shrink)."""
    value = Decimal(value)
    if value == value.to_integral_value():
        n = int(value)
        for suffix, unit in _BINARY:
            if n >= unit and n % unit == 0:
                return f"{n // unit}{suffix}"
        return str(n)
    return f"{int((value * 1000).to_integral_value(rounding=ROUND_CEILING))}m"
