"""Request counters: how many requests each client made, by verb and resource.

Benchmarks (``bench/operator_scale.py``) measure an operator's API cost on the emulator the
way a real cluster's audit log measures it: per user, verb and resource. The emulator
authenticates nobody, so the "user" is the bearer token the client sends (a kubeconfig's
``users[].user.token``; ``write_kubeconfig(..., token=...)`` writes one), as a static token
file would map it on a real server. Requests the request-info parser does not classify
(discovery, /version, /healthz) are counted under the resource ``(non-resource)`` and verb
``get``. Counting is a dict increment on the server's loop; it is always on.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping

NON_RESOURCE = "(non-resource)"


def user_of(headers: Mapping[str, str]) -> str:
    """The bearer token of a request (the emulator's user name), "" when none was sent."""
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class RequestCounter:
    """(user, verb, resource) -> requests; ``resource`` is "pods" or "pods/status"."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str, str]] = Counter()
        self._lock = threading.Lock()

    def record(self, user: str, verb: str, resource: str) -> None:
        with self._lock:
            self._counts[(user, verb, resource)] += 1

    def snapshot(self, user: str | None = None) -> Counter[tuple[str, str, str]]:
        """A copy of the counts, only `user`'s when given."""
        with self._lock:
            return Counter({k: v for k, v in self._counts.items() if user is None or k[0] == user})

    def by_verb_resource(self, user: str) -> Counter[tuple[str, str]]:
        """`user`'s counts keyed (verb, resource)."""
        return Counter({(verb, res): n for (u, verb, res), n in self.snapshot(user).items()})

    def clear(self) -> None:
        with self._lock:
            self._counts.clear()
