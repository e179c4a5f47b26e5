"""A tiny Kopf operator used by test_kopf.py: each Widget gets a ConfigMap child (owned, so
GC removes it) and a status written through the status subresource; a finalizer handler
records deletions."""

from __future__ import annotations

import os

import kopf
import kubernetes


def core_api() -> kubernetes.client.CoreV1Api:
    # The client's default kubeconfig path is fixed when it is imported; read it now.
    return kubernetes.client.CoreV1Api(
        kubernetes.config.new_client_from_config(config_file=os.environ["KUBECONFIG"]))


@kopf.on.login()
def login(**kwargs: object) -> kopf.ConnectionInfo | None:
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: object) -> None:
    settings.persistence.finalizer = "contract.llmops.dev/kopf"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="contract.llmops.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="contract.llmops.dev", key="last-handled-configuration")
    settings.watching.server_timeout = 10
    settings.posting.level = 0


@kopf.on.create("contract.llmops.dev", "v1", "widgets")
@kopf.on.update("contract.llmops.dev", "v1", "widgets")
def reconcile(spec, name, namespace, body, patch, **_: object) -> None:
    child = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{name}-child"}, "data": {"size": str(spec["size"])}}
    kopf.adopt(child, owner=body)
    api = core_api()
    try:
        api.create_namespaced_config_map(namespace, child)
    except kubernetes.client.exceptions.ApiException as e:
        if e.status != 409:
            raise
        api.patch_namespaced_config_map(f"{name}-child", namespace, {"data": child["data"]})
    patch.status["replicas"] = spec["size"]


@kopf.on.delete("contract.llmops.dev", "v1", "widgets")
def deleted(name, namespace, **_: object) -> None:
    api = core_api()
    api.create_namespaced_config_map(namespace, {"metadata": {"name": f"{name}-deleted"}})
