"""Server-side printing: the meta.k8s.io/v1 Table that `kubectl get` asks for.

kubectl sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever
columns the server returns, so custom resources get their `additionalPrinterColumns` here
(evaluated with the small JSONPath subset CRDs use in practice: `.a.b`, `.a[0].b`,
`.a[?(@.type=="X")].b`), and a few built-in kinds get the columns people expect.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from llmops.api.conditions import parse_time as api_parse_time

from .registry import Resource

_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*["\']([^"\']*)["\']\)\]')


def jsonpath(obj: Any, expr: str) -> Any:
    """Evaluate the JSONPath subset; None when any step is missing."""
    expr = expr.strip()
    if expr.startswith("{") and expr.endswith("}"):
        expr = expr[1:-1]
    if expr.startswith("$"):
        expr = expr[1:]
    cur, pos = obj, 0
    while pos < len(expr):
        m = _STEP.match(expr, pos)
        if not m:
            return None
        pos = m.end()
        field, index, fkey, fval = m.groups()
        if field is not None:
            cur = cur.get(field) if isinstance(cur, dict) else None
        elif index is not None:
            cur = cur[int(index)] if isinstance(cur, list) and int(index) < len(cur) else None
        else:
            cur = next((i for i in cur or [] if isinstance(i, dict)
                        and str(jsonpath(i, "." + fkey)) == fval), None) if isinstance(cur, list) else None
        if cur is None:
            return None
    return cur


def parse_time(value: str) -> dt.datetime | None:
    """Lenient for a table cell: text that is not a time has no age."""
    try:
        return api_parse_time(value or None)
    except ValueError:
        return None


def human_age(since: str | None, now: dt.datetime) -> str:
    """kubectl's short duration: 45s, 3m12s, 5h, 2d3h..."""
    t = parse_time(since or "")
    if t is None:
        return "<unknown>"
    s = max(0, int((now - t).total_seconds()))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 48:
        return f"{h}h"
    d = h // 24
    return f"{d}d{h % 24}h" if d < 8 and h % 24 else f"{d}d"


def _col(name: str, type_: str = "string", description: str = "", priority: int = 0,
         format_: str = "") -> dict[str, Any]:
    return {"name": name, "type": type_, "format": format_, "description": description,
            "priority": priority}


NAME = _col("Name", format_="name", description="Name must be unique within a namespace.")
AGE = _col("Age", description="CreationTimestamp is a timestamp representing the server time "
                              "when this object was created.")

Cell = Callable[[dict[str, Any], dt.datetime], Any]


def _pod_ready(pod: dict[str, Any], now: dt.datetime) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_status(pod: dict[str, Any], now: dt.datetime) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason")
        if reason:
            return reason
    return status.get("reason") or status.get("phase") or "Unknown"


def _pod_restarts(pod: dict[str, Any], now: dt.datetime) -> int:
    return sum(int(s.get("restartCount") or 0)
               for s in (pod.get("status") or {}).get("containerStatuses") or [])


def _node_status(node: dict[str, Any], now: dt.datetime) -> str:
    ready = next((c for c in (node.get("status") or {}).get("conditions") or []
                  if c.get("type") == "Ready"), None)
    text = "Ready" if ready and ready.get("status") == "True" else "NotReady" if ready else "Unknown"
    if (node.get("spec") or {}).get("unschedulable"):
        text += ",SchedulingDisabled"
    return text


def _get(path: str, default: Any = "") -> Cell:
    return lambda obj, now: (lambda v: default if v is None else v)(jsonpath(obj, path))


BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[dict[str, Any], Cell]]] = {
    ("", "pods"): [
        (_col("Ready", description="The aggregate readiness state of this pod."), _pod_ready),
        (_col("Status", description="The aggregate status of the containers in this pod."), _pod_status),
        (_col("Restarts", "string", "The number of times the containers in this pod restarted."),
         _pod_restarts),
        (AGE, None),
        (_col("IP", priority=1), _get(".status.podIP", "<none>")),
        (_col("Node", priority=1), _get(".spec.nodeName", "<none>")),
    ],
    ("", "nodes"): [
        (_col("Status"), _node_status),
        (_col("Roles"), lambda o, n: "<none>"),
        (AGE, None),
        (_col("Version"), _get(".status.nodeInfo.kubeletVersion")),
    ],
    ("", "namespaces"): [(_col("Status"), _get(".status.phase")), (AGE, None)],
    ("apps", "deployments"): [
        (_col("Ready"), lambda o, n: f"{jsonpath(o, '.status.readyReplicas') or 0}/"
                                     f"{jsonpath(o, '.spec.replicas') or 0}"),
        (_col("Up-to-date", "integer"), _get(".status.updatedReplicas", 0)),
        (_col("Available", "integer"), _get(".status.availableReplicas", 0)),
        (AGE, None),
    ],
    ("", "services"): [
        (_col("Type"), _get(".spec.type", "ClusterIP")),
        (_col("Cluster-IP"), _get(".spec.clusterIP", "<none>")),
        (AGE, None),
    ],
    ("", "events"): [
        (_col("Type"), _get(".type")),
        (_col("Reason"), _get(".reason")),
        (_col("Object"), lambda o, n: f"{str(jsonpath(o, '.involvedObject.kind') or '').lower()}/"
                                      f"{jsonpath(o, '.involvedObject.name') or ''}"),
        (_col("Message"), _get(".message")),
    ],
}


def _crd_columns(res: Resource) -> list[tuple[dict[str, Any], Cell]]:
    if not res.printer_columns:
        return [(AGE, None)]
    out: list[tuple[dict[str, Any], Cell]] = []
    for pc in res.printer_columns:
        col = _col(pc["name"], pc.get("type", "string"), pc.get("description", ""),
                   int(pc.get("priority", 0)), pc.get("format", ""))
        if col["type"] == "date":
            col = {**col, "type": "string"}
            out.append((col, (lambda p: lambda o, now: human_age(jsonpath(o, p), now)
                              if jsonpath(o, p) else "<unknown>")(pc["jsonPath"])))
        else:
            out.append((col, (lambda p: lambda o, now: jsonpath(o, p))(pc["jsonPath"])))
    return out


def columns_for(res: Resource) -> list[tuple[dict[str, Any], Cell]]:
    cols = _crd_columns(res) if res.custom else BUILTIN_COLUMNS.get(res.group_resource, [(AGE, None)])
    return [(NAME, None), *cols]


def _cell(col: dict[str, Any], fn: Cell | None, obj: dict[str, Any], now: dt.datetime) -> Any:
    if fn is None:
        meta = obj.get("metadata") or {}
        return meta.get("name", "") if col is NAME else human_age(meta.get("creationTimestamp"), now)
    value = fn(obj, now)
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def to_table(res: Resource, objects: list[dict[str, Any]], list_meta: dict[str, Any],
             include_object: str = "Metadata") -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    cols = columns_for(res)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [_cell(c, f, obj, now) for c, f in cols]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": obj.get("metadata") or {}}
        rows.append(row)
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": [c for c, _ in cols], "rows": rows}
