"""HTTP to a serving pod (vLLM's port, the adapter agent's): JSON in, text out, a short timeout.

The operator talks to pod IPs directly (the autoscaler scrapes ``/metrics``, the adapter
client drives the agent); one slow pod must not stall a reconcile, hence the 1 s timeout.
"""

from __future__ import annotations

import json
import urllib.request

TIMEOUT_SECONDS = 1.0


def call(url: str, body: dict | None = None) -> str:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(req, timeout=TIMEOUT_SECONDS) as resp:  # noqa: S310 (pod IPs only)
        return resp.read().decode()
