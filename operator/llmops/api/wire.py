"""Wire conventions every kind follows, enforced here once (Kubernetes API conventions).

- camelCase on the wire (``alias_generator=to_camel``), snake_case in Python;
- spec models reject unknown fields (``extra="forbid"``) so a typo is an error, not a no-op;
- status models ignore unknown fields, because an older operator may have written them;
- references are names only (Secrets, ConfigMaps, PVCs, ServiceAccounts, other jobs): there is
  no namespace field anywhere, so a cross-namespace reference cannot be expressed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

import llmops

# one constant per fact: these are llmops/__init__.py's, under the names the API models use
API_GROUP, VERSION, GROUP_VERSION = llmops.GROUP, llmops.VERSION, llmops.API_VERSION


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
