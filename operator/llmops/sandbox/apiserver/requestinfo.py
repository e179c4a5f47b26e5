"""What a REST request is about: verb, group/version, resource, subresource, namespace, name.

Both the emulator and the fault proxy (``llmops.sandbox.faultproxy``) classify requests with
this one pure function, so a fault rule such as ``fail(verb="patch", resource="pods/status")``
matches the same requests whichever server is behind the kubeconfig. The rules follow
kube-apiserver's own request-info parser: ``/api/v1`` and ``/apis/G/V`` prefixes, an optional
``watch/`` segment (the legacy watch paths), ``namespaces/NS/`` in front of a namespaced
resource unless the next segment is a namespace subresource, and the verb derived from the
HTTP method plus whether a name or ``watch=true`` is present. It needs no discovery: which
resources exist is for the server to decide, not for the classification.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

#: Subresources of a Namespace object; any other segment after namespaces/NS/ is a resource.
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclasses.dataclass(frozen=True)
class RequestInfo:
    verb: str | None  # Kubernetes verb; None for a method the API does not serve (HEAD, OPTIONS)
    group: str
    version: str
    plural: str
    sub: str  # "" when the request is for the object (or collection) itself
    namespace: str | None  # None for cluster-scoped paths and for Namespace objects themselves
    name: str | None
    tail: tuple[str, ...] = ()  # segments after the subresource (pods/x/proxy/a/b)

    @property
    def resource(self) -> str:
        """How fault rules name it: "pods" or "pods/status"."""
        return f"{self.plural}/{self.sub}" if self.sub else self.plural


def truthy(value: str | None) -> bool:
    return value in ("true", "1", "True")


def parse(method: str, path: str, query: Mapping[str, str]) -> RequestInfo | None:
    """Classify a resource request; None for anything else (discovery, /version, /healthz)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch = rest[0] == "watch"
    if watch:
        rest = rest[1:]
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    name = rest[1] if len(rest) > 1 else None
    watch = watch or truthy(query.get("watch"))
    if method == "GET":
        verb: str | None = "watch" if watch else "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _VERBS.get(method)
    return RequestInfo(verb, group, version, rest[0], rest[2] if len(rest) > 2 else "", namespace,
                       name, tuple(rest[3:]))
