"""Label and field selectors, parsed once into predicates over stored objects.

Label selectors accept the full string grammar kubectl and client-go send: `k=v`, `k==v`,
`k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` (exists) and `!k` (does not exist), joined by
commas (commas inside parentheses belong to the set). Field selectors accept `=`, `==`,
`!=` on the fields kube-apiserver supports for the kind; any other field is a 400, as on a
real server, so code that works here also works there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_LABEL_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<val>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def parse_label_selector(text: str | None) -> Predicate:
    """A predicate over an object's metadata.labels."""
    if not text or not text.strip():
        return lambda obj: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_top(text):
        m = _LABEL_REQ.match(part)
        if not m or (m.group("neg") and m.group("op")):
            raise bad_request(f"unable to parse requirement: invalid label selector: {text!r}")
        key, op, val = m.group("key"), (m.group("op") or "").strip(), m.group("val")
        if not op:
            checks.append((lambda k: lambda lb: k not in lb)(key) if m.group("neg")
                          else (lambda k: lambda lb: k in lb)(key))
        elif op in ("=", "=="):
            checks.append((lambda k, v: lambda lb: lb.get(k) == v)(key, val))
        elif op == "!=":
            checks.append((lambda k, v: lambda lb: lb.get(k) != v)(key, val))
        else:
            if not (val.startswith("(") and val.endswith(")")):
                raise bad_request(f"unable to parse requirement: {part!r}: expected a set")
            values = {v.strip() for v in val[1:-1].split(",") if v.strip()}
            if op == "in":
                checks.append((lambda k, vs: lambda lb: lb.get(k) in vs)(key, values))
            else:
                checks.append((lambda k, vs: lambda lb: lb.get(k) not in vs)(key, values))

    def predicate(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


# Fields each kind supports in a field selector, besides metadata.name and metadata.namespace
# (kube-apiserver's per-kind field label conversion funcs).
FIELDS: dict[str, set[str]] = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
               "regarding.kind", "regarding.namespace", "regarding.name", "regarding.uid"},
    "secrets": {"type"},
    "nodes": {"spec.unschedulable"},
    "namespaces": {"status.phase"},
    "replicasets": {"status.replicas"},
}


def _field_value(obj: dict[str, Any], path: str) -> str:
    if path == "source":  # core/v1 Event: source.component
        path = "source.component"
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, plural: str) -> Predicate:
    if not text or not text.strip():
        return lambda obj: True
    allowed = {"metadata.name", "metadata.namespace"} | FIELDS.get(plural, set())
    checks: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        field, op, value = m.groups()
        if field not in allowed:
            raise bad_request(f'field label not supported: {field}')
        checks.append((field, op != "!=", value))

    def predicate(obj: dict[str, Any]) -> bool:
        return all((_field_value(obj, f) == v) == eq for f, eq, v in checks)

    return predicate


def selector_string(selector: dict[str, Any] | None) -> str:
    """A metav1.LabelSelector as the string form (the Scale subresource reports it)."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op, key, values = expr.get("operator"), expr.get("key"), expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
