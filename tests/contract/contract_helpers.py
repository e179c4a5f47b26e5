"""Helpers for the contract suite: a raw JSON client over the kubeconfig's ApiClient, the
test CRD (`Widget`, group contract.llmops.dev) and kubectl.

Every test talks HTTP through a kubeconfig, so the same assertions run against the emulator
(default) and against a real cluster (LLMOPS_TEST_KUBECONFIG); objects are created only in
`fresh_namespace`, except the test CRD, which is cluster-scoped and left installed.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml
from kubernetes.client.exceptions import ApiException

HERE = pathlib.Path(__file__).parent
WIDGET_CRD = yaml.safe_load((HERE / "widget_crd.yaml").read_text())
WIDGETS = "/apis/contract.llmops.dev/v1"


class Failed(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(f"{status}: {body.get('message')}")
        self.status, self.body, self.headers = status, body, headers

    @property
    def reason(self) -> str:
        return self.body.get("reason", "")


class Kube:
    """dict in, dict out; raises `Failed` with the Status body on a non-2xx answer."""

    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    def request(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None,
                content_type: str = "application/json", accept: str = "application/json") -> Any:
        headers = {"Content-Type": content_type, "Accept": accept}
        try:
            resp = self.api.call_api(path, method, query_params=list((query or {}).items()),
                                     header_params=headers, body=body, auth_settings=["BearerToken"],
                                     _preload_content=False, _request_timeout=30)
        except ApiException as e:
            try:
                parsed = json.loads(e.body)
            except (TypeError, ValueError):
                parsed = {"message": e.body}
            raise Failed(e.status, parsed, dict(e.headers or {})) from None
        data = resp[0].data if isinstance(resp, tuple) else resp.data
        return json.loads(data) if data else None

    def text(self, path: str, query: dict[str, Any] | None = None) -> str:
        """GET a text/plain answer (pods/log)."""
        try:
            resp = self.api.call_api(path, "GET", query_params=list((query or {}).items()),
                                     auth_settings=["BearerToken"], _preload_content=False,
                                     _request_timeout=30)
        except ApiException as e:
            raise Failed(e.status, json.loads(e.body), dict(e.headers or {})) from None
        raw = resp[0] if isinstance(resp, tuple) else resp
        return raw.data.decode()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def create(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Any:
        return self.request("PUT", path, body, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> Any:
        return self.request("DELETE", path, body, **kw)

    def patch(self, path: str, body: Any, kind: str = "merge", **kw: Any) -> Any:
        ctype = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
                 "strategic": "application/strategic-merge-patch+json",
                 "apply": "application/apply-patch+yaml"}[kind]
        if isinstance(body, str):
            return self.raw("PATCH", path, body.encode(), ctype, kw.get("query"))
        return self.request("PATCH", path, body, content_type=ctype, **kw)

    def raw(self, method: str, path: str, data: bytes, content_type: str,
            query: dict[str, Any] | None = None) -> Any:
        """Send bytes as they are (the client would JSON-encode a str body)."""
        import urllib.parse

        cfg = self.api.configuration
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        token = cfg.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        url = cfg.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        resp = self.api.rest_client.pool_manager.request(method, url, body=data, headers=headers,
                                                         timeout=30)
        parsed = json.loads(resp.data) if resp.data else None
        if resp.status >= 300:
            raise Failed(resp.status, parsed or {}, dict(resp.headers))
        return parsed

    def stream(self, path: str, query: dict[str, Any], timeout: float = 15) -> list[dict[str, Any]]:
        """Read a watch until the server ends it; returns its events."""
        resp = self.api.call_api(path, "GET", query_params=list(query.items()),
                                 header_params={"Accept": "application/json"},
                                 auth_settings=["BearerToken"], _preload_content=False,
                                 _request_timeout=timeout)
        raw = resp[0] if isinstance(resp, tuple) else resp
        return [json.loads(line) for line in raw.data.decode().splitlines() if line.strip()]


def ns_path(ns: str, plural: str, name: str = "", group_version: str = "/api/v1") -> str:
    path = f"{group_version}/namespaces/{ns}/{plural}"
    return f"{path}/{name}" if name else path


def configmap(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta},
            "data": data or {}}


def pod(name: str, containers: tuple[str, ...] = ("main",), **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, **meta},
            # No scheduler owns this name, so on a real cluster nothing binds the pod but the test.
            "spec": {"schedulerName": "contract-test-no-scheduler",
                     "containers": [{"name": c, "image": "busybox"} for c in containers]}}


def widget(name: str, size: int = 1, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "contract.llmops.dev/v1", "kind": "Widget", "metadata": {"name": name},
            "spec": {"size": size, **spec}}

