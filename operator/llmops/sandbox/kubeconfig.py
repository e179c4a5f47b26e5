"""Write a kubeconfig that points unmodified clients (kubectl, kopf, `kubernetes`) at a URL."""

from __future__ import annotations

import pathlib

import yaml

NAME = "llmops-sandbox"


def kubeconfig_dict(url: str, name: str = NAME, namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        # The emulator ignores the token; clients just want some credentials to send.
        "users": [{"name": name, "user": {"token": "sandbox"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(path: str | pathlib.Path, url: str, name: str = NAME) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(url, name), sort_keys=False))
    path.chmod(0o600)
    return path
