"""Name resolution through the sandbox hosts file.

In a cluster, ``MASTER_ADDR`` is the DNS name of rank 0's pod behind the job's headless
Service and the cluster DNS resolves it. The sandbox has no DNS: its node agent runs every
"pod" as local processes and writes a hosts file instead, named by
``LLMOPS_SANDBOX_HOSTS_FILE``. The file uses the ``/etc/hosts`` layout: one address per line
followed by one or more names; ``#`` starts a comment; blank lines are ignored. The first
line naming a host wins, as with ``/etc/hosts`` (the agent rewrites the whole file when a
pod changes; ``llmops.sandbox.node.hosts`` writes it and reads it the same way).

Only the launcher consults it, and only when the variable is set; a name that is not in the
file is returned unchanged so that a real resolver can still handle it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping

from llmops.api.runtime_env import SANDBOX_HOSTS_FILE as HOSTS_FILE_ENV


def parse_hosts(lines: Iterable[str]) -> dict[str, str]:
    """Name -> address from hosts-file lines; malformed lines (bad address) are skipped."""
    table: dict[str, str] = {}
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        address = fields[0]
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue
        for name in fields[1:]:
            table.setdefault(name.lower(), address)
    return table


def resolve(name: str, table: Mapping[str, str]) -> str:
    """The address for ``name`` (case-insensitive, trailing dot ignored), else ``name``."""
    return table.get(name.rstrip(".").lower(), name)


def resolve_master_addr(addr: str, env: Mapping[str, str] | None = None) -> str:
    """Resolve ``addr`` through the sandbox hosts file when one is configured."""
    env = os.environ if env is None else env
    path = env.get(HOSTS_FILE_ENV)
    if not path:
        return addr
    try:
        with open(path, encoding="utf-8") as handle:
            table = parse_hosts(handle)
    except OSError:
        # The agent writes the file before starting pods; a missing file means no sandbox
        # name is known, and the address is passed through unchanged.
        return addr
    return resolve(addr, table)
