"""Wire conventions every kind follows, enforced here once (Kubernetes API conventions).

- camelCase on the wire (``alias_generator=to_camel``), snake_case in Python;
- spec models reject unknown fields (``extra="forbid"``) so a typo is an error, not a no-op;
- status models ignore unknown fields, because an older operator may have written them;
- references are names only (Secrets, ConfigMaps, PVCs, ServiceAccounts, other jobs): there is
  no namespace field anywhere, so a cross-namespace reference cannot be expressed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, computed_field
from pydantic.alias_generators import to_camel

# one constant per fact: these are llmops/__init__.py's, under the names the API models use
from llmops import API_VERSION as GROUP_VERSION
from llmops import GROUP as API_GROUP
from llmops import VERSION

__all__ = ["API_GROUP", "GROUP_VERSION", "VERSION", "ObjectMeta", "SpecModel", "StatusModel", "derived"]

T = TypeVar("T")


class SpecModel(BaseModel):
    """Base of every spec section: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", use_enum_values=False
    )

    def wire(self) -> dict[str, Any]:
        """The camelCase JSON form, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(BaseModel):
    """Base of status sections: camelCase, unknown fields ignored (old operators wrote them)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def derived(*, alias: str, description: str, json_schema_extra: dict[str, Any]) -> Callable[[Callable[[Any], T]], T]:
    """A read-only status field computed from the others (pydantic's ``computed_field`` over a
    property): serialized under ``alias`` and described in the schema like a stored field.

    One helper instead of ``@computed_field`` stacked on ``@property`` in each model: mypy
    cannot type a decorator over a property, so this builds the property itself and tells the
    type checker what reading the attribute gives (the getter's return type)."""

    def wrap(getter: Callable[[Any], T]) -> T:
        field = computed_field(alias=alias, description=description, json_schema_extra=json_schema_extra)
        return cast(T, field(property(getter)))

    return wrap


class ObjectMeta(BaseModel):
    """The part of metadata the operator reads. The API server owns the rest."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    name: str = Field(description="Object name.")
    namespace: str | None = Field(default=None, description="Namespace.")
    uid: str | None = Field(default=None, description="Server-assigned uid.")
    generation: int | None = Field(default=None, description="Spec generation.")
    resource_version: str | None = Field(default=None, description="Optimistic-concurrency token.")
    labels: dict[str, str] = Field(default_factory=dict, description="Labels.")
    annotations: dict[str, str] = Field(default_factory=dict, description="Annotations.")
