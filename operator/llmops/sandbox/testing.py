"""pytest plugin: an emulated API server, a kubeconfig and clients for tests.

Loaded from tests/conftest.py (`pytest_plugins = ["llmops.sandbox.testing"]`).

- `api_server`: a fresh, started `ApiServer` per test (starting one takes milliseconds, so
  isolation costs nothing and faults cannot leak between tests).
- `control_plane`: one real Kubernetes control plane for the whole session (``../shared/kube``,
  see ``llmops.sandbox.controlplane``), or `$LLMOPS_TEST_KUBECONFIG` when that names a cluster.
  Tests that use it are skipped, with the reason, only where no control plane is available.
- `kubeconfig`: parametrized over both clusters, ids ``emulated`` and ``real``: every test
  that takes it runs once against the emulated API server and once against the real one
  (``-k emulated`` / ``-k real`` select one side). Tests that need the emulator itself (its
  log text) ask for `api_server` directly; fault tests take `faulty` (below).
- `kube_client`: a `kubernetes.client.ApiClient` built from that kubeconfig without touching
  the global configuration.
- `sandbox_control_plane(cluster)`: for sandbox fixtures parametrized over ``CLUSTERS``, the
  ``control_plane`` argument of ``Sandbox`` (the real side skipped, with the reason, where absent).
- `fresh_namespace`: a new namespace, deleted after the test.
- `faulty`: parametrized over both clusters like `kubeconfig`; ``.kubeconfig`` and ``.faults``
  (``Faults``) of the emulated API server, or of a ``FaultProxy`` in front of the real control
  plane, so a fault test runs on both. A module that overrides `kubeconfig` with
  ``faulty.kubeconfig`` sends all its clients through those faults.
- `eventually(fn, timeout)`: poll until `fn()` returns a truthy value or stops raising.

Under pytest-xdist (``make test`` runs ``-n N --dist loadgroup``): the modules whose sandbox is a
fixture parametrized by cluster (scenarios, e2e) form two chains, one per cluster, each run in
order on one worker and started first; every other module is a group of its own for the other
workers. Two sandboxes at a time keep a 2-core machine loaded like one run beside a CPU hog;
four at once starved their trainers past the scenarios' deadlines.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from .apiserver import ApiServer
from .apiserver.faults import Faults

REAL_CLUSTER_ENV = "LLMOPS_TEST_KUBECONFIG"
NO_CONTROL_PLANE = "real control plane absent: no ../shared/kube/start.sh (set LLMOPS_KUBE_DIR or LLMOPS_TEST_KUBECONFIG)"
#: The clusters a module-scoped sandbox fixture is parametrized over (ids as for `kubeconfig`).
CLUSTERS = ["emulated", "real"]
T = TypeVar("T")


def cluster_of(item: pytest.Item) -> tuple[str | None, bool]:
    """The cluster a test runs against (a CLUSTERS id, or None) and whether a fixture wider than
    the test (a module's sandbox) is parametrized by it."""
    callspec = getattr(item, "callspec", None)
    for name, value in (callspec.params.items() if callspec else ()):
        if value in CLUSTERS:
            defs = item._fixtureinfo.name2fixturedefs.get(name) or ()
            return value, any(d.scope in ("module", "session") for d in defs)
    return None, False


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    chained: dict[pytest.Item, bool] = {}
    for item in items:
        cluster, chained[item] = cluster_of(item)
        module = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(f"sandboxes-{cluster}" if chained[item] else module))
    items.sort(key=lambda item: not chained[item])  # stable: each chain keeps the modules' order


def real_cluster() -> str | None:
    return os.environ.get(REAL_CLUSTER_ENV) or None


def eventually(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Call `fn` until it returns something truthy without raising; return that value.

    The last exception (or a falsy result) is reported when `timeout` runs out.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = AssertionError(f"condition still false: {value!r}")
        except Exception as e:  # retried until the deadline
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"not true within {timeout}s: {last}") from last
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


@pytest.fixture
def api_server() -> Iterator[ApiServer]:
    srv = ApiServer(host="127.0.0.1", port=0, bookmark_interval=0.2)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[pathlib.Path]:
    """The kubeconfig of one real control plane for the session (started on first use)."""
    real = real_cluster()
    if real:
        yield pathlib.Path(real)
        return
    from .controlplane import ControlPlane, find_kube_dir

    if find_kube_dir() is None:
        pytest.skip(NO_CONTROL_PLANE)
    with ControlPlane(state_dir=tmp_path_factory.mktemp("kube")) as cp:
        yield pathlib.Path(cp.kubeconfig)


def sandbox_control_plane(cluster: str) -> bool:
    """``Sandbox(control_plane=...)`` for one side of a fixture parametrized over CLUSTERS: the
    real side starts its own control plane in the sandbox's workdir, and is skipped, with the
    reason, only where none is available."""
    if cluster == "emulated":
        return False
    from .controlplane import find_kube_dir

    if find_kube_dir() is None:
        pytest.skip(NO_CONTROL_PLANE)
    return True


@pytest.fixture(params=["emulated", "real"])
def kubeconfig(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> pathlib.Path:
    if request.param == "real":
        return request.getfixturevalue("control_plane")
    srv: ApiServer = request.getfixturevalue("api_server")
    return srv.write_kubeconfig(tmp_path / "kubeconfig")


@dataclasses.dataclass(frozen=True)
class Faulty:
    """A kubeconfig and the fault injection that acts on every request sent with it."""

    cluster: str  # "emulated" or "real"
    kubeconfig: pathlib.Path
    faults: Faults


@pytest.fixture(params=CLUSTERS)
def faulty(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Faulty]:
    if request.param == "real":
        from .faultproxy import FaultProxy

        with FaultProxy(request.getfixturevalue("control_plane"), tmp_path / "faultproxy") as proxy:
            yield Faulty("real", pathlib.Path(proxy.kubeconfig), proxy.faults)
        return
    srv: ApiServer = request.getfixturevalue("api_server")
    yield Faulty("emulated", srv.write_kubeconfig(tmp_path / "kubeconfig"), srv.faults)


@pytest.fixture
def kube_client(kubeconfig: pathlib.Path) -> Iterator[Any]:
    from kubernetes import config

    client = config.new_client_from_config(config_file=str(kubeconfig))
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def fresh_namespace(kube_client: Any) -> Iterator[str]:
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = k8s.CoreV1Api(kube_client)
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    # Pods are refused until the controller manager has made the namespace's `default`
    # ServiceAccount (a moment on a real cluster), as any client creating pods must expect.
    eventually(lambda: core.read_namespaced_service_account("default", name), timeout=30)
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as e:  # pragma: no cover - cleanup best effort
            if e.status != 404:
                raise


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Any]:
    return eventually


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One S3 API server (moto, the sandbox's own S3Server) for the session, on 127.0.0.1 only."""
    pytest.importorskip("moto")
    from llmops.sandbox.s3 import S3Server

    with S3Server() as server:
        yield server.endpoint
