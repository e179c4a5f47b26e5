"""Embedded control plane for tests and local use: an emulated Kubernetes API server
(`apiserver`), a kubeconfig writer, pytest fixtures (`testing`) and, built on them, the
process node agent, the sandbox binder and the `llmops sandbox` command.

Nothing here is used by the production operator; the operator only ever sees an API
server URL in a kubeconfig and cannot tell this one from a real cluster's.
"""

from __future__ import annotations

import importlib.util

#: Third-party modules the sandbox imports beyond the operator's own dependencies. They come with
#: the ``sandbox`` extra (``pip install 'llmops-operator[sandbox]'``); the operator image installs
#: the package without it, so ``llmops sandbox`` / ``llmops demo`` there say so and stop.
EXTRA_MODULES = {"moto": "its S3 server", "boto3": "its S3 client", "aiohttp": "its emulated API server"}


def missing_extra(s3: bool = True) -> str | None:
    """None when the sandbox's third-party modules are importable, else a one-line message
    naming what is missing (``s3=False``: the S3 server and client are not needed)."""
    missing = [f"{m} ({why})" for m, why in EXTRA_MODULES.items() if (s3 or m == "aiohttp") and importlib.util.find_spec(m) is None]
    if not missing:
        return None
    return f"the sandbox needs the 'sandbox' extra: pip install 'llmops-operator[sandbox]' (missing: {', '.join(missing)})"
