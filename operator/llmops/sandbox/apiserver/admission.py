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
                   + ", ".join(f'"{n}"' for n in seccomp) + ' must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
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
