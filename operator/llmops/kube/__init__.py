"""The only code that talks to the Kubernetes API server (the `kubernetes` client underneath)."""

from llmops.kube.client import ApiError, Kube, load_api_client

__all__ = ["ApiError", "Kube", "load_api_client"]
