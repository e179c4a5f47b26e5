"""An emulated Kubernetes API server for tests and `llmops sandbox`.

Why our own aiohttp server and not kmock (nolar/kmock) with an overlay: kmock's
emulator is a database over HTTP. To make the operator's tests mean something we needed,
on top of it, stamped metadata, PUT with resourceVersion preconditions, 422 on a failed
JSON-patch test, server-side apply with pruning, status-subresource rules, selectors on
watches, watch resumption with 410 Gone and bookmarks, GC, schema validation and faults
that do not mutate state. That is most of a server, written against a 0.x package's
private internals (see reference/testing-infra.md). The semantics are the hard part and
the HTTP part is small, so we own all of it: one store with an event ring buffer, a
registry that also serves CRDs, pure patch functions, and a thin aiohttp front. The
contract tests in tests/contract/ pin every behaviour against a kubeconfig, so the same
assertions can be run against a real cluster; where the two differ, this is wrong.

Layout: registry (discovery), store (objects + bus), core (write semantics), patching,
selectors, tables, gc, faults, handlers (HTTP), server (`ApiServer`).
"""

from .server import ApiServer

__all__ = ["ApiServer"]
