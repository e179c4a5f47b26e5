"""Name resolution through the sandbox hosts file.

In a cluster, ``MASTER_ADDR`` is the DNS name of rank 0's pod behind the job's headless
Service and the cluster DNS resolves it. The sandbox has no DNS: its node agent runs every
"pod" as local processes and writes a hosts file instead, named by
``LLMOPS_SANDBOX_HOSTS_FILE``. The file uses the ``/etc/hosts`` layout: one address per line
followed by one or more names; ``#`` starts a comment; blank lines are ignored. The first
line naming a host wins, as with ``/etc/hosts`` (the agent rewrites the whole file when a
pod changes; ``llmops.sandbox.node.hosts`` writes it and reads it the same way).

Only the launcher consults it, and only when the variable is set. A pod's name reaches the
file once its agent has given it an IP and the other agents have seen that (as a DNS record
appears once the pod has an address), so a worker can start before rank 0's name is there: the
launcher waits for it as a resolver would retry, and after ``WAIT_SECONDS`` hands the name on
unchanged, for torch's rendezvous to report.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping

from llmops_runtime.localenv import SANDBOX_HOSTS_FILE as HOSTS_FILE_ENV


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


WAIT_SECONDS = 600.0  # a sandbox pod's name is in every node's hosts file long before this


def resolve_master_addr(addr: str, env: Mapping[str, str] | None = None, wait_seconds: float = WAIT_SECONDS,
                        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> str:
    """Resolve ``addr`` through the sandbox hosts file when one is configured, waiting up to
    ``wait_seconds`` for a name the file does not list yet."""
    env = os.environ if env is None else env
    path = env.get(HOSTS_FILE_ENV)
    if not path or _is_address(addr):
        return addr
    deadline, told = clock() + wait_seconds, False
    while True:
        try:
            with open(path, encoding="utf-8") as handle:
                table = parse_hosts(handle)
        except OSError:
            table = {}  # the agent writes the file before starting pods; not there: nothing known yet
        found = resolve(addr, table)
        if found != addr or clock() >= deadline:
            return found
        if not told:
            print(f"llmops launcher: waiting for {addr} in the sandbox hosts file {path}", file=sys.stderr, flush=True)
            told = True
        sleep(0.1)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
