"""Differential test: the same generated request sequences sent to the emulated API server and
to the real v1.36 control plane, the answers compared step by step.

Each seed draws a sequence over a few objects (ConfigMaps, Pods, Widgets of the contract CRD):
valid and invalid creates, gets, every patch type (JSON, merge, strategic, apply by two field
managers with and without force), updates with the current or a stale resourceVersion,
finalizers added and removed around a delete, and for some seeds a watch from the
resourceVersion the sequence started at. Compared per step: the status code, the Status
reason, the causes' field paths and reasons, and the object returned, normalised for what
legitimately differs (uid, resourceVersion, timestamps, managedFields, the namespace name, the
ServiceAccount token volume the emulator does not mount). The real server is the reference;
any difference is an emulator bug.
"""

from __future__ import annotations

import json
import random
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from contract_helpers import WIDGET_CRD, WIDGETS
from kubernetes import config
from llmops.sandbox.apiserver import ApiServer

SEEDS = range(100)
WATCH_EVERY = 6  # one sequence in six ends with a watch (each costs its 1 s timeout per server)
CTYPES = {"merge": "application/merge-patch+json", "json": "application/json-patch+json",
          "strategic": "application/strategic-merge-patch+json", "apply": "application/apply-patch+yaml"}
VALUES = ["1", "x", "y", "true", "a b"]
KEYS = ["k1", "k2", "k3"]


@dataclass
class Step:
    label: str
    method: str
    path: str  # "{ns}" and "{rv0}" are filled in per server
    body: Any = None
    ctype: str = "application/json"
    query: dict[str, str] = field(default_factory=dict)
    read_rv: str = ""  # PUT: fill metadata.resourceVersion ("current": read it first; "stale")


class Server:
    """Raw HTTP to one API server through its kubeconfig; answers as (code, parsed body)."""

    def __init__(self, kubeconfig: str) -> None:
        self.api = config.new_client_from_config(config_file=kubeconfig)
        self.ns = f"diff-{uuid.uuid4().hex[:8]}"

    def call(self, method: str, path: str, body: Any = None, ctype: str = "application/json",
             query: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
        cfg = self.api.configuration
        headers = {"Content-Type": ctype, "Accept": "application/json", "User-Agent": "differential/1.0"}
        token = cfg.get_api_key_with_prefix("authorization")
        if token:
            headers["Authorization"] = token
        url = cfg.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else json.dumps(body).encode()
        resp = self.api.rest_client.pool_manager.request(method, url, body=data, headers=headers, timeout=timeout)
        text = resp.data.decode()
        if "watch=true" in url:
            return resp.status, [json.loads(line) for line in text.splitlines() if line.strip()]
        return resp.status, json.loads(text) if text.strip() else None


# -- generated sequences ---------------------------------------------------------------------------

def _cm(name: str, data: dict[str, str], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta}, "data": data}


def _data(rng: random.Random) -> dict[str, str]:
    return {k: rng.choice(VALUES) for k in rng.sample(KEYS, rng.randint(0, 3))}


def _cm_steps(rng: random.Random, name: str) -> list[Callable[[], Step]]:
    path = f"/api/v1/namespaces/{{ns}}/configmaps/{name}"
    base = "/api/v1/namespaces/{ns}/configmaps"

    def create() -> Step:
        variant = rng.choice(["ok", "ok", "ok", "labelled", "dry-run", "bad-name", "bad-key", "bad-label"])
        body = _cm(name, _data(rng))
        if variant == "labelled":
            body["metadata"]["labels"] = {"app": "d"}
        if variant == "dry-run":
            return Step("create cm dry-run", "POST", base, body, query={"dryRun": "All"})
        if variant == "bad-name":
            body["metadata"]["name"] = name.upper() + "_x"
        elif variant == "bad-key":
            body["data"]["bad key!"] = "v"
        elif variant == "bad-label":
            body["metadata"]["labels"] = {"app": "-not valid-"}
        return Step(f"create cm {variant}", "POST", base, body)

    def patch() -> Step:
        kind = rng.choice(["merge", "json", "strategic"])
        if kind == "json":
            op = rng.choice(["add", "replace", "remove", "test"])
            key = rng.choice(KEYS)
            ops = [{"op": op, "path": f"/data/{key}", **({"value": rng.choice(VALUES)} if op != "remove" else {})}]
            return Step(f"json-patch {op} {key}", "PATCH", path, ops, CTYPES["json"])
        change: dict[str, Any] = {k: rng.choice([None, *VALUES]) for k in rng.sample(KEYS, 2)}
        return Step(f"{kind}-patch", "PATCH", path, {"data": change}, CTYPES[kind])

    def apply() -> Step:
        manager, force = rng.choice(["alice", "bob"]), rng.random() < 0.3
        query = {"fieldManager": manager, **({"force": "true"} if force else {})}
        return Step(f"apply cm by {manager}{' force' if force else ''}", "PATCH", path, _cm(name, _data(rng)),
                    CTYPES["apply"], query)

    def put() -> Step:
        rv = rng.choice(["current", "stale"])
        return Step(f"put cm ({rv} rv)", "PUT", path, _cm(name, _data(rng)), read_rv=rv)

    def finalizer() -> Step:
        value = rng.choice([["example.com/hold"], ["hold"], None])
        return Step(f"finalizers {value}", "PATCH", path, {"metadata": {"finalizers": value}}, CTYPES["merge"])

    def delete() -> Step:
        # Orphan/Foreground are left out: the real garbage collector finishes them a moment
        # later, the emulator's at once, so the steps after would race it.
        variant = rng.choice(["plain", "plain", "stale-precondition", "background"])
        body = {"stale-precondition": {"preconditions": {"resourceVersion": "{rv0}"}},
                "background": {"propagationPolicy": "Background"}}.get(variant)
        return Step(f"delete cm {variant}", "DELETE", path, body)

    def label() -> Step:
        return Step("label cm", "PATCH", path, {"metadata": {"labels": {"app": rng.choice(["d", "e", None])}}},
                    CTYPES["merge"])

    return [create, create, patch, patch, apply, apply, apply, put, finalizer, delete, label,
            lambda: Step("get cm", "GET", path)]


def _pod_steps(rng: random.Random, name: str) -> list[Callable[[], Step]]:
    path = f"/api/v1/namespaces/{{ns}}/pods/{name}"

    def create() -> Step:
        variant = rng.choice(["ok", "ok", "no-containers", "no-image", "restart", "no-sa", "no-pc", "priority"])
        spec: dict[str, Any] = {"schedulerName": "differential-no-scheduler",
                                "containers": [{"name": "main", "image": rng.choice(["busybox", "busybox:1.36"]),
                                                "env": [{"name": "A", "value": "1"}]}]}
        if variant == "no-containers":
            spec["containers"] = []
        elif variant == "no-image":
            del spec["containers"][0]["image"]
        elif variant == "restart":
            spec["restartPolicy"] = "Sometimes"
        elif variant == "no-sa":
            spec["serviceAccountName"] = "nobody"
        elif variant == "no-pc":
            spec["priorityClassName"] = "no-such-class"
        elif variant == "priority":
            spec["priority"] = 7
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "d"}}, "spec": spec}
        return Step(f"create pod {variant}", "POST", "/api/v1/namespaces/{ns}/pods", body)

    def patch() -> Step:
        what = rng.choice(["label", "image", "env", "containers-order"])
        body: dict[str, Any] = {
            "label": {"metadata": {"labels": {"tier": rng.choice(["a", "b"])}}},
            "image": {"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}},
            "env": {"spec": {"containers": [{"name": "main", "env": [{"name": "B", "value": "2"}]}]}},
            "containers-order": {"metadata": {"finalizers": ["example.com/b", "example.com/a"]}},
        }[what]
        return Step(f"strategic-patch pod {what}", "PATCH", path, body, CTYPES["strategic"])

    def drop_finalizers() -> Step:
        return Step("pod finalizers off", "PATCH", path, {"metadata": {"finalizers": None}}, CTYPES["merge"])

    return [create, create, patch, patch, drop_finalizers, lambda: Step("delete pod", "DELETE", path),
            lambda: Step("get pod", "GET", path)]


def _widget_steps(rng: random.Random, name: str) -> list[Callable[[], Step]]:
    path = f"{WIDGETS}/namespaces/{{ns}}/widgets/{name}"

    def body(size: int) -> dict[str, Any]:
        spec: dict[str, Any] = {"size": size}
        if rng.random() < 0.5:
            spec["ports"] = [{"name": n, "port": rng.randint(1, 9000)} for n in rng.sample(["http", "grpc"], rng.randint(1, 2))]
        return {"apiVersion": "contract.llmops.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}

    def create() -> Step:
        size = rng.choice([1, 3, 0, 200])
        return Step(f"create widget size {size}", "POST", f"{WIDGETS}/namespaces/{{ns}}/widgets", body(size))

    def apply() -> Step:
        manager, force = rng.choice(["alice", "bob"]), rng.random() < 0.3
        query = {"fieldManager": manager, **({"force": "true"} if force else {})}
        return Step(f"apply widget by {manager}{' force' if force else ''}", "PATCH", path, body(rng.choice([2, 4, 0])),
                    CTYPES["apply"], query)

    def merge() -> Step:
        return Step("merge-patch widget", "PATCH", path, {"spec": {"size": rng.choice([5, 0, None])}}, CTYPES["merge"])

    def status() -> Step:
        manager, force = rng.choice(["alice", "bob"]), rng.random() < 0.3
        query = {"fieldManager": manager, **({"force": "true"} if force else {})}
        conditions = [{"type": t, "status": rng.choice(["True", "False"])} for t in rng.sample(["Ready", "Synced"], 2)]
        body = {"apiVersion": "contract.llmops.dev/v1", "kind": "Widget", "metadata": {"name": name},
                "status": {"replicas": rng.randint(0, 3), "conditions": conditions[:rng.randint(1, 2)]}}
        return Step(f"apply widget status by {manager}{' force' if force else ''}", "PATCH", f"{path}/status", body,
                    CTYPES["apply"], query)

    return [create, apply, apply, merge, status, status, lambda: Step("strategic widget (415)", "PATCH", path, {"spec": {"size": 2}},
                                                      CTYPES["strategic"]),
            lambda: Step("delete widget", "DELETE", path)]


def sequence(seed: int) -> list[Step]:
    rng = random.Random(seed)
    pool = (_cm_steps(rng, f"c{seed}") + _cm_steps(rng, f"d{seed}") + _pod_steps(rng, f"p{seed}")
            + _widget_steps(rng, f"w{seed}"))
    steps = [rng.choice(pool)() for _ in range(rng.randint(10, 16))]
    if seed % WATCH_EVERY == 0:
        selector = {"labelSelector": "app=d"} if seed % (2 * WATCH_EVERY) else {}
        steps.append(Step(f"watch configmaps from the start {selector}", "GET", "/api/v1/namespaces/{ns}/configmaps",
                          query={"watch": "true", "resourceVersion": "{rv0}", "timeoutSeconds": "1", **selector}))
    return steps


# -- running and comparing ---------------------------------------------------------------------------

def run(server: Server, steps: list[Step]) -> list[Any]:
    _, listing = server.call("GET", f"/api/v1/namespaces/{server.ns}/configmaps")
    rv0 = listing["metadata"]["resourceVersion"]
    answers = []
    for step in steps:
        path = step.path.format(ns=server.ns)
        query = {k: v.format(rv0=rv0) for k, v in step.query.items()}
        body = json.loads(json.dumps(step.body).replace("{rv0}", rv0)) if step.body is not None else None
        if step.read_rv:
            code, current = server.call("GET", path)
            rv = current["metadata"]["resourceVersion"] if code == 200 and step.read_rv == "current" else rv0
            body["metadata"]["resourceVersion"] = rv
        code, answer = server.call(step.method, path, body, step.ctype, query)
        answers.append(outcome(code, answer, server.ns))
    return answers


def outcome(code: int, answer: Any, ns: str) -> Any:
    if isinstance(answer, list):  # a watch
        return [(e["type"], normalise(e["object"], ns)) for e in answer
                if e["type"] != "BOOKMARK" and e["object"]["metadata"]["name"] != "kube-root-ca.crt"]
    if isinstance(answer, dict) and answer.get("kind") == "Status":
        causes = sorted((c.get("field", ""), c.get("reason", "")) for c in (answer.get("details") or {}).get("causes") or [])
        return (code, answer.get("status"), answer.get("reason"), causes)
    return (code, normalise(answer, ns))


def normalise(obj: Any, ns: str) -> Any:
    if not isinstance(obj, dict):
        return obj
    obj = json.loads(json.dumps(obj).replace(ns, "<ns>"))
    meta = obj.get("metadata") or {}
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        meta.pop(key, None)
    if "deletionTimestamp" in meta:
        meta["deletionTimestamp"] = "<set>"
    spec = obj.get("spec") or {}
    if obj.get("kind") == "Pod":  # the real ServiceAccount admission mounts a token volume
        token = {v["name"] for v in spec.get("volumes") or [] if v["name"].startswith("kube-api-access-")}
        spec["volumes"] = [v for v in spec.get("volumes") or [] if v["name"] not in token] or None
        for c in spec.get("containers") or []:
            c["volumeMounts"] = [m for m in c.get("volumeMounts") or [] if m["name"] not in token] or None
            if c["volumeMounts"] is None:
                del c["volumeMounts"]
        if spec["volumes"] is None:
            del spec["volumes"]
        for cond in (obj.get("status") or {}).get("conditions") or []:
            cond["lastTransitionTime"] = "<set>"
    return obj


@pytest.fixture(scope="module")
def servers(control_plane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    emulator = ApiServer(bookmark_interval=60).start()
    try:
        kubeconfig = emulator.write_kubeconfig(tmp_path_factory.mktemp("differential") / "kubeconfig")
        pair = (Server(str(kubeconfig)), Server(str(control_plane)))
        for s in pair:
            install(s)
        yield pair
        for s in pair:
            s.call("DELETE", f"/api/v1/namespaces/{s.ns}")
    finally:
        emulator.stop()


def install(server: Server) -> None:
    from llmops.sandbox.testing import eventually

    code, _ = server.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", WIDGET_CRD)
    assert code in (201, 409)
    eventually(lambda: server.call("GET", WIDGETS)[0] == 200, timeout=30)
    assert server.call("POST", "/api/v1/namespaces", {"metadata": {"name": server.ns}})[0] == 201
    eventually(lambda: server.call("GET", f"/api/v1/namespaces/{server.ns}/serviceaccounts/default")[0] == 200,
               timeout=30)


def test_same_answers_on_both_servers(servers: tuple[Server, Server]) -> None:
    emulated, real = servers
    divergences = []
    for seed in SEEDS:
        steps = sequence(seed)
        for i, (step, got, want) in enumerate(zip(steps, run(emulated, steps), run(real, steps), strict=True)):
            if got != want:  # the first per sequence: later steps may only inherit it
                divergences.append(f"seed {seed} step {i} {step.label}:\n  emulated {got}\n  real     {want}")
                break
    assert not divergences, f"{len(divergences)} divergences:\n" + "\n".join(divergences[:12])
