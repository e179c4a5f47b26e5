"""Pure helpers over pod specs: resource requests, environment assembly, $(VAR) expansion.

Nothing here does I/O; the agent passes in what it observed (the pod, ConfigMaps, Secrets,
the pod IP) and gets back plain values, so each rule is table-tested.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from llmops.api.quantity import parse_quantity

#: + sanitized mountPath (/data/ckpt -> LLMOPS_MOUNT_DATA_CKPT): the local directory of one volumeMount (sandbox only)
MOUNT_ENV_PREFIX = "LLMOPS_MOUNT_"

Pod = dict[str, Any]

def container_requests(container: Mapping[str, Any]) -> dict[str, Decimal]:
    """requests, with limits standing in for missing requests (as the API server defaults them)."""
    resources = container.get("resources") or {}
    merged = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return {name: parse_quantity(q) for name, q in merged.items()}


def pod_requests(pod: Pod) -> dict[str, Decimal]:
    """Effective pod request as the scheduler computes it: max(sum(containers), max(init))."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for name, q in container_requests(container).items():
            total[name] = total.get(name, Decimal(0)) + q
    for container in spec.get("initContainers") or []:
        for name, q in container_requests(container).items():
            total[name] = max(total.get(name, Decimal(0)), q)
    return total


def qos_class(pod: Pod) -> str:
    """Guaranteed when every container limits cpu and memory with requests equal to limits,
    BestEffort when none requests or limits anything, Burstable otherwise."""
    containers = [*((pod.get("spec") or {}).get("containers") or []), *((pod.get("spec") or {}).get("initContainers") or [])]
    any_set, guaranteed = False, True
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, {**(res.get("limits") or {}), **(res.get("requests") or {})}
        any_set = any_set or bool(limits or res.get("requests"))
        for r in ("cpu", "memory"):
            if r not in limits or parse_quantity(limits[r]) != parse_quantity(requests[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def memory_limit_bytes(container: Mapping[str, Any]) -> int | None:
    limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
    return int(parse_quantity(limit)) if limit is not None else None


_VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubelet's $(VAR) expansion: known names are replaced, unknown references stay as written,
    and ``$$`` escapes a dollar (so ``$$(X)`` yields the literal ``$(X)``)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _VAR_REF.sub(sub, text)


def field_ref(pod: Pod, path: str, pod_ip: str) -> str:
    """The downward-API fields a sandbox pod may read through env valueFrom.fieldRef."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    fixed = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": pod_ip,
    }
    if path in fixed:
        return fixed[path]
    for prefix, source in (("metadata.labels", meta.get("labels")), ("metadata.annotations", meta.get("annotations"))):
        m = re.fullmatch(re.escape(prefix) + r"\['(.+)'\]", path)
        if m:
            return (source or {}).get(m.group(1), "")
    raise ValueError(f"unsupported fieldRef {path!r}")


# Looks up (kind, namespace, name) -> data dict (Secret data already base64-decoded) or None.
Lookup = Callable[[str, str, str], dict[str, str] | None]


class ConfigError(Exception):
    """A pod references something missing (kubelet's CreateContainerConfigError)."""


def decode_secret(secret: Mapping[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def container_env(
    pod: Pod, container: Mapping[str, Any], pod_ip: str, lookup: Lookup, base: Mapping[str, str] = {}
) -> dict[str, str]:
    """The environment of one container, in kubelet order: `base` (agent-provided), envFrom,
    then env entries in order, each value expanded against what is defined before it."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = lookup(kind, namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        value_from = item["valueFrom"]
        if "fieldRef" in value_from:
            env[name] = field_ref(pod, value_from["fieldRef"]["fieldPath"], pod_ip)
        elif "resourceFieldRef" in value_from:
            ref = value_from["resourceFieldRef"]
            limits = {**((container.get("resources") or {}).get("requests") or {}),
                      **((container.get("resources") or {}).get("limits") or {})}  # fmt: skip
            resource = ref["resource"].split(".", 1)[1]
            raw = limits.get(resource)
            env[name] = str(int(parse_quantity(raw) / parse_quantity(ref.get("divisor", "1")))) if raw else "0"
        else:
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                ref = value_from.get(key)
                if ref is None:
                    continue
                data = lookup(kind, namespace, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        break
                    raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind} {namespace}/{ref["name"]}')
                env[name] = data[ref["key"]]
    return env


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expansion. With no command the image's entrypoint would run;
    there are no images here, so args alone are taken as the command."""
    argv = [expand(str(a), env) for a in (container.get("command") or [])]
    argv += [expand(str(a), env) for a in (container.get("args") or [])]
    if not argv:
        raise ConfigError(f'container "{container.get("name")}" has no command: the sandbox runs no images')
    return argv


def mount_env_name(mount_path: str) -> str:
    """`/data/ckpt-1` -> `LLMOPS_MOUNT_DATA_CKPT_1` (the per-mount variable the agent exports)."""
    return MOUNT_ENV_PREFIX + (re.sub(r"[^A-Za-z0-9]+", "_", mount_path).strip("_").upper() or "ROOT")
