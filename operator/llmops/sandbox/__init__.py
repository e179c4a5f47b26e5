"""Embedded control plane for tests and local use: an emulated Kubernetes API server
(`apiserver`), a kubeconfig writer, pytest fixtures (`testing`) and, built on them, the
process node agent, the sandbox binder and the `llmops sandbox` command.

Nothing here is used by the production operator; the operator only ever sees an API
server URL in a kubeconfig and cannot tell this one from a real cluster's.
"""
