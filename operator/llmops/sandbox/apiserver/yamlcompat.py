"""YAML request bodies read the way kube-apiserver reads them.

The real server converts YAML to JSON with sigs.k8s.io/yaml, whose scalar rules are go-yaml
v2's, i.e. YAML 1.1 as Go implements it, not PyYAML's YAML 1.1:

- booleans include ``y``/``Y``/``n``/``N`` as well as yes/no/on/off/true/false (in the usual
  three capitalisations), so ``name: y`` is ``true`` and the apply fails type checking;
- integers are parsed like Go's ``strconv.ParseInt(s, 0, 64)`` after removing ``_``:
  ``0x1F`` is 31, ``017`` is 15 (octal), ``0b101`` is 5, ``0o17`` is 15; no sexagesimal
  (PyYAML reads ``1:20`` as 80, Go keeps the string);
- timestamps stay strings (go-yaml keeps them strings when decoding into ``interface{}``);
- mapping keys become strings, as JSON object keys must (``true`` -> ``"true"``).

PyYAML's SafeLoader is reused for the syntax; only the implicit scalar resolution differs.
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|"
                   r"on|On|ON|off|Off|OFF)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
# Candidates only: the constructor decides (Go rejects e.g. "08" as an int, then it is a float).
_INT = re.compile(r"^[-+]?(?:0[bB][01_]+|0[oO][0-7_]+|0[xX][0-9a-fA-F_]+|[0-9][0-9_]*)$")
_FLOAT = re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?|"
                    r"[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}


class GoYamlLoader(yaml.SafeLoader):
    """SafeLoader with go-yaml v2's implicit scalar types and string mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
        # Keys become strings while the mapping is built: true and 1 are different JSON keys
        # but one Python dict key.
        self.flatten_mapping(node)
        return {_key(self.construct_object(k, deep=deep)): self.construct_object(v, deep=deep)
                for k, v in node.value}


GoYamlLoader.yaml_implicit_resolvers = {}
GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", _BOOL, list("yYnNtTfFoO"))
GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:null", _NULL, ["~", "n", "N", ""])
GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT, list("-+0123456789"))
GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
GoYamlLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"^<<$"), ["<"])


def _go_int(text: str) -> int | None:
    """`strconv.ParseInt(text, 0, 64)`: base from the prefix, a bare leading 0 is octal."""
    s = text.replace("_", "")
    sign = -1 if s.startswith("-") else 1
    body = s.lstrip("+-")
    try:
        if body[:2].lower() in ("0x", "0b", "0o"):
            value = int(body, 0)
        elif len(body) > 1 and body.startswith("0"):
            value = int(body, 8)
        else:
            value = int(body, 10)
    except ValueError:
        return None
    value *= sign
    return value if -(2**63) <= value < 2**64 else None


def _construct_bool(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> bool:
    return loader.construct_scalar(node) in _TRUE


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node))
    value = _go_int(text)
    if value is not None:
        return value
    return _construct_float(loader, node) if _FLOAT.match(text) else text


def _construct_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    text = str(loader.construct_scalar(node)).replace("_", "")
    lowered = text.lower()
    if lowered.endswith("inf"):
        return -math.inf if text.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    try:
        value = float(text)
    except ValueError:
        return text
    # JSON has one number type: Go writes 1000.0 as 1000, which the server then reads as an int.
    return int(value) if value.is_integer() else value


GoYamlLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
GoYamlLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
GoYamlLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def _key(k: Any) -> str:
    """A mapping key as JSON has it: a string, Go-formatted."""
    if isinstance(k, bool):
        return "true" if k else "false"
    return "null" if k is None else str(k)


def load(text: str) -> Any:
    """One YAML document as kube-apiserver decodes it (raises yaml.YAMLError)."""
    return yaml.load(text, Loader=GoYamlLoader)  # noqa: S506 - a SafeLoader subclass
