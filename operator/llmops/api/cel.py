"""CEL validation rules (``x-kubernetes-validations``) the generated CRD carries.

A rule that the CRD must carry for a model is attached with :func:`cel` and mirrored by a
pydantic validator on the model, so ``llmops validate`` (pydantic + schema) and the API
server agree. Every number, string and list the rules touch is bounded (see ``scalars``), so
the API server's CEL cost estimates stay finite.
"""

from __future__ import annotations

from typing import Any

from llmops.api.scalars import QUALIFIED_NAME_PATTERN


def cel(*rules: tuple[str, str] | dict[str, str]) -> dict[str, Any]:
    """json_schema_extra carrying x-kubernetes-validations (rule, message[, fieldPath, reason])."""
    out = []
    for rule in rules:
        out.append(dict(rule) if isinstance(rule, dict) else {"rule": rule[0], "message": rule[1]})
    return {"x-kubernetes-validations": out}


def immutable_while_running(fields: tuple[str, ...], running_type: str = "Running") -> list[dict[str, str]]:
    """Root-level CEL transition rules freezing ``spec.<field>`` for each field while the old
    object's ``running_type`` condition is True (the kind's status carries conditions)."""
    running = (
        "has(oldSelf.status) && has(oldSelf.status.conditions) && "
        f"oldSelf.status.conditions.exists(c, c.type == '{running_type}' && c.status == 'True')"
    )
    rules = []
    for f in fields:
        new, old = f"self.spec.{f}", f"oldSelf.spec.{f}"
        same = f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))"
        rules.append(
            {
                "rule": f"!({running}) || {same}",
                "message": f"spec.{f} is immutable while the job is Running (suspend it first)",
                "fieldPath": f".spec.{f}",
                "reason": "FieldValueForbidden",
            }
        )
    return rules


def qualified_keys(what: str) -> dict[str, Any]:
    """CEL on a map: every key is a qualified name (the structural schema cannot constrain keys,
    and pods with a bad key are refused only when the operator creates them)."""
    return cel((f"self.all(k, size(k) <= 317 && k.matches('{QUALIFIED_NAME_PATTERN}'))",
                f"{what} keys must be qualified names: an optional DNS prefix and '/', then at most 63 of "
                "[A-Za-z0-9-_.] starting and ending alphanumeric (e.g. 'team' or 'example.com/team')"))
