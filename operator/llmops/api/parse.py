"""Parsing a whole custom resource body: the object-name rules and the typed model, every
error collected into one :class:`~llmops.api.errors.ApiValidationError`."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llmops.api.errors import ApiValidationError, errors_from
from llmops.api.scalars import OBJECT_NAME_PATTERN

M = TypeVar("M", bound=BaseModel)


def check_object_name(name: str, max_length: int, why: str) -> list[tuple[str, str]]:
    """metadata.name rules: RFC 1035 label short enough for the longest child name."""
    errs = []
    if len(name) > max_length:
        errs.append(("metadata.name", f"must be no more than {max_length} characters ({why})"))
    if not re.match(OBJECT_NAME_PATTERN, name):
        errs.append(("metadata.name", "must start with a lowercase letter and contain only lowercase letters, digits and '-'"))
    return errs


def parse_resource(model: type[M], body: dict[str, Any], kind: str, name_max: int, why: str) -> M:
    """Validate a whole custom resource body against its model, collecting every error
    (name rules and model errors) into one ApiValidationError naming each field."""
    name = str(((body or {}).get("metadata") or {}).get("name") or "")
    errs = check_object_name(name, name_max, why)
    try:
        obj = model.model_validate(body)
    except ValidationError as exc:
        raise ApiValidationError(kind, name, errs + errors_from(exc)) from None
    if errs:
        raise ApiValidationError(kind, name, errs)
    return obj
