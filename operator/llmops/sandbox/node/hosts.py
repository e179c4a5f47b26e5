"""The sandbox's stand-in for cluster DNS: a hosts file of pod hostnames -> loopback pod IPs.

Each pod runs on its own 127.x.y.z address, and names of pods behind a headless Service
(``spec.hostname`` + ``spec.subdomain``) are written by the agent to a hosts-format file whose
path every container gets as ``LLMOPS_SANDBOX_HOSTS_FILE``. The system resolver does not read
that file, so in-pod code resolves through ``resolve`` below (``llmops_runtime`` calls it
before handing MASTER_ADDR to torch); when the variable is unset (a real cluster) names are
returned unchanged for DNS. Pure, stdlib only, so in-pod code can import it cheaply.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmops_runtime.localenv import SANDBOX_HOSTS_FILE as HOSTS_FILE_ENV

CLUSTER_DOMAIN = "cluster.local"


def pod_names(pod: Mapping[str, Any]) -> list[str]:
    """The DNS names a headless Service gives `pod` (empty when it sets no subdomain)."""
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    subdomain = spec.get("subdomain")
    if not subdomain:
        return []
    host = spec.get("hostname") or meta.get("name", "")
    ns = meta.get("namespace", "default")
    return [
        f"{host}.{subdomain}.{ns}.svc.{CLUSTER_DOMAIN}",
        f"{host}.{subdomain}.{ns}.svc",
        f"{host}.{subdomain}.{ns}",
        f"{host}.{subdomain}",
    ]


def render(entries: Iterable[tuple[str, list[str]]]) -> str:
    """hosts(5) text from (ip, names) pairs, sorted so rewrites are stable."""
    lines = [f"{ip}\t{' '.join(names)}" for ip, names in sorted(entries) if names]
    return "# written by the llmops sandbox node agent\n" + "\n".join(lines) + ("\n" if lines else "")


def parse(text: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            table.setdefault(name.lower(), fields[0])
    return table


def resolve(name: str, hosts_file: str | None = None) -> str:
    """The pod IP for `name` from the sandbox hosts file, else `name` itself."""
    path = hosts_file or os.environ.get(HOSTS_FILE_ENV)
    if not path:
        return name
    try:
        table = parse(Path(path).read_text())
    except OSError:
        return name
    return table.get(name.lower().rstrip("."), name)
