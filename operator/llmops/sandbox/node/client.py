"""A tiny untyped REST layer over the official `kubernetes` client, for the sandbox's agents.

The node agent and the binder speak to *any* API server (the emulator or a real one) through
the kubeconfig, so they use the official client's transport (auth, TLS, proxies) but skip its
typed models: pods, nodes, leases and PodGroups are handled as plain dicts, which keeps custom
resources and status patches uniform and avoids lossy model round trips.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

__all__ = ["ApiException", "Kube", "WatchGone"]

MERGE_PATCH = "application/merge-patch+json"


class WatchGone(Exception):
    """The resourceVersion a watch resumed from is too old (HTTP 410 / ERROR event)."""


class Kube:
    """Dict-in, dict-out requests against one API server, thread-safe (urllib3 pool)."""

    def __init__(self, kubeconfig: str | None = None, *, api_client: k8s.ApiClient | None = None) -> None:
        if api_client is None:
            configuration = k8s.Configuration()
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            configuration.connection_pool_maxsize = 32
            api_client = k8s.ApiClient(configuration)
        self.api_client = api_client
        self._closed = threading.Event()

    def close(self) -> None:
        self._closed.set()
        self.api_client.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """One request; returns the decoded JSON body; raises ApiException on non-2xx."""
        resp = self.api_client.call_api(
            path,
            method,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=timeout,
        )
        data = resp.data
        return json.loads(data) if data else {}

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        return self.request("GET", path, query=query or None)

    def patch_merge(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, body, content_type=MERGE_PATCH)

    def watch(
        self, path: str, resource_version: str, *, timeout_seconds: int = 5, **query: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield watch events from `resource_version`; ends when the server closes the stream.

        Raises WatchGone when the server says the version is too old, so the caller re-lists.
        """
        params = {
            "watch": "true",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
            **query,
        }
        resp = self.api_client.call_api(
            path,
            "GET",
            query_params=list(params.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
            _request_timeout=(5, timeout_seconds + 5),
        )
        try:
            for line in iter_resp_lines(resp):
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    if status.get("code") == 410:
                        raise WatchGone(status.get("message", "gone"))
                    raise ApiException(status=status.get("code", 500), reason=status.get("message"))
                yield event
        finally:
            resp.release_conn()


def is_status(exc: BaseException, *codes: int) -> bool:
    """True when `exc` is an ApiException with one of the HTTP status codes."""
    return isinstance(exc, ApiException) and exc.status in codes
