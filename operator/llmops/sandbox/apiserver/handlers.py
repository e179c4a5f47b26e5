"""HTTP: turns Kubernetes REST paths into `Cluster` calls, and streams watches and logs.

One catch-all route parses `/api/v1/...` and `/apis/G/V/...` into (resource, namespace,
name, subresource), derives the Kubernetes verb, consults fault injection, and answers
JSON (or a meta.k8s.io Table when the client asks for one). Watches are chunked streams
of newline-separated events, like the real server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import yaml
from aiohttp import web

from . import patching, yamlcompat
from .core import FIELD_VALIDATION, WRITER, Cluster
from .counters import NON_RESOURCE, RequestCounter, user_of
from .errors import ApiError, bad_request, error_response
from .faults import Faults, created_name
from .registry import Resource
from .requestinfo import parse, truthy
from .selectors import parse_field_selector, parse_label_selector
from .store import Event, Watcher
from .tables import to_table

VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-llmops-sandbox",
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23", "compiler": "gc",
           "platform": "linux/amd64"}


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        content_type="application/json", headers=headers)


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    if "protobuf" in request.content_type:
        # Clients (kubectl's client-go) fall back to JSON when protobuf is refused with 415.
        raise ApiError(415, 'the body of the request was in an unknown format - accepted media '
                            'types include: application/json, application/yaml')
    try:
        if "yaml" in request.content_type:
            return yamlcompat.load(raw.decode())
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as e:
        raise bad_request(f"the body of the request could not be decoded: {e}") from e


class Handlers:
    def __init__(self, cluster: Cluster, faults: Faults, bookmark_interval: float,
                 default_watch_timeout: float = 1800.0) -> None:
        self.cluster = cluster
        self.faults = faults
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.watchers: set[Watcher] = cluster.store.watchers
        self.requests = RequestCounter()  # per (user, verb, resource); see counters.py

    def cut(self, plural: str | None = None) -> None:
        for w in list(self.watchers):
            if plural in (None, w.plural):
                w.cut.set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiError as e:
            return error_response(e)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug here must show up as a 500 in the client, not a hang
            return error_response(ApiError(500, f"emulator error: {type(e).__name__}: {e}"))

    # -- routing --------------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.StreamResponse:
        info = parse(request.method, request.path, request.query)
        self.requests.record(user_of(request.headers), (info.verb if info else None) or request.method.lower(),
                             info.resource if info else NON_RESOURCE)
        parts = [p for p in request.path.split("/") if p]
        reg = self.cluster.registry
        if request.method == "GET":
            if parts in (["healthz"], ["readyz"], ["livez"]):
                return web.Response(text="ok")
            if parts == ["version"]:
                return _json(VERSION)
            if parts == ["api"]:
                return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})
            if parts == ["apis"]:
                return _json(reg.api_group_list())
            if parts[:2] == ["openapi", "v3"]:
                return _json(self._openapi_v3(parts[2:]))
            if len(parts) == 2 and parts[0] == "apis":
                doc = reg.api_group(parts[1])
                if doc:
                    return _json(doc)
            if parts == ["api", "v1"] or (len(parts) == 3 and parts[0] == "apis"):
                group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
                doc = reg.resource_list(group, version)
                if doc:
                    return _json(doc)
        res = reg.get(info.group, info.version, info.plural) if info and not info.tail else None
        if info is None or res is None:
            raise ApiError(404, "the server could not find the requested resource")
        namespace, name, sub, verb = info.namespace, info.name, info.sub, info.verb
        if (sub and sub not in res.subresources) or (namespace is not None and not res.namespaced):
            raise ApiError(404, "the server could not find the requested resource")
        if res.namespaced and name and namespace is None:
            raise ApiError(404, "the server could not find the requested resource")
        q = request.query
        method = request.method
        if verb is None:
            raise ApiError(405, f"method {method} not allowed")
        self.faults.check(verb, res.plural, sub, namespace,
                          created_name(verb, name, await request.read() if verb == "create" else b""))
        dry_run = q.get("dryRun") == "All"
        FIELD_VALIDATION.set(q.get("fieldValidation", ""))
        # Like the real server: an update's manager defaults to the User-Agent's product name.
        WRITER.set((q.get("fieldManager") or request.headers.get("User-Agent", "").split("/")[0][:128], sub))
        c = self.cluster

        if verb == "watch":
            return await self._watch(request, res, namespace, name)
        if verb == "list":
            items = c.list(res, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            meta = {"resourceVersion": str(c.store.rv)}
            if _wants_table(request):
                return _json(to_table(res, items, meta, q.get("includeObject", "Metadata")))
            return _json({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                          "metadata": meta, "items": items})
        assert name is not None or verb in ("create", "deletecollection")
        if verb == "get":
            if sub == "log":
                return await self._log(request, namespace or "", name or "")
            if sub == "scale":
                return _json(c.get_scale(res, namespace, name or ""))
            obj = c.get(res, namespace, name or "")
            if _wants_table(request):
                return _json(to_table(res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                      q.get("includeObject", "Metadata")))
            return _json(obj)
        if verb == "create":
            body = await _body(request)
            if sub == "binding" and res.plural == "pods":
                c.bind(namespace or "", name or "", body or {})
                return _json({"kind": "Status", "apiVersion": "v1", "metadata": {},
                              "status": "Success", "code": 201}, 201)
            if name:
                raise ApiError(405, "the server does not allow this method on the requested resource")
            return _json(c.create(res, namespace, body, dry_run), 201)
        if verb == "update":
            body = await _body(request)
            if sub == "scale":
                return _json(c.set_scale(res, namespace, name or "", body or {}, dry_run))
            return _json(c.update(res, namespace, name or "", body, sub, dry_run))
        if verb == "patch":
            raw = await request.read()
            if sub == "scale":
                return _json(self._patch_scale(res, namespace, name or "", request.content_type, raw, dry_run))
            existed = c.store.get(c.key(res, namespace, name or "")) is not None
            obj = c.patch(res, namespace, name or "", request.headers.get("Content-Type", ""), raw, sub,
                          q.get("fieldManager", ""), truthy(q.get("force")), dry_run)
            return _json(obj, 200 if existed else 201)
        options = (await _body(request)) or {}
        if "propagationPolicy" in q:
            options["propagationPolicy"] = q["propagationPolicy"]
        if "gracePeriodSeconds" in q:
            options["gracePeriodSeconds"] = int(q["gracePeriodSeconds"])
        if verb == "deletecollection":
            items = c.delete_collection(res, namespace, q.get("labelSelector"), q.get("fieldSelector"), options)
            return _json({"kind": f"{res.kind}List", "apiVersion": res.api_version,
                          "metadata": {"resourceVersion": str(c.store.rv)}, "items": items})
        before = c.store.get(c.key(res, namespace, name or ""))
        obj = c.delete(res, namespace, name or "", options, dry_run)
        still_there = c.store.get(c.key(res, namespace, name or "")) is not None
        # Like the real registries: pods answer with the deleted object, other kinds with a Status.
        if still_there or dry_run or res.group_resource == ("", "pods"):
            return _json(obj)
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                      "details": {"name": name, "group": res.group, "kind": res.plural,
                                  "uid": (before or {}).get("metadata", {}).get("uid")}})

    def _openapi_v3(self, gv_parts: list[str]) -> dict[str, Any]:
        """Just enough OpenAPI v3 for kubectl: PATCH operations that declare `fieldValidation`.

        kubectl asks whether the server validates fields itself (it then sends
        fieldValidation=Strict instead of validating client-side against a schema). Schemas
        are not published, so kubectl computes apply patches from its compiled-in types.
        """
        reg = self.cluster.registry
        gvs = [("", "v1")] + [(g, v) for g in reg.groups() for v in reg.versions(g)]
        if not gv_parts:
            return {"paths": {(f"apis/{g}/{v}" if g else "api/v1"): {
                "serverRelativeURL": f"/openapi/v3/{f'apis/{g}/{v}' if g else 'api/v1'}?hash={self.cluster.store.rv}"}
                for g, v in gvs}}
        if gv_parts[0] == "api" and gv_parts[1:] == ["v1"]:
            group, version = "", "v1"
        elif gv_parts[0] == "apis" and len(gv_parts) == 3:
            group, version = gv_parts[1], gv_parts[2]
        else:
            raise ApiError(404, "the server could not find the requested resource")
        doc = reg.resource_list(group, version)
        if doc is None:
            raise ApiError(404, "the server could not find the requested resource")
        paths: dict[str, Any] = {}
        prefix = f"/apis/{group}/{version}" if group else "/api/v1"
        for entry in doc["resources"]:
            if "/" in entry["name"]:
                continue
            ns = "/namespaces/{namespace}" if entry["namespaced"] else ""
            paths[f"{prefix}{ns}/{entry['name']}/{{name}}"] = {"patch": {
                "operationId": f"patch{entry['kind']}",
                "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}}
                               for p in ("dryRun", "fieldManager", "fieldValidation", "force")],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": entry["kind"]},
            }}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": VERSION["gitVersion"]},
                "paths": paths, "components": {"schemas": {}}}

    def _patch_scale(self, res: Resource, namespace: str | None, name: str, ctype: str, raw: bytes,
                     dry_run: bool) -> dict[str, Any]:
        scale = self.cluster.get_scale(res, namespace, name)
        body = json.loads(raw or b"null") if "yaml" not in ctype else yamlcompat.load(raw.decode())
        new = patching.json_patch(scale, body) if ctype == "application/json-patch+json" else patching.merge_patch(scale, body)
        return self.cluster.set_scale(res, namespace, name, new, dry_run)

    # -- streams --------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, res: Resource, namespace: str | None,
                     name: str | None) -> web.StreamResponse:
        q = request.query
        store = self.cluster.store
        lsel = parse_label_selector(q.get("labelSelector"))
        fsel = parse_field_selector(q.get("fieldSelector"), res.plural)
        as_table, include = _wants_table(request), q.get("includeObject", "Metadata")
        rv_param = q.get("resourceVersion") or ""
        bookmarks = truthy(q.get("allowWatchBookmarks"))
        timeout = float(q.get("timeoutSeconds") or self.default_watch_timeout)
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise bad_request(f"invalid resource version {rv_param!r}")

        def matches(obj: dict[str, Any] | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata") or {}
            if namespace is not None and res.namespaced and meta.get("namespace") != namespace:
                return False
            if name is not None and meta.get("name") != name:
                return False
            return lsel(obj) and fsel(obj)

        def translate(ev: Event) -> tuple[str, dict[str, Any]] | None:
            new_ok = matches(ev.obj)
            if ev.type == "ADDED":
                return ("ADDED", ev.obj) if new_ok else None
            if ev.type == "DELETED":
                return ("DELETED", ev.obj) if new_ok else None
            old_ok = matches(ev.old)
            if new_ok:
                return ("MODIFIED" if old_ok else "ADDED", ev.obj)
            return ("DELETED", ev.obj) if old_ok else None

        watcher = Watcher(res.group, res.plural)
        # Snapshot and subscription happen with no await in between: no event can fall in a gap.
        try:
            if rv_param in ("", "0"):
                backlog = [("ADDED", o) for o in store.items(res.group, res.plural,
                                                             namespace if res.namespaced else None)
                           if matches(o)]
            else:
                backlog = [t for t in map(translate, store.events_after(res.group, res.plural, int(rv_param)))
                           if t]
            gone_status = None
        except ApiError as e:
            backlog, gone_status = [], e.status_body()
        self.watchers.add(watcher)
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        try:
            await resp.prepare(request)

            async def send(kind: str, obj: dict[str, Any]) -> None:
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    obj = self.cluster.present(res, obj)
                    if as_table:
                        obj = to_table(res, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                       include)
                await resp.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

            if gone_status is not None:
                await send("ERROR", gone_status)
                return resp
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            pending = list(backlog)
            while not watcher.cut.is_set():
                # Drain what has arrived, so a bookmark never claims a version not yet sent.
                while not watcher.queue.empty():
                    t = translate(watcher.queue.get_nowait())
                    if t:
                        pending.append(t)
                now = loop.time()
                if now >= deadline:
                    if bookmarks and not pending:  # like the real cacher: one last bookmark as the deadline comes
                        await send("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                                "metadata": {"resourceVersion": str(store.rv)}})
                    break
                stall = self.faults.stalled(res.plural)
                if stall > 0:
                    await self._sleep_unless_cut(watcher, min(stall, deadline - now))
                    continue
                if pending:
                    kind, obj = pending.pop(0)
                    await send(kind, obj)
                    continue
                if bookmarks and now >= next_bookmark:
                    await send("BOOKMARK", {"kind": res.kind, "apiVersion": res.api_version,
                                            "metadata": {"resourceVersion": str(store.rv)}})
                    next_bookmark = now + self.bookmark_interval
                    continue
                wait = deadline - now
                if bookmarks:
                    wait = min(wait, next_bookmark - now)
                get = asyncio.ensure_future(watcher.queue.get())
                cut = asyncio.ensure_future(watcher.cut.wait())
                done, _ = await asyncio.wait({get, cut}, timeout=max(wait, 0.0),
                                             return_when=asyncio.FIRST_COMPLETED)
                cut.cancel()
                if get in done:
                    t = translate(get.result())
                    if t:
                        pending.append(t)
                else:
                    get.cancel()
            return resp
        except (ConnectionResetError, ConnectionError):
            return resp
        finally:
            self.watchers.discard(watcher)
            with contextlib.suppress(Exception):  # the client may already be gone
                await resp.write_eof()

    async def _sleep_unless_cut(self, watcher: Watcher, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(watcher.cut.wait(), timeout=max(seconds, 0.01))

    async def _log(self, request: web.Request, namespace: str, pod: str) -> web.StreamResponse:
        q = request.query
        container = q.get("container")
        text = self.cluster.read_log(namespace, pod, container)
        tail = q.get("tailLines")

        def cut_tail(t: str) -> str:
            if tail is None:
                return t
            lines = t.splitlines(keepends=True)
            return "".join(lines[-int(tail):]) if int(tail) > 0 else ""

        if not truthy(q.get("follow")):
            return web.Response(text=cut_tail(text), content_type="text/plain")
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        sent = cut_tail(text)
        offset = len(text)
        try:
            await resp.write(sent.encode())
            res = self.cluster.registry.get("", "v1", "pods")
            assert res is not None
            for _ in range(int(float(q.get("timeoutSeconds") or 3600) / 0.2)):
                await asyncio.sleep(0.2)
                try:
                    pod_obj = self.cluster.get(res, namespace, pod)
                    text = self.cluster.read_log(namespace, pod, container)
                except ApiError:
                    break
                if len(text) > offset:
                    await resp.write(text[offset:].encode())
                    offset = len(text)
                if (pod_obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                    break
        except (ConnectionResetError, ConnectionError):
            pass
        with contextlib.suppress(Exception):
            await resp.write_eof()
        return resp
