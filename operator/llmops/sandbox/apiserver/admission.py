"""Pod Security admission, the part the project meets: a namespace labelled
``pod-security.kubernetes.io/enforce: baseline|restricted`` rejects pods that break the level
with 403 Forbidden, worded like the real API server:

    pods "x" is forbidden: violates PodSecurity "baseline:latest": non-default capabilities
    (container "worker" must not include "IPC_LOCK" in securityContext.capabilities.add)

Checked: baseline's privileged containers, hostPath volumes, host namespaces and added
capabilities outside the default set; restricted adds allowPrivilegeEscalation=false,
capabilities.drop ALL (only NET_BIND_SERVICE may be added), runAsNonRoot and a seccomp
profile. Not checked (the project's pods never use them): AppArmor, SELinux, procMount,
sysctls, host ports, volume types other than hostPath. The enforce-version label is ignored
(always "latest"); warn/audit modes are not emulated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ENFORCE = "pod-security.kubernetes.io/enforce"
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _baseline(spec: dict[str, Any]) -> list[str]:
    out = []
    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        out.append(f"host namespaces ({', '.join(host)})")
    priv = [c["name"] for c in _containers(spec) if ((c.get("securityContext") or {}).get("privileged"))]
    if priv:
        out.append("privileged (" + ", ".join(f'container "{n}" must not set securityContext.privileged=true' for n in priv) + ")")
    caps = [(c["name"], cap) for c in _containers(spec)
            for cap in (((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or []) if cap not in BASELINE_CAPS]
    if caps:
        out.append("non-default capabilities (" + "; ".join(
            f'container "{n}" must not include "{cap}" in securityContext.capabilities.add' for n, cap in caps) + ")")
    paths = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    if paths:
        out.append(f'hostPath volumes (volumes {", ".join(repr(p) for p in paths)})'.replace("'", '"'))
    return out


def _restricted(spec: dict[str, Any]) -> list[str]:
    out = []
    pod_sc = spec.get("securityContext") or {}
    ctrs = _containers(spec)
    esc = [c["name"] for c in ctrs if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False]
    if esc:
        out.append("allowPrivilegeEscalation != false (" + ", ".join(
            f'container "{n}" must set securityContext.allowPrivilegeEscalation=false' for n in esc) + ")")
    unrestricted = []
    for c in ctrs:
        caps = (c.get("securityContext") or {}).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            unrestricted.append(f'container "{c["name"]}" must set securityContext.capabilities.drop=["ALL"]')
        unrestricted += [f'container "{c["name"]}" must not include "{cap}" in securityContext.capabilities.add'
                         for cap in caps.get("add") or [] if cap != "NET_BIND_SERVICE"]
    if unrestricted:
        out.append("unrestricted capabilities (" + "; ".join(unrestricted) + ")")
    nonroot = [c["name"] for c in ctrs if ((c.get("securityContext") or {}).get("runAsNonRoot", pod_sc.get("runAsNonRoot"))) is not True]
    if nonroot:
        out.append("runAsNonRoot != true (pod or container" + ("s " if len(nonroot) > 1 else " ")
                   + ", ".join(f'"{n}"' for n in nonroot) + " must set securityContext.runAsNonRoot=true)")
    seccomp = [c["name"] for c in ctrs if not ((c.get("securityContext") or {}).get("seccompProfile") or pod_sc.get("seccompProfile"))]
    if seccomp:
        out.append("seccompProfile (pod or container" + ("s " if len(seccomp) > 1 else " ")
                   + ", ".join(f'"{n}"' for n in seccomp)
                   + ' must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    return out


def pod_security_violation(namespace_labels: dict[str, str], pod: dict[str, Any]) -> str | None:
    """The 403 message for a pod the namespace's enforce level rejects, or None."""
    level = (namespace_labels or {}).get(ENFORCE, "privileged")
    if level not in ("baseline", "restricted"):
        return None
    spec = pod.get("spec") or {}
    problems = _baseline(spec) + (_restricted(spec) if level == "restricted" else [])
    if not problems:
        return None
    name = (pod.get("metadata") or {}).get("name", "")
    return f'pods "{name}" is forbidden: violates PodSecurity "{level}:latest": ' + ", ".join(problems)


# -- typed apply patches --------------------------------------------------------------------------
# A real server turns an apply body into a typed object against the kind's OpenAPI schema before
# merging, and answers 500 "failed to create typed patch object" when a field has the wrong
# type. The emulator has no built-in schemas; it checks the string-valued fields apply bodies
# most often get wrong, which YAML 1.1 makes easy (`name: y`, `enabled: on`, `version: 1.10`).
_STRING_MAPS = {"ConfigMap": ("data", "binaryData"), "Secret": ("data", "stringData")}


def _go_value(v: Any) -> str:
    """How Go's %v prints a decoded JSON value (booleans lower-case, floats without .0)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    if v is None:
        return "<nil>"
    return str(v)


def _expect_string(path: str, v: Any) -> list[str]:
    if isinstance(v, str) or v is None:
        return []
    return [f"{path}: expected string, got &value.valueUnstructured{{Value:{_go_value(v)}}}"]


def _expect_string_map(path: str, v: Any) -> list[str]:
    if not isinstance(v, dict):
        return [] if v is None else [f"{path}: expected map, got &value.valueUnstructured{{Value:{_go_value(v)}}}"]
    return [e for k, item in v.items() for e in _expect_string(f"{path}.{k}", item)]


def builtin_type_errors(kind: str, obj: dict[str, Any]) -> list[str]:
    """Type errors of an apply body of a built-in kind, sorted by path like the real server's."""
    meta = obj.get("metadata")
    errors: list[str] = []
    if isinstance(meta, dict):
        for field in ("name", "namespace", "generateName"):
            errors += _expect_string(f".metadata.{field}", meta.get(field))
        for field in ("labels", "annotations"):
            errors += _expect_string_map(f".metadata.{field}", meta.get(field))
    for field in _STRING_MAPS.get(kind, ()):
        errors += _expect_string_map(f".{field}", obj.get(field))
    return sorted(errors)


# -- ServiceAccount, Priority and DefaultTolerationSeconds admission on pod create -----------------
# The real server's mutating admission refuses a pod naming a ServiceAccount or PriorityClass
# that does not exist (403 Forbidden, before any validation), and otherwise fills in the
# account, the priority and two NoExecute tolerations. Not emulated: the projected
# ServiceAccount token volume (`kube-api-access-*`) the real plugin mounts.
Lookup = Callable[[str, str | None, str], "dict[str, Any] | None"]  # (plural, namespace, name)
SYSTEM_PRIORITY_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}
DEFAULT_TOLERATIONS = [{"key": f"node.kubernetes.io/{k}", "operator": "Exists", "effect": "NoExecute",
                        "tolerationSeconds": 300} for k in ("not-ready", "unreachable")]


def admit_pod(pod: dict[str, Any], namespace: str, lookup: Lookup,
              default_class: dict[str, Any] | None) -> str | None:
    """Mutate `pod` as admission does; the 403 message when a plugin refuses it, else None.

    `default_class` is the PriorityClass marked globalDefault, if any."""
    meta, spec = pod.setdefault("metadata", {}), pod.setdefault("spec", {})
    name = meta.get("name") or meta.get("generateName") or ""
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    if lookup("serviceaccounts", namespace, account) is None:
        return (f'pods "{name}" is forbidden: error looking up service account {namespace}/{account}: '
                f'serviceaccount "{account}" not found')
    spec["serviceAccountName"] = spec["serviceAccount"] = account
    denied = _admit_priority(spec, name, lookup, default_class)
    if denied:
        return denied
    default_tolerations(spec)
    return None


def default_tolerations(spec: dict[str, Any]) -> None:
    """DefaultTolerationSeconds, on create and on every update (an apply that drops them gets
    them back rather than failing the only-additions rule)."""
    tolerations = spec.setdefault("tolerations", [])
    for default in DEFAULT_TOLERATIONS:
        if not any(t.get("key") == default["key"] and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
            tolerations.append(dict(default))


def _admit_priority(spec: dict[str, Any], name: str, lookup: Lookup,
                    default_class: dict[str, Any] | None) -> str | None:
    class_name = spec.get("priorityClassName")
    pc = lookup("priorityclasses", None, class_name) if class_name else default_class
    if class_name and pc is None:
        return f'pods "{name}" is forbidden: no PriorityClass with name {class_name} was found'
    value = int(pc.get("value", 0)) if pc else 0
    if spec.get("priority") is not None and spec["priority"] != value:
        return (f'pods "{name}" is forbidden: the integer value of priority ({spec["priority"]}) must not be '
                f"provided in pod spec; priority admission controller computed {value} from the given "
                "PriorityClass name")
    if pc is not None and not class_name:
        spec["priorityClassName"] = pc["metadata"]["name"]
    spec["priority"] = value
    spec["preemptionPolicy"] = (pc or {}).get("preemptionPolicy") or "PreemptLowerPriority"
    return None



# -- ResourceQuota on pod create -----------------------------------------------------------------
# The real server's last validating plugin: a pod that would take a namespace's object count
# past a quota's hard limit is refused with 403. Only the pod count (`pods`, `count/pods`) is
# emulated: the compute resources a quota may also limit are not (the project's tests never
# set them).
POD_COUNT_KEYS = ("pods", "count/pods")


def pods_in_use(pods: list[dict[str, Any]]) -> int:
    """Pods a quota charges: every pod not yet Succeeded or Failed."""
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"))


def quota_status(quota: dict[str, Any], used_pods: int) -> dict[str, Any]:
    """What the quota controller writes: the hard limits and what the namespace uses of them."""
    hard = dict((quota.get("spec") or {}).get("hard") or {})
    return {"hard": hard, "used": {k: str(used_pods) for k in hard if k in POD_COUNT_KEYS}}


def quota_violation(pod_name: str, quotas: list[dict[str, Any]], used_pods: int) -> str | None:
    """The 403 message when one more pod exceeds a quota, or None."""
    for quota in sorted(quotas, key=lambda q: q["metadata"]["name"]):
        for key in POD_COUNT_KEYS:
            limit = ((quota.get("spec") or {}).get("hard") or {}).get(key)
            if limit is not None and used_pods + 1 > int(str(limit)):
                return (f'pods "{pod_name}" is forbidden: exceeded quota: {quota["metadata"]["name"]}, '
                        f"requested: {key}=1, used: {key}={used_pods}, limited: {key}={limit}")
    return None
