"""The error a custom resource that fails its typed model raises, with one (field path,
message) pair per problem in Kubernetes' path syntax (``spec.env[0].name``)."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ApiValidationError(ValueError):
    """A custom resource failed the typed model; each entry names the field path."""

    def __init__(self, kind: str, name: str, errors: list[tuple[str, str]]) -> None:
        self.kind = kind
        self.name = name
        self.errors = errors
        joined = "; ".join(f"{path}: {msg}" for path, msg in errors)
        super().__init__(f'{kind} "{name}" is invalid: {joined}')


def field_path(loc: tuple[Any, ...]) -> str:
    """Pydantic location -> Kubernetes-style path: ('spec','env',0,'name') -> spec.env[0].name."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith(("function-", "model-")):
            continue  # pydantic's internal validator frames
        else:
            out += ("." if out else "") + str(part)
    return out


def errors_from(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    """Flatten a pydantic ValidationError into (field path, message) pairs."""
    out = []
    for err in exc.errors():
        path = field_path(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not part of the API)"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append((f"{prefix}{path}" if path else prefix.rstrip("."), msg))
    return out
