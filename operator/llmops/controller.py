"""Wiring of the operator process: Kopf for watching/peering/login/probes, our work queue for
reconciles, one reconcile function per kind.

Flow: Kopf `on.event` handlers (for our CRs and for owned children such as pods and progress
Leases) only enqueue the owner's key; worker threads take keys from the queue and call the
kind's reconcile function, which reads the world (level-triggered), applies, prunes, writes
status once, and returns when it wants to be called again. See kube/workqueue.py for
why Kopf's timers/daemons are not used (they add finalizers to every CR).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import kopf

from llmops import GROUP, VERSION
from llmops.api import labels
from llmops.failures import NODE_LOST_GRACE_SECONDS, STARTUP_GRACE_SECONDS
from llmops.kube.cache import CachedKube
from llmops.kube.client import Kube, load_api_client
from llmops.kube.peering import PeeringGuard, ensure_peering
from llmops.kube.workqueue import Backoff, WorkQueue, run_workers
from llmops.metrics import Metrics
from llmops.scheduling import AUTO_ORDER

logger = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
#: reconcile(ctx, namespace, name) -> seconds until it wants to run again, or None
#: (Backoff: an expected refusal already in status; the worker retries with a growing delay)
ReconcileFn = Callable[["Context", str, str], "float | Backoff | None"]


@dataclass
class Context:
    """What a reconcile function gets: the API seam, metrics, and the operator's options."""

    kube: Kube
    metrics: Metrics
    # "group/version/plural" served (gang backends, PodMonitor); None until discovery ran
    served: set[str] | None = None
    clock: Callable[[], float] = time.time
    startup_grace_seconds: float = STARTUP_GRACE_SECONDS  # image pull / container config errors tolerated
    node_lost_grace_seconds: float = NODE_LOST_GRACE_SECONDS  # a NotReady node this long counts as lost


@dataclass
class KindRegistration:
    kind: str
    plural: str
    reconcile: ReconcileFn


#: Child resources whose events wake their owner: (group, version, plural)
CHILD_WATCHES = [
    ("", "v1", "pods"),
    ("coordination.k8s.io", "v1", "leases"),
    ("apps", "v1", "deployments"),
    (GROUP, VERSION, "trainingjobs"),  # FinetuneJob children
]

#: Kinds read from watch caches: (apiVersion, kind, label filter). Whole kinds where a reconcile
#: must know a name is free (foreign children); only the operator's own pods (the bulk).
CACHED_KINDS: list[tuple[str, str, str | None]] = [
    ("v1", "Pod", f"{labels.MANAGED_BY}={labels.MANAGED_BY_VALUE}"),
    *((av, kind, None) for av, kind in (
        ("v1", "Node"), ("v1", "Service"), ("v1", "ServiceAccount"), ("v1", "PersistentVolumeClaim"),
        ("coordination.k8s.io/v1", "Lease"), ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("apps/v1", "Deployment"),
        ("policy/v1", "PodDisruptionBudget"), ("networking.k8s.io/v1", "NetworkPolicy"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"), ("scheduling.k8s.io/v1alpha2", "PodGroup"),
        ("scheduling.volcano.sh/v1beta1", "PodGroup"), ("scheduling.x-k8s.io/v1alpha1", "PodGroup"),
        (f"{GROUP}/{VERSION}", "TrainingJob"), (f"{GROUP}/{VERSION}", "FinetuneJob"), (f"{GROUP}/{VERSION}", "InferenceService"),
    )),
]

#: Kinds the operator may need to know are served: every gang backend's marker (for `auto`
#: and to say GangBackendUnavailable before any pod), and the Prometheus Operator's PodMonitor.
DISCOVERED = [
    *((m.rsplit("/", 1)[0], m.rsplit("/", 1)[1]) for _, markers in AUTO_ORDER for m in markers),
    ("monitoring.coreos.com/v1", "podmonitors"),
]


class Controller:
    def __init__(
        self,
        kubeconfig: str | None = None,
        *,
        namespaces: list[str] | None = None,
        peering_name: str | None = None,
        priority: int = 0,
        workers: int = 2,
        liveness_endpoint: str | None = None,
        metrics: Metrics | None = None,
        identity: str | None = None,
        startup_grace_seconds: float = STARTUP_GRACE_SECONDS,
        node_lost_grace_seconds: float = NODE_LOST_GRACE_SECONDS,
        cache: bool = True,
    ) -> None:
        self.kubeconfig = kubeconfig
        # One connection per worker and per watch cache stream (each holds one for its life).
        self.api_client = load_api_client(kubeconfig, connections=workers + len(CACHED_KINDS) + 4)
        plain = Kube(self.api_client)
        # Reads from watch caches (kube.cache) when the operator watches the whole cluster; an
        # operator limited to namespaces may not list cluster-wide and reads from the API server.
        self.cache = CachedKube(plain, CACHED_KINDS, index_label=labels.OWNER_NAME) if cache and not namespaces else None
        self.kube: Kube = self.cache or plain
        self.metrics = metrics or Metrics()
        self.queue = WorkQueue()
        self.namespaces = namespaces or []
        self.peering_name = peering_name
        self.priority = priority
        self.workers = workers
        self.liveness_endpoint = liveness_endpoint
        self.identity = identity or f"llmops-{uuid.uuid4().hex[:8]}"
        self.kinds: dict[str, KindRegistration] = {}
        self.registry = kopf.OperatorRegistry()
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.ctx = Context(kube=self.kube, metrics=self.metrics, startup_grace_seconds=startup_grace_seconds,
                           node_lost_grace_seconds=node_lost_grace_seconds)
        self._thread: threading.Thread | None = None
        self._enqueued_at: dict[Key, float] = {}

    # --- registration ---------------------------------------------------------------------
    def register(self, kind: str, plural: str, reconcile: ReconcileFn) -> None:
        self.kinds[kind] = KindRegistration(kind, plural, reconcile)

    def enqueue(self, key: Key, after: float = 0.0) -> None:
        self._enqueued_at.setdefault(key, time.monotonic() + after)
        self.queue.add(key, after)

    def _wire_kopf(self) -> None:
        registry = self.registry
        config = self.api_client.configuration

        @kopf.on.login(registry=registry)
        def login(**_: object) -> kopf.ConnectionInfo:
            token = config.api_key.get("BearerToken") or config.api_key.get("authorization")
            scheme, _, value = (token or "").partition(" ")
            if token and not value:
                scheme, value = "Bearer", token
            return kopf.ConnectionInfo(
                server=config.host,
                ca_path=config.ssl_ca_cert,
                insecure=not config.verify_ssl,
                scheme=scheme or None,
                token=value or None,
                certificate_path=config.cert_file,
                private_key_path=config.key_file,
            )

        for reg in self.kinds.values():
            kind = reg.kind

            @kopf.on.event(GROUP, VERSION, reg.plural, registry=registry, id=f"enqueue-{kind}")
            def on_owner(name: str, namespace: str, body: kopf.Body, type: str | None, _kind: str = kind, **_: object) -> None:
                if self._news(body, type, (_kind, namespace, name)):
                    self.enqueue((_kind, namespace, name))

        for group, version, plural in CHILD_WATCHES:
            @kopf.on.event(group, version, plural, registry=registry, id=f"wake-owner-{plural}",
                           labels={labels.MANAGED_BY: labels.MANAGED_BY_VALUE})
            def on_child(meta: dict, namespace: str, body: kopf.Body, type: str | None, **_: object) -> None:
                child_labels = meta.get("labels") or {}
                owner_kind = child_labels.get(labels.PART_OF)
                owner = child_labels.get(labels.OWNER_NAME)
                key = (owner_kind or "", namespace, owner or "")
                if self._news(body, type, key) and owner_kind in self.kinds and owner:
                    self.enqueue(key)

        @kopf.on.startup(registry=registry)
        def configure(settings: kopf.OperatorSettings, **_: object) -> None:
            settings.posting.level = logging.WARNING  # our own Events: one per transition
            # Reconciles are idempotent and level-triggered, so a bounded exit is safe: never let
            # a slow stream shutdown hold a terminating pod (or the sandbox) for minutes.
            settings.process.ultimate_exiting_timeout = 30.0
            settings.watching.reconnect_backoff = 1.0
            settings.networking.error_backoffs = [0.5, 1, 2, 5, 10]
            # Kopf's own annotations (only written if change-handlers are ever added):
            # under our prefix, and the diff-base keeps no copy of the whole spec.
            settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=labels.PREFIX)
            settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
                prefix=labels.PREFIX, key="last-handled-configuration")
            settings.persistence.finalizer = f"{labels.PREFIX}/finalizer"
            if self.peering_name:
                settings.peering.name = self.peering_name
                settings.peering.mandatory = True
                settings.peering.priority = self.priority
            else:
                settings.peering.standalone = True

    def _news(self, body: kopf.Body, event_type: str | None, key: Key) -> bool:
        """Whether an event is news to the reconcile ``key``. The object goes into the cache
        first, so the reconcile it triggers reads it at least as new as the event (the cache's
        own watch may lag a moment). An object exactly as that same reconcile's last write
        left it (its status write, a child it applied) is no news to it. Kopf's first listing
        (``event_type`` None) always is."""
        if self.cache is None:
            return True
        obj = {**body, "metadata": dict(body.get("metadata") or {})}  # the cache trims metadata; not Kopf's copy
        news = event_type is None or not self.cache.written_by(obj, key)
        self.cache.observe(obj, deleted=event_type == "DELETED")
        return news

    # --- running ---------------------------------------------------------------------------
    def _discover(self) -> None:
        """What the cluster serves, from the Kube client's discovery cache (asked again only
        after its TTL, absent groups included). A group whose discovery fails keeps its last
        answer: an outage must not make an installed gang backend look absent."""
        served = set(self.ctx.served or ())
        for group_version, plural in DISCOVERED:
            try:
                present = plural in self.kube.served(group_version)
            except Exception as exc:  # noqa: BLE001 - optional groups must not block reconciles
                logger.warning("discovery of %s failed: %s", group_version, exc)
                continue
            (served.add if present else served.discard)(f"{group_version}/{plural}")
        self.ctx.served = served

    def _reconcile_key(self, key: Key) -> float | Backoff | None:
        kind, namespace, name = key
        self._discover()  # from the cache: no request unless its TTL passed
        reg = self.kinds[kind]
        enqueued = self._enqueued_at.pop(key, None)
        if enqueued is not None:
            self.metrics.queue_wait_seconds.labels(kind).observe(max(0.0, time.monotonic() - enqueued))
        start = time.perf_counter()
        try:
            if self.cache is not None:
                with self.cache.writing_as(key):
                    after = reg.reconcile(self.ctx, namespace, name)
            else:
                after = reg.reconcile(self.ctx, namespace, name)
        except Exception:
            self.metrics.reconciles.labels(kind, "error").inc()
            raise
        finally:
            self.metrics.reconcile_seconds.labels(kind).observe(time.perf_counter() - start)
        self.metrics.reconciles.labels(kind, "ok").inc()
        return after

    def run(self, *, signals: bool = False) -> None:
        """Blocking: run workers and Kopf until stop(), or, with signals=True (the main thread of
        `llmops operator`), until SIGTERM/SIGINT. Only one of the two: Kopf waits for a
        threading.Event stop flag in an executor thread, which a signal would leave blocked."""
        self._wire_kopf()
        self._discover()
        if self.peering_name:  # Kopf's mandatory peering needs the object; it is ours to make
            ensure_peering(self.kube, self.peering_name, self.namespaces[0] if self.namespaces else None)
        guard = PeeringGuard(self.kube if self.peering_name else None, self.peering_name,
                             self.identity, self.priority,
                             namespace=self.namespaces[0] if self.namespaces else None)
        if self.cache is not None:
            self.cache.start()
            if not self.cache.wait_synced(60.0):  # reads fall back to the API server until then
                logger.warning("watch caches not synced within 60 s; reading from the API server meanwhile")
        run_workers(self.queue, self._reconcile_key, self.stop_flag, workers=self.workers,
                    is_active=guard.active)
        asyncio.run(kopf.operator(
            registry=self.registry,
            clusterwide=not self.namespaces,
            namespaces=self.namespaces,
            identity=self.identity,
            standalone=None if self.peering_name else True,
            peering_name=self.peering_name,
            priority=self.priority,
            liveness_endpoint=self.liveness_endpoint,
            stop_flag=None if signals else self.stop_flag,
            ready_flag=self.ready_flag,
        ))
        self.stop_flag.set()  # stop the workers too
        if self.cache is not None:
            self.cache.stop()

    def start(self, timeout: float = 30.0) -> Controller:
        """Run in a background thread (tests, the sandbox); returns once Kopf is ready."""
        self._thread = threading.Thread(target=self.run, name="llmops-operator", daemon=True)
        self._thread.start()
        if not self.ready_flag.wait(timeout):
            raise TimeoutError("operator did not become ready")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_flag.set()
        self.queue.close()
        if self._thread:
            self._thread.join(timeout)
