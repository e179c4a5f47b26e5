"""Gang scheduling backends behind one small interface, plus the pure "does it fit" check."""

from llmops.scheduling.backends import (
    AUTO_ORDER,
    BACKENDS,
    Backend,
    Gang,
    Placement,
    PodPatch,
    backend_for,
    choose,
)
from llmops.scheduling.fits import Misfit, format_quantity, misfits, parse_quantity, unschedulable_message

__all__ = [
    "AUTO_ORDER",
    "BACKENDS",
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
    "unschedulable_message",
]
