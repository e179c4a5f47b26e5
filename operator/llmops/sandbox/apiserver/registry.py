"""Which resources are served, and the discovery documents that describe them.

A `Resource` is one (group, version, plural) with everything discovery, routing, tables,
patching and validation need to know about it. Built-in kinds are a fixed table; a CRD
stored through the API adds one `Resource` per served version and removing it takes them
away again, which is how "apply a CRD, get a served resource" works.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable
from typing import Any

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Subresources by name: "status", "scale", "log", "binding".
    subresources: frozenset[str] = frozenset()
    # CRD-only facts.
    schema: dict[str, Any] | None = None
    printer_columns: tuple[dict[str, Any], ...] = ()
    scale_paths: tuple[str, str, str] = (".spec.replicas", ".status.replicas", "")
    custom: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    def discovery_entries(self) -> list[dict[str, Any]]:
        main = {
            "name": self.plural,
            "singularName": self.singular_name,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": VERBS,
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        for sub in sorted(self.subresources):
            kind, verbs = {
                "status": (self.kind, ["get", "patch", "update"]),
                "scale": ("Scale", ["get", "patch", "update"]),
                "log": ("Pod", ["get"]),
                "binding": ("Binding", ["create"]),
            }[sub]
            entry = {"name": f"{self.plural}/{sub}", "singularName": "", "namespaced": self.namespaced,
                     "kind": kind, "verbs": verbs}
            if sub == "scale":
                entry["group"], entry["version"] = "autoscaling", "v1"
            entries.append(entry)
        return entries


def _r(gv: str, plural: str, kind: str, namespaced: bool = True, short: str = "",
       subs: str = "", categories: str = "") -> Resource:
    group, _, version = gv.rpartition("/")
    return Resource(group, version, plural, kind, namespaced,
                    short_names=tuple(short.split()), subresources=frozenset(subs.split()),
                    categories=tuple(categories.split()))


BUILTINS: tuple[Resource, ...] = (
    _r("v1", "namespaces", "Namespace", False, "ns", "status"),
    _r("v1", "pods", "Pod", True, "po", "status log binding", "all"),
    _r("v1", "services", "Service", True, "svc", "status", "all"),
    _r("v1", "endpoints", "Endpoints", True, "ep"),
    _r("v1", "configmaps", "ConfigMap", True, "cm"),
    _r("v1", "secrets", "Secret"),
    _r("v1", "events", "Event", True, "ev"),
    _r("v1", "nodes", "Node", False, "no", "status"),
    _r("v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, "pvc", "status"),
    _r("v1", "serviceaccounts", "ServiceAccount", True, "sa"),
    _r("v1", "resourcequotas", "ResourceQuota", True, "quota", "status"),
    _r("apps/v1", "deployments", "Deployment", True, "deploy", "status scale", "all"),
    _r("apps/v1", "replicasets", "ReplicaSet", True, "rs", "status scale", "all"),
    _r("coordination.k8s.io/v1", "leases", "Lease"),
    _r("policy/v1", "poddisruptionbudgets", "PodDisruptionBudget", True, "pdb", "status"),
    _r("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy", True, "netpol"),
    _r("autoscaling/v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", True, "hpa",
       "status", "all"),
    _r("rbac.authorization.k8s.io/v1", "roles", "Role"),
    _r("rbac.authorization.k8s.io/v1", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io/v1", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io/v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _r("events.k8s.io/v1", "events", "Event", True, "ev"),
    _r("scheduling.k8s.io/v1", "priorityclasses", "PriorityClass", False, "pc"),
    _r("scheduling.k8s.io/v1alpha2", "podgroups", "PodGroup", True, "", "status"),
    _r("apiextensions.k8s.io/v1", "customresourcedefinitions", "CustomResourceDefinition",
       False, "crd crds", "status"),
    _r("kopf.dev/v1", "clusterkopfpeerings", "ClusterKopfPeering", False),
    _r("kopf.dev/v1", "kopfpeerings", "KopfPeering"),
)


def resources_from_crd(crd: dict[str, Any]) -> list[Resource]:
    """One Resource per served version of a CRD object."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    out = []
    for ver in spec.get("versions") or []:
        if not ver.get("served", True):
            continue
        subs = ver.get("subresources") or {}
        scale = subs.get("scale") or {}
        out.append(Resource(
            group=spec.get("group", ""),
            version=ver["name"],
            plural=names.get("plural", ""),
            kind=names.get("kind", ""),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            singular=names.get("singular", ""),
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=frozenset(k for k in ("status", "scale") if k in subs),
            schema=(ver.get("schema") or {}).get("openAPIV3Schema"),
            printer_columns=tuple(ver.get("additionalPrinterColumns") or ()),
            scale_paths=(scale.get("specReplicasPath", ".spec.replicas"),
                         scale.get("statusReplicasPath", ".status.replicas"),
                         scale.get("labelSelectorPath", "")),
            custom=True,
        ))
    return out


class Registry:
    """Served resources, looked up by (group, version, plural)."""

    def __init__(self, builtins: Iterable[Resource] = BUILTINS) -> None:
        self._by_gvr: dict[tuple[str, str, str], Resource] = {}
        self._crd_owned: dict[str, list[tuple[str, str, str]]] = {}
        for res in builtins:
            self._add(res)

    def _add(self, res: Resource) -> None:
        self._by_gvr[(res.group, res.version, res.plural)] = res

    def get(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_gvr.get((group, version, plural))

    def any_version(self, group: str, plural: str) -> Resource | None:
        return next((r for r in self._by_gvr.values() if (r.group, r.plural) == (group, plural)), None)

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        return next((r for r in self._by_gvr.values()
                     if r.api_version == api_version and r.kind == kind), None)

    def set_crd(self, crd: dict[str, Any]) -> None:
        """(Re)serve the resources a CRD declares."""
        self.remove_crd(crd["metadata"]["name"])
        keys = []
        for res in resources_from_crd(crd):
            self._add(res)
            keys.append((res.group, res.version, res.plural))
        self._crd_owned[crd["metadata"]["name"]] = keys

    def remove_crd(self, name: str) -> None:
        for key in self._crd_owned.pop(name, []):
            self._by_gvr.pop(key, None)

    # -- discovery documents ------------------------------------------------------------------

    def versions(self, group: str) -> list[str]:
        seen: list[str] = []
        for r in self._by_gvr.values():
            if r.group == group and r.version not in seen:
                seen.append(r.version)
        # Kubernetes orders versions by stability: GA before beta before alpha.
        return sorted(seen, key=_version_priority)

    def groups(self) -> list[str]:
        seen: list[str] = []
        for r in self._by_gvr.values():
            if r.group and r.group not in seen:
                seen.append(r.group)
        return seen

    def api_group(self, group: str) -> dict[str, Any] | None:
        versions = self.versions(group)
        if not versions:
            return None
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": gvs,
                "preferredVersion": gvs[0]}

    def api_group_list(self) -> dict[str, Any]:
        groups = [self.api_group(g) for g in self.groups()]
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")}
                           for g in groups if g]}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        entries = [e for r in self._by_gvr.values() if (r.group, r.version) == (group, version)
                   for e in r.discovery_entries()]
        if not entries:
            return None
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": entries}


def _version_priority(version: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    stability = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stability, -int(m.group(1)), -int(m.group(3) or 0))
