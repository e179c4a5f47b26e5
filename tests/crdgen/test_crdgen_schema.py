"""to_structural: each pydantic JSON-Schema construct and the structural form it becomes
(inlined $ref with the site's description, Optional collapsed, numeric exclusive bounds,
const -> enum, closed models, map key constraints, defaults, int-or-string), and the unions
a CRD cannot express are refused."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal

import pytest
from llmops.api.cel import cel
from llmops.api.scalars import Quantity
from llmops.crdgen.schema import SchemaConversionError, strip_defaults, to_structural
from llmops.kubeschema import check_structural, compile_rules
from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class Color(str, enum.Enum):
    """A color."""

    RED = "red"
    GREEN = "green"


class Inner(BaseModel):
    """Inner docstring."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=cel(("self.a >= 0", "a must be >= 0")))
    a: int = Field(default=1, description="a")


class Outer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inner: Inner = Field(description="site description wins")
    maybe: Inner | None = Field(default=None, description="optional inner")
    color: Color = Field(default=Color.RED, description="c")
    ratio: float = Field(gt=0, le=1, description="r")
    fixed: Literal["x"] = Field(default="x", description="f")
    labels: dict[Annotated[str, StringConstraints(max_length=10)], str] = Field(default_factory=dict, max_length=4, description="l")
    tags: list[str] = Field(default_factory=list, description="t")
    q: Quantity | None = Field(default=None, description="q")


def test_conversion() -> None:
    s = to_structural(Outer.model_json_schema(by_alias=True))
    p = s["properties"]
    assert p["inner"]["description"] == "site description wins"
    assert p["inner"]["x-kubernetes-validations"] == [{"rule": "self.a >= 0", "message": "a must be >= 0"}]
    assert p["inner"]["properties"]["a"] == {"default": 1, "description": "a", "type": "integer"}
    assert p["maybe"]["type"] == "object" and "default" not in p["maybe"] and "anyOf" not in p["maybe"]
    assert p["color"] == {"default": "red", "description": "c", "enum": ["red", "green"], "type": "string", "maxLength": 5}
    assert p["ratio"] == {"description": "r", "exclusiveMinimum": True, "minimum": 0, "maximum": 1, "type": "number"}
    assert p["fixed"]["enum"] == ["x"] and "const" not in p["fixed"]
    assert "propertyNames" not in p["labels"] and p["labels"]["maxProperties"] == 4
    assert "default" not in p["labels"] and "default" not in p["tags"]
    assert p["q"]["x-kubernetes-int-or-string"] is True and p["q"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "additionalProperties" not in s and "title" not in s and "$defs" not in s
    assert check_structural(s) == [] and compile_rules(s) == []


def test_strip_defaults() -> None:
    s = strip_defaults(to_structural(Outer.model_json_schema(by_alias=True)))
    assert "default" not in s["properties"]["color"] and "default" not in s["properties"]["inner"]["properties"]["a"]


class Union(BaseModel):
    v: int | str = Field(description="either")


@pytest.mark.parametrize("schema", [Union.model_json_schema(), {"type": "object", "properties": {"a": {"$ref": "#/$defs/Nope"}}}])
def test_refuses_what_a_crd_cannot_express(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaConversionError):
        to_structural(schema)
