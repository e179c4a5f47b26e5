"""Validation of built-in kinds, the part the project's clients meet, worded like apimachinery's.

Returns errors as (field path, type, detail) for `Cluster._invalid`, in the real server's
order: object metadata (label and annotation keys and values, finalizer names), then the
kind's own fields (ConfigMap keys; a pod's containers, their names and images, its restart
policy, its node selector). Everything else about built-in kinds is accepted as sent.
"""

from __future__ import annotations

import re
from typing import Any

Error = tuple[str, str, str]

_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
STANDARD_FINALIZERS = {"kubernetes", "orphan", "foregroundDeletion"}
RESTART_POLICIES = ("Always", "OnFailure", "Never")

NAME_PART_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                 "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                 "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
PREFIX_MSG = ("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
              "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
              "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
CONFIG_KEY_MSG = ("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
                  "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")
DNS_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
                 "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
                 "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


#: apimachinery's limit on the keys and values of an object's annotations, together.
TOTAL_ANNOTATION_BYTES = 256 * 1024


def _invalid(path: str, value: str, why: str) -> Error:
    return (path, "Invalid value", f'Invalid value: "{value}": {why}')


def qualified_name_errors(path: str, key: str) -> list[Error]:
    prefix, _, name = key.rpartition("/")
    errors = []
    if "/" in key and (not prefix or len(prefix) > 253 or not _SUBDOMAIN.match(prefix)):
        errors.append(_invalid(path, key, PREFIX_MSG))
    if not name or len(name) > 63 or not _NAME_PART.match(name):
        errors.append(_invalid(path, key, NAME_PART_MSG))
    return errors


def label_map_errors(path: str, labels: dict[str, Any]) -> list[Error]:
    """Keys are qualified names and values label values: metadata.labels, a pod's nodeSelector."""
    errors: list[Error] = []
    for key, value in labels.items():
        errors += qualified_name_errors(path, key)
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            errors.append(_invalid(path, str(value), LABEL_VALUE_MSG))
    return errors


def metadata_errors(meta: dict[str, Any], update: bool) -> list[Error]:
    errors = label_map_errors("metadata.labels", meta.get("labels") or {})
    annotations = meta.get("annotations") or {}
    for key in annotations:
        errors += qualified_name_errors("metadata.annotations", key)
    if sum(len(k) + len(str(v)) for k, v in annotations.items()) > TOTAL_ANNOTATION_BYTES:
        errors.append(("metadata.annotations", "Too long", f"Too long: may not be more than {TOTAL_ANNOTATION_BYTES} bytes"))
    for i, name in enumerate(meta.get("finalizers") or []):
        path = f"metadata.finalizers[{i}]"
        if name in STANDARD_FINALIZERS:
            continue
        found = qualified_name_errors(path, name) if "/" in name else [
            _invalid(path, name, "name is neither a standard finalizer name nor is it fully qualified")]
        # An update validates the new metadata twice (as new object and as an update).
        errors += found * (2 if update else 1)
    return errors


def _configmap(obj: dict[str, Any]) -> list[Error]:
    return [_invalid(f"{field}[{key}]", key, CONFIG_KEY_MSG)
            for field in ("data", "binaryData") for key in (obj.get(field) or {})
            if len(key) > 253 or not _CONFIG_KEY.match(key)]


def _pod(obj: dict[str, Any]) -> list[Error]:
    spec = obj.get("spec") or {}
    errors: list[Error] = []
    containers = spec.get("containers") or []
    if not containers:
        errors.append(("spec.containers", "Required value", "Required value"))
    for i, c in enumerate(containers):
        name = c.get("name") or ""
        if not name:
            errors.append((f"spec.containers[{i}].name", "Required value", "Required value"))
        elif len(name) > 63 or not _DNS_LABEL.match(name):
            errors.append(_invalid(f"spec.containers[{i}].name", name, DNS_LABEL_MSG))
        if not c.get("image"):
            errors.append((f"spec.containers[{i}].image", "Required value", "Required value"))
    policy = spec.get("restartPolicy")
    if policy not in RESTART_POLICIES:
        supported = ", ".join(f'"{p}"' for p in RESTART_POLICIES)
        errors.append(("spec.restartPolicy", "Unsupported value",
                       f'Unsupported value: "{policy}": supported values: {supported}'))
    errors += label_map_errors("spec.nodeSelector", spec.get("nodeSelector") or {})  # after the policy, as the server orders them
    return errors


_KINDS = {"ConfigMap": _configmap, "Pod": _pod}


def builtin_errors(kind: str, obj: dict[str, Any], update: bool) -> list[Error]:
    errors = metadata_errors(obj.get("metadata") or {}, update)
    check = _KINDS.get(kind)
    if check is not None and not (update and kind == "Pod"):  # pod updates: Cluster._check_pod_update
        errors += check(obj)
    return errors
