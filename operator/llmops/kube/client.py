"""A small, generic, dict-in/dict-out layer over the `kubernetes` client.

Why not the typed client: the operator builds plain dicts (builders are pure and must render
for `llmops render` without a cluster) and applies them with server-side apply under one field
manager. Going through typed models would mean converting twice and losing fields the client
does not know (CRDs, PodGroups of several schedulers). So this module turns
(apiVersion, kind, namespace, name) into a URL and speaks JSON, using the `kubernetes`
ApiClient for configuration, auth, TLS and connection pooling.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

FIELD_MANAGER = "llmops-operator"


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status reason."""

    def __init__(self, status: int, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.retry_after = retry_after  # seconds the server asked us to wait (429/503 Retry-After)

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class NotServedError(ApiError):
    """Discovery says the cluster does not serve this kind at this group/version (an API
    that is not installed, e.g. Volcano's PodGroup): a 404 about the API, not about an object."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(404, "NotFound", f"{kind} is not served at {api_version}")
        self.api_version = api_version
        self.kind = kind


#: How long a discovery answer is believed. Absent groups are cached too, so a job asking for
#: an uninstalled gang backend costs no request per reconcile; an API installed later is seen
#: within this time.
DISCOVERY_TTL_SECONDS = 60.0


def api_error(exc: ApiException) -> ApiError:
    """Our ApiError from the client's exception: the Status reason and message, and the
    server's Retry-After (header, else the Status's details.retryAfterSeconds)."""
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body
    reason, message, retry_after = "Unknown", body or exc.reason, None
    try:
        status = json.loads(body)
        reason, message = status.get("reason", reason), status.get("message", message)
        retry_after = (status.get("details") or {}).get("retryAfterSeconds")
    except (TypeError, ValueError, AttributeError):
        pass
    header = (exc.headers or {}).get("Retry-After")
    with contextlib.suppress(ValueError):  # an HTTP date: fall back to the details or the caller's backoff
        retry_after = float(header) if header is not None else retry_after
    return ApiError(exc.status or 0, str(reason), str(message), None if retry_after is None else float(retry_after))


def load_api_client(kubeconfig: str | None = None, connections: int | None = None) -> ApiClient:
    """In-cluster config when running in a pod, else the given or default kubeconfig.

    Never touches the `kubernetes` package's global default configuration, so several
    clients (tests, the sandbox) can coexist in one process. ``connections``: how many
    requests may be open at once (the client's default is 5 per core; past it each request
    opens and drops a TLS connection), for a caller with many threads or watch streams.
    """
    configuration = kubernetes.client.Configuration()
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    if kubeconfig is None:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            return ApiClient(configuration)
        except kubernetes.config.ConfigException:
            pass
    kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return ApiClient(configuration)


# Built-in kinds the operator touches: kind -> (plural, namespaced). CRDs and anything else
# are resolved through discovery once and cached.
_BUILTIN = {
    ("v1", "Pod"): ("pods", True),
    ("v1", "Service"): ("services", True),
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "Secret"): ("secrets", True),
    ("v1", "Event"): ("events", True),
    ("v1", "Node"): ("nodes", False),
    ("v1", "Namespace"): ("namespaces", False),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "PersistentVolumeClaim"): ("persistentvolumeclaims", True),
    ("apps/v1", "Deployment"): ("deployments", True),
    ("coordination.k8s.io/v1", "Lease"): ("leases", True),
    ("policy/v1", "PodDisruptionBudget"): ("poddisruptionbudgets", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): ("horizontalpodautoscalers", True),
    ("events.k8s.io/v1", "Event"): ("events", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networkpolicies", True),
}


class Kube:
    """Generic verbs on plain dicts. One field manager for every write."""

    def __init__(self, api_client: ApiClient, field_manager: str = FIELD_MANAGER,
                 clock: Any = time.monotonic, discovery_ttl: float = DISCOVERY_TTL_SECONDS) -> None:
        self.api = api_client
        self.field_manager = field_manager
        self._resources: dict[tuple[str, str], tuple[str, bool]] = dict(_BUILTIN)
        # group/version -> (when asked, its resources or None when not served)
        self._listings: dict[str, tuple[float, list[dict] | None]] = {}
        self._clock = clock
        self._ttl = discovery_ttl
        self._lock = threading.Lock()

    # --- plumbing ---------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        query: Iterable[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            response = self.api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=30,
            )
        except ApiException as exc:
            raise api_error(exc) from None
        data = response.data
        return json.loads(data) if data else None

    def _listing(self, group_version: str) -> list[dict] | None:
        """The resources served at a group/version, None when it is not served (cached for the
        discovery TTL, absent answers too)."""
        now = self._clock()
        with self._lock:
            cached = self._listings.get(group_version)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        try:
            listing: list[dict] | None = (self._request("GET", prefix) or {}).get("resources", [])
        except ApiError as exc:
            if exc.status != 404:
                raise
            listing = None
        with self._lock:
            self._listings[group_version] = (now, listing)
        return listing

    def _discover(self, api_version: str, kind: str) -> tuple[str, bool]:
        with self._lock:
            if (api_version, kind) in self._resources:
                return self._resources[(api_version, kind)]
        found = None
        for res in self._listing(api_version) or []:
            if "/" in res["name"]:
                continue
            with self._lock:
                self._resources[(api_version, res["kind"])] = (res["name"], res["namespaced"])
            if res["kind"] == kind:
                found = (res["name"], res["namespaced"])
        if found is None:
            raise NotServedError(api_version, kind)
        return found

    def path(self, api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        plural, namespaced = self._discover(api_version, kind)
        prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        parts = [prefix]
        if namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(plural)
        if name:
            parts.append(name)
        return "/".join(parts)

    # --- verbs ------------------------------------------------------------------------------
    def served(self, group_version: str) -> set[str]:
        """Resource plurals served at a group/version (empty when the group is absent);
        cached for the discovery TTL."""
        return {r["name"] for r in self._listing(group_version) or [] if "/" not in r["name"]}

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        try:
            return self._request("GET", self.path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.not_found:
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict]:
        query = [("labelSelector", label_selector)] if label_selector else []
        try:  # a kind that is not served (an absent gang scheduler) simply has no objects
            result = self._request("GET", self.path(api_version, kind, namespace), query=query)
        except ApiError as exc:
            if exc.not_found:
                return []
            raise
        return result.get("items", [])

    def apply(self, obj: dict) -> dict:
        """Server-side apply with our single field manager (creates when absent)."""
        meta = obj["metadata"]
        path = self.path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        return self._request(
            "PATCH",
            path,
            query=[("fieldManager", self.field_manager), ("force", "true")],
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        grace_seconds: int | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete (guarded by uid when given). False when it was already gone."""
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            self._request("DELETE", self.path(api_version, kind, namespace, name), body=body)
            return True
        except ApiError as exc:
            if exc.not_found or exc.conflict:  # gone, or a different object now holds the name
                return False
            raise

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict) -> dict:
        """JSON merge patch of the status subresource (status is ours alone: no conflicts)."""
        path = self.path(api_version, kind, namespace, name) + "/status"
        return self._request(
            "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
        )

    def patch(self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict,
              subresource: str | None = None) -> dict:
        path = self.path(api_version, kind, namespace, name) + (f"/{subresource}" if subresource else "")
        return self._request("PATCH", path, body=patch, content_type="application/merge-patch+json")

    def replace_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict,
                       resource_version: str | None = None) -> dict:
        """Write the whole status (JSON patch), optionally guarded by resourceVersion (409 on a race)."""
        ops: list[dict] = []
        if resource_version:
            ops.append({"op": "test", "path": "/metadata/resourceVersion", "value": resource_version})
        ops.append({"op": "add", "path": "/status", "value": status})
        path = self.path(api_version, kind, namespace, name) + "/status"
        return self._request("PATCH", path, body=ops, content_type="application/json-patch+json")

    def refresh(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Make the next read of this object current (reads are always current here; see kube.cache)."""

    def create(self, obj: dict) -> dict:
        meta = obj["metadata"]
        return self._request("POST", self.path(obj["apiVersion"], obj["kind"], meta.get("namespace")), body=obj)
