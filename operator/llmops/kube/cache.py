"""Watch-backed reads: one list+watch per kind (an informer), and a ``Kube`` that answers reads
from them and writes through to the API server.

Why: a reconcile reads the owner, its children of several kinds, the Nodes, Leases. Listing
each per reconcile costs the API server O(jobs x kinds) requests a minute and grows with the
fleet. An informer lists once, then follows the watch stream; reads are local.

Correctness rules, because a cache can lag:

* **Read your writes.** Every object a write returns (create, apply, status write) goes into
  the cache at once, unless the cache already holds a newer resourceVersion. A reconcile
  right after its own write never plans from the state before it.
* **Absence is trusted only where the informer sees everything.** Kinds cached with a label
  filter (pods: only the operator's) answer ``get`` for a name they lack from the API server;
  kinds cached whole answer absence themselves (what foreign-name detection relies on).
* **Not synced yet, not served, or a query the cache cannot answer** (another namespace, a
  selector the informer's filter does not imply): the read goes to the API server.
* **A deletion the watch has not reported** keeps the cached copy: a pod that may still run
  counts as running (the plan never starts a second pod for a rank on a stale "gone").
* After a watch error or a 410 (history compacted) the informer lists again; a kind that is
  not served (an absent gang scheduler) is looked for again after the discovery TTL.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from llmops.kube.client import DISCOVERY_TTL_SECONDS, ApiError, Kube, NotServedError, api_error

logger = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 240  # the server ends each watch after this; the informer resumes from its resourceVersion


def _rv(obj: dict[str, Any]) -> int:
    try:
        return int((obj.get("metadata") or {}).get("resourceVersion") or 0)
    except ValueError:  # opaque on some servers: always take the newer write
        return 0


def _equalities(selector: str | None) -> dict[str, str] | None:
    """An equality selector ("k=v,k2=v2") as {k: v}; None for any other syntax (the API server
    evaluates those)."""
    terms: dict[str, str] = {}
    for term in selector.split(",") if selector else []:
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!") or value.startswith("="):
            return None
        terms[key.strip()] = value.strip()
    return terms


def _labels_match(labels: dict[str, str], selector: str | None) -> bool | None:
    """Whether ``labels`` satisfy an equality selector; None for any other syntax."""
    terms = _equalities(selector)
    return None if terms is None else all(labels.get(k) == v for k, v in terms.items())


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop ``metadata.managedFields`` (no reconcile reads them; on a pod they are a third of its
    size), so a cache of a fleet's pods costs a fraction of the memory."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


@dataclass
class Informer:
    """The objects of one kind (cluster-wide, or only those matching ``label_filter``)."""

    kube: Kube
    api_version: str
    kind: str
    label_filter: str | None = None
    index_label: str | None = None  # lists selecting one value of this label read an index, not every object
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (namespace, name) -> object
    # (namespace, value of index_label) -> names: a reconcile lists its own children in O(children)
    # however many objects the kind has (a scan per list made a fleet of N jobs cost O(N^2)).
    index: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    forget: Callable[[dict[str, Any]], None] | None = None  # called with each object deleted from the cache
    synced: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    resource_version: str = ""

    # --- reads ----------------------------------------------------------------------------
    def answers(self, selector: str | None) -> bool:
        """Whether a list with ``selector`` can be answered here: synced, and the informer's
        filter is implied by the selector (a filtered informer lacks the other objects)."""
        if not self.synced.is_set():
            return False
        if not self.label_filter:
            return True
        wanted = set((selector or "").split(","))
        return all(term in wanted for term in self.label_filter.split(","))

    def list(self, namespace: str | None, selector: str | None) -> list[dict[str, Any]] | None:
        terms = _equalities(selector)  # parsed once, not per object
        if terms is None:
            return None  # a selector this cache cannot evaluate
        value = terms.get(self.index_label) if self.index_label and namespace is not None else None
        with self.lock:
            if value is not None:
                names = self.index.get((namespace or "", value), ())
                items = [self.objects[(namespace or "", n)] for n in names]
            else:
                items = [o for (ns, _), o in self.objects.items() if namespace is None or ns == namespace]
        out = [o for o in items
               if all(((o.get("metadata") or {}).get("labels") or {}).get(k) == v for k, v in terms.items())]
        return sorted(out, key=lambda o: o["metadata"]["name"])

    def get(self, namespace: str | None, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.objects.get((namespace or "", name))

    # --- writes from the stream and from our own writes -------------------------------------
    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        meta = _slim(obj).get("metadata") or {}
        key = (meta.get("namespace") or "", meta.get("name", ""))
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        with self.lock:
            held = self.objects.get(key)
            if held is not None and _rv(held) > _rv(obj) > 0:
                return  # an older copy (our write's answer arrived after a newer event)
            if deleted:
                if held is None or (meta.get("uid") in (None, (held.get("metadata") or {}).get("uid"))):
                    self._unindex(key, self.objects.pop(key, None))
                    if self.forget is not None:
                        self.forget(obj)
            else:
                self._unindex(key, held)
                self.objects[key] = obj
                self._index(key, obj)

    def _index_key(self, key: tuple[str, str], obj: dict[str, Any] | None) -> tuple[str, str] | None:
        if obj is None or self.index_label is None:
            return None
        value = ((obj.get("metadata") or {}).get("labels") or {}).get(self.index_label)
        return None if value is None else (key[0], value)

    def _index(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        at = self._index_key(key, obj)
        if at is not None:
            self.index.setdefault(at, set()).add(key[1])

    def _unindex(self, key: tuple[str, str], obj: dict[str, Any] | None) -> None:
        at = self._index_key(key, obj)
        if at is not None and at in self.index:
            self.index[at].discard(key[1])
            if not self.index[at]:
                del self.index[at]

    # --- the list + watch loop --------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self._relist()
                while not stop.is_set() and self._watch():
                    pass
            except NotServedError:
                self.synced.clear()
                stop.wait(DISCOVERY_TTL_SECONDS)
            except Exception as exc:  # noqa: BLE001 - reads fall back to the API meanwhile
                if stop.is_set():
                    return
                logger.warning("cache of %s %s: %s; listing again", self.api_version, self.kind, exc)
                self.synced.clear()
                stop.wait(1.0)

    def _relist(self) -> None:
        path = self.kube.path(self.api_version, self.kind, None)
        query = [("labelSelector", self.label_filter)] if self.label_filter else []
        listing = self.kube._request("GET", path, query=query)
        fresh = {}
        for o in listing.get("items", []):
            _slim(o)
            o.setdefault("apiVersion", self.api_version)
            o.setdefault("kind", self.kind)
            fresh[((o["metadata"].get("namespace") or ""), o["metadata"]["name"])] = o
        with self.lock:
            self.objects, self.index = fresh, {}
            for key, obj in fresh.items():
                self._index(key, obj)
        self.resource_version = (listing.get("metadata") or {}).get("resourceVersion", "")
        self.synced.set()

    def _watch(self) -> bool:
        """Follow the stream until the server ends it (True: resume) or history is gone (False: relist)."""
        query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true"),
                                        ("resourceVersion", self.resource_version), ("timeoutSeconds", WATCH_TIMEOUT_SECONDS)]
        if self.label_filter:
            query.append(("labelSelector", self.label_filter))
        for event in self._events(query):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return False
                raise ApiError(int(obj.get("code") or 0), str(obj.get("reason")), str(obj.get("message")))
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                self.observe(obj, deleted=kind == "DELETED")
            if rv:
                self.resource_version = rv
        return True

    def _events(self, query: list[tuple[str, Any]]) -> Iterator[dict[str, Any]]:
        path = self.kube.path(self.api_version, self.kind, None)
        try:
            response = self.kube.api.call_api(path, "GET", query_params=query, header_params={"Accept": "application/json"},
                                              auth_settings=["BearerToken"], _preload_content=False,
                                              _request_timeout=(10, WATCH_TIMEOUT_SECONDS + 30))
        except ApiException as exc:
            raise api_error(exc) from None
        try:
            for line in iter_resp_lines(response):
                if line:
                    yield json.loads(line)
        finally:
            response.release_conn()


class CachedKube(Kube):
    """``Kube`` whose reads of cached kinds come from informers (see the module doc)."""

    def __init__(self, kube: Kube, kinds: Iterable[tuple[str, str, str | None]], index_label: str | None = None) -> None:
        super().__init__(kube.api, kube.field_manager)
        self.informers = {(av, k): Informer(self, av, k, f, index_label, forget=self._forget) for av, k, f in kinds}
        self._stop = threading.Event()
        # (apiVersion, kind, namespace, name) -> (rv of our last write, the reconcile that made it)
        self._written: dict[tuple[str, str, str, str], tuple[str, Any]] = {}
        self._writer = threading.local()  # the reconcile this thread runs (``writing_as``)
        self._applied: dict[tuple[str, str, str, str], str] = {}  # ... -> digest of our last apply of it

    def start(self) -> None:
        for inf in self.informers.values():
            threading.Thread(target=inf.run, args=(self._stop,), name=f"informer-{inf.kind}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        """True once every served kind listed once (kinds that are not served never sync)."""
        return all(inf.synced.wait(timeout) for inf in self.informers.values() if self._served(inf))

    def _served(self, inf: Informer) -> bool:
        try:
            self._discover(inf.api_version, inf.kind)
            return True
        except NotServedError:
            return False

    # --- reads ------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        inf = self.informers.get((api_version, kind))
        if inf is not None and inf.synced.is_set():
            found = inf.get(namespace, name)
            if found is not None or not inf.label_filter:
                return found
        return super().get(api_version, kind, namespace, name)

    def list(self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None) -> list[dict]:
        inf = self.informers.get((api_version, kind))
        if inf is not None and inf.answers(label_selector):
            found = inf.list(namespace, label_selector)
            if found is not None:
                return found
        return super().list(api_version, kind, namespace, label_selector)

    # --- writes: through, and their answers into the cache --------------------------------------
    def _remember(self, obj: Any) -> Any:
        if isinstance(obj, dict) and obj.get("kind") and obj.get("metadata"):
            inf = self.informers.get((obj.get("apiVersion", ""), obj["kind"]))
            if inf is not None:
                inf.observe(obj)
                with inf.lock:
                    self._written[_ident(obj)] = (obj["metadata"].get("resourceVersion", ""), getattr(self._writer, "key", None))
        return obj

    @contextlib.contextmanager
    def writing_as(self, key: Any) -> Iterator[None]:
        """Writes in this block are made by the reconcile ``key`` (see ``written_by``)."""
        self._writer.key = key
        try:
            yield
        finally:
            self._writer.key = None

    def written_by(self, obj: dict[str, Any], key: Any) -> bool:
        """Whether ``obj`` is exactly what the reconcile ``key`` last wrote: news to anyone but
        that reconcile (a child TrainingJob a FinetuneJob applied is news to the TrainingJob)."""
        rv = (obj.get("metadata") or {}).get("resourceVersion")
        return bool(rv) and key is not None and self._written.get(_ident(obj)) == (rv, key)

    def apply(self, obj: dict) -> dict:
        """Server-side apply, skipped when this exact object was our last apply of it and the
        cached object still holds every field of it (a hand edit of our fields does not, and is
        applied over; a field dropped from the desired object changes the object, so it is
        applied and the server removes the field)."""
        ident, digest = _ident(obj), hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
        meta = obj["metadata"]
        inf = self.informers.get((obj["apiVersion"], obj["kind"]))
        held = inf.get(meta.get("namespace"), meta["name"]) if inf is not None and inf.synced.is_set() else None
        if held is not None and self._applied.get(ident) == digest and _holds(held, obj):
            return held
        out = self._remember(super().apply(obj))
        self._applied[ident] = digest
        return out

    def create(self, obj: dict) -> dict:
        return self._remember(super().create(obj))

    def replace_status(self, api_version: str, kind: str, namespace: str, name: str, status: dict,
                       resource_version: str | None = None) -> dict:
        return self._remember(super().replace_status(api_version, kind, namespace, name, status, resource_version))

    def refresh(self, api_version: str, kind: str, namespace: str | None, name: str) -> None:
        """Read one object from the API server into the cache (after a 409: ours was stale)."""
        found = super().get(api_version, kind, namespace, name)
        if found is not None:
            self._remember(found)

    def observe(self, obj: dict[str, Any], deleted: bool = False) -> None:
        """An object seen elsewhere (the event that triggered a reconcile): the cache is at least as new."""
        inf = self.informers.get((obj.get("apiVersion", ""), obj.get("kind", "")))
        if inf is not None:
            inf.observe(obj, deleted)

    def _forget(self, obj: dict[str, Any]) -> None:
        """A deleted object's memory of our writes goes with it (a fleet's churn must not grow it)."""
        self._written.pop(_ident(obj), None)
        self._applied.pop(_ident(obj), None)


def _holds(existing: Any, desired: Any) -> bool:
    """Whether ``existing`` has every field of ``desired`` with its value (what the server adds,
    defaults and status, does not matter); lists must match item by item."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(k in existing and _holds(existing[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(existing, list) and len(existing) == len(desired)
                and all(_holds(e, d) for e, d in zip(existing, desired, strict=True)))
    return bool(existing == desired)


def _ident(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace") or "", meta.get("name", "")
