"""Gang scheduling backends behind one small interface, plus the pure "does it fit" check."""

from llmops.api.quantity import format_quantity, parse_quantity
from llmops.scheduling.backends import (
    AUTO_ORDER,
    BACKENDS,
    GANG_APIS,
    Backend,
    Gang,
    Placement,
    PodPatch,
    backend_for,
    choose,
    unavailable,
)
from llmops.scheduling.fits import Misfit, misfits, unschedulable_message

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
    "GANG_APIS",
    "Backend",
    "Gang",
    "Misfit",
    "Placement",
    "PodPatch",
    "backend_for",
    "choose",
    "format_quantity",
    "misfits",
    "parse_quantity",
    "unavailable",
    "unschedulable_message",
]
