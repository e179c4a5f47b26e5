"""Write a kubeconfig that points unmodified clients (kubectl, kopf, `kubernetes`) at a URL."""

from __future__ import annotations

import pathlib

import yaml

NAME = "llmops-sandbox"


def kubeconfig_dict(url: str, name: str = NAME, namespace: str = "default", token: str = "sandbox") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        # The emulator authorizes nobody; clients want some credentials to send, and the
        # emulator's request counters take the token as the user name.
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }


def write_kubeconfig(path: str | pathlib.Path, url: str, name: str = NAME, token: str = "sandbox") -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(url, name, token=token), sort_keys=False))
    path.chmod(0o600)
    return path
