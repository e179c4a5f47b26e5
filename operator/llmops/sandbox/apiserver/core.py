"""Object semantics independent of HTTP: what create, update, patch and delete do.

One path, `_commit`, takes every write: it keeps identity fields (uid, creationTimestamp,
name, namespace) from the stored object, bumps `generation` when anything outside
metadata and status changed, validates custom resources against their CRD schema,
finishes a deletion once the last finalizer is gone, and hands the result to the store
(new resourceVersion + watch event). The status subresource rule lives here too: a write
to `/status` keeps everything but status, a write to the object keeps the old status.

Simplifications, each harmless to the clients we serve: every kind carries `generation`
(real built-ins without a spec omit it); `limit`/`continue` are ignored (one page holds
everything); protobuf request bodies are refused with 415, so kubectl's typed generators
(`kubectl create namespace x`) do not work while `apply -f`/`create -f` do.
"""

from __future__ import annotations

import contextvars
import copy
import datetime as dt
import json
import random
import re
import uuid
from collections.abc import Callable
from typing import Any

import yaml

from . import admission, fieldmanager, patching, validation, yamlcompat
from .admission import pod_security_violation
from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found
from .registry import Registry, Resource
from .selectors import parse_field_selector, parse_label_selector, selector_string
from .store import Key, Store
from .tables import jsonpath

try:  # the CRD schema validator is a separate package; validation is skipped without it
    from llmops import kubeschema
except ImportError:  # pragma: no cover - depends on what is installed
    kubeschema = None  # type: ignore[assignment]

# The request's ?fieldValidation= (Strict rejects unknown fields instead of pruning them).
FIELD_VALIDATION: contextvars.ContextVar[str] = contextvars.ContextVar("field_validation", default="")
# Who writes (field manager: ?fieldManager= or the User-Agent's product) and to which
# subresource; internal writes (GC, namespace content) run with no manager and own nothing.
WRITER: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("writer", default=("", ""))
APPLYING: contextvars.ContextVar[bool] = contextvars.ContextVar("applying", default=False)
OWNERS_CHANGED: contextvars.ContextVar[bool] = contextvars.ContextVar("owners_changed", default=False)

LogSource = Callable[[str, str, str], "str | None"]

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's generateName alphabet
_CAUSE_REASONS = {"Invalid value": "FieldValueInvalid", "Required value": "FieldValueRequired",
                  "Unsupported value": "FieldValueNotSupported", "Duplicate value": "FieldValueDuplicate",
                  "Forbidden": "FieldValueForbidden", "Too long": "FieldValueTooLong",
                  "Too many": "FieldValueTooMany", "Not found": "FieldValueNotFound"}


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    """What counts for generation: everything but metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Cluster:
    def __init__(self, registry: Registry, store: Store) -> None:
        self.registry = registry
        self.store = store
        self.log_sources: list[LogSource] = []
        self.logs: dict[tuple[str, str, str], str] = {}
        # Field ownership per object uid (server-side apply conflicts and pruning).
        self.owners: dict[str, fieldmanager.Owners] = {}
        self.after_write: Callable[[], None] = lambda: None  # GC trigger
        pcs = self.registry.get("scheduling.k8s.io", "v1", "priorityclasses")
        assert pcs is not None
        for name, value in admission.SYSTEM_PRIORITY_CLASSES.items():  # the real server makes these
            self.create(pcs, None, {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                    "metadata": {"name": name}, "value": value,
                                    "preemptionPolicy": "PreemptLowerPriority",
                                    "description": "Used for system critical pods that must not be moved "
                                                   "from their current node."})
        self._ensure_namespace("default")
        for ns in ("kube-system", "kube-public", "kube-node-lease"):
            self._ensure_namespace(ns)

    def _ensure_namespace(self, name: str) -> None:
        res = self.registry.get("", "v1", "namespaces")
        assert res is not None
        if self.store.get(self.store.key("", "namespaces", None, name)) is None:
            self.create(res, None, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    # -- reads ----------------------------------------------------------------------------------

    def key(self, res: Resource, namespace: str | None, name: str) -> Key:
        return self.store.key(res.group, res.plural, namespace if res.namespaced else None, name)

    def get(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.store.get(self.key(res, namespace, name))
        if obj is None:
            raise not_found(res.group, res.plural, name)
        return self.present(res, obj)

    def present(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """A stored object as served at `res`'s version."""
        out = copy.deepcopy(obj)
        out["apiVersion"], out["kind"] = res.api_version, res.kind
        return out

    def list(self, res: Resource, namespace: str | None, label: str | None = None,
             field: str | None = None) -> list[dict[str, Any]]:
        lsel, fsel = parse_label_selector(label), parse_field_selector(field, res.plural)
        ns = namespace if res.namespaced else None
        return [self.present(res, o) for o in self.store.items(res.group, res.plural, ns)
                if lsel(o) and fsel(o)]

    # -- writes ---------------------------------------------------------------------------------

    def create(self, res: Resource, namespace: str | None, body: Any, dry_run: bool = False,
               manager: str = "") -> dict[str, Any]:
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
            ns_obj = self.store.get(self.store.key("", "namespaces", None, namespace or ""))
            if ns_obj is None:
                raise not_found("", "namespaces", namespace or "")
            if ns_obj["metadata"].get("deletionTimestamp"):
                raise ApiError(403, f'{res.kind.lower()}s "{meta.get("name", "")}" is forbidden: '
                                    f"unable to create new content in namespace {namespace} because "
                                    "it is being terminated", reason="Forbidden")
        else:
            meta.pop("namespace", None)
        if res.group_resource == ("", "pods"):
            self._admit_pod(namespace or "", obj)  # before naming and storage, as on a real server
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(res.kind, res.group, "", [{"reason": "FieldValueRequired",
                              "message": "Required value: name or generateName is required",
                              "field": "metadata.name"}],
                              f"{res.kind} \"\" is invalid: metadata.name: Required value: "
                              "name or generateName is required")
            while True:
                meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
                if self.store.get(self.key(res, namespace, meta["name"])) is None:
                    break
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if _has_generation(res):
            meta["generation"] = 1
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        if "status" in res.subresources and res.plural not in ("namespaces", "nodes", "customresourcedefinitions"):
            obj.pop("status", None)
        self._defaults(res, obj)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        created = self._commit(res, None, obj, dry_run)
        if res.group_resource == ("", "namespaces") and not dry_run:
            self._namespace_content(created["metadata"]["name"])
        return created

    def _namespace_content(self, namespace: str) -> None:
        """What the controller manager puts in every new namespace that pods need: the
        `default` ServiceAccount (a real cluster adds it a moment later; here it is at once)."""
        sa = self.registry.get("", "v1", "serviceaccounts")
        assert sa is not None
        if self.store.get(self.key(sa, namespace, "default")) is None:
            self.create(sa, namespace, {"apiVersion": "v1", "kind": "ServiceAccount",
                                        "metadata": {"name": "default"}})

    def _lookup(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        group = "scheduling.k8s.io" if plural == "priorityclasses" else ""
        return self.store.get(self.store.key(group, plural, namespace, name))

    def _admit_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        """Mutating admission (ServiceAccount, Priority, tolerations), then Pod Security."""
        defaults = [pc for pc in self.store.items("scheduling.k8s.io", "priorityclasses", None)
                    if pc.get("globalDefault")]
        denied = admission.admit_pod(pod, namespace, self._lookup, defaults[0] if defaults else None)
        if not denied:
            ns_obj = self.store.get(self.store.key("", "namespaces", None, namespace)) or {}
            denied = pod_security_violation(ns_obj.get("metadata", {}).get("labels") or {}, pod)
        if not denied:  # ResourceQuota is the last plugin in the real chain
            quotas = self.store.items("", "resourcequotas", namespace)
            if quotas:
                used = admission.pods_in_use(self.store.items("", "pods", namespace))
                denied = admission.quota_violation(pod["metadata"].get("name", ""), quotas, used)
        if denied:
            raise ApiError(403, denied, reason="Forbidden",
                           details={"name": pod["metadata"].get("name", ""), "kind": "pods"})

    def _defaults(self, res: Resource, obj: dict[str, Any]) -> None:
        """The few defaults clients rely on seeing after a create."""
        gr = res.group_resource
        if gr == ("", "namespaces"):
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["status"] = {"phase": "Active"}
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
        elif gr == ("", "pods"):
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            _pod_defaults(obj.setdefault("spec", {}))
        elif gr == ("apps", "deployments"):
            obj.setdefault("spec", {}).setdefault("replicas", 1)
        elif gr == ("", "resourcequotas"):  # the quota controller's first pass, done inline
            namespace = obj["metadata"].get("namespace")
            obj["status"] = admission.quota_status(obj, admission.pods_in_use(self.store.items("", "pods", namespace)))
        elif gr == ("", "services"):
            obj.setdefault("spec", {}).setdefault("type", "ClusterIP")
        elif gr == ("apiextensions.k8s.io", "customresourcedefinitions"):
            names = obj.get("spec", {}).get("names", {})
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [v["name"] for v in obj.get("spec", {}).get("versions", [])
                                   if v.get("storage")],
                "conditions": [
                    {"type": t, "status": "True", "reason": r, "message": m,
                     "lastTransitionTime": now_rfc3339()}
                    for t, r, m in (("NamesAccepted", "NoConflicts", "no conflicts found"),
                                    ("Established", "InitialNamesAccepted",
                                     "the initial names have been accepted"))],
            }

    def update(self, res: Resource, namespace: str | None, name: str, body: Any, sub: str = "",
               dry_run: bool = False) -> dict[str, Any]:
        old = self.store.get(self.key(res, namespace, name))
        if old is None:
            raise not_found(res.group, res.plural, name)
        if not isinstance(body, dict):
            raise bad_request("the body of the request was in an unknown format")
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request("the name of the object does not match the name on the URL")
        rv = meta.get("resourceVersion")
        if rv not in (None, "") and rv != old["metadata"]["resourceVersion"]:
            raise conflict(res.group, res.plural, name)
        return self._commit(res, old, self._merge_sub(res, old, body, sub), dry_run)

    def _merge_sub(self, res: Resource, old: dict[str, Any], new: dict[str, Any], sub: str) -> dict[str, Any]:
        """Apply the status-subresource split and keep the identity fields of `old`."""
        new = copy.deepcopy(new)
        if sub == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        if "status" in res.subresources:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "namespace", "name", "generation"):
            if k in old["metadata"]:
                meta[k] = old["metadata"][k]
            else:
                meta.pop(k, None)
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        new["apiVersion"], new["kind"] = old.get("apiVersion"), old.get("kind")
        return new

    def patch(self, res: Resource, namespace: str | None, name: str, content_type: str,
              raw: bytes, sub: str = "", manager: str = "", force: bool = False,
              dry_run: bool = False) -> dict[str, Any]:
        ctype = content_type.split(";")[0].strip()
        old = self.store.get(self.key(res, namespace, name))
        if ctype == "application/apply-patch+yaml":
            if not manager:
                raise invalid("PatchOptions", "meta.k8s.io", "", [{
                    "reason": "FieldValueRequired", "message": "Required value: is required for apply patch",
                    "field": "fieldManager"}], 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                    "Required value: is required for apply patch")
            applied = self._decode_apply(res, raw)
            return self._apply(res, namespace, name, old, applied, sub, manager, force, dry_run)
        if ctype == "application/strategic-merge-patch+json" and res.custom:
            raise ApiError(415, "the body of the request was in an unknown format - accepted "
                                "media types include: application/json-patch+json, "
                                "application/merge-patch+json, application/apply-patch+yaml")
        if old is None:
            raise not_found(res.group, res.plural, name)
        try:
            body = json.loads(raw or b"null")
        except ValueError as e:
            raise bad_request(f"error decoding patch: {e}") from e
        if ctype == "application/merge-patch+json":
            candidate = patching.merge_patch(old, body)
        elif ctype == "application/json-patch+json":
            candidate = patching.json_patch(old, body)
        elif ctype == "application/strategic-merge-patch+json":
            if res.custom:
                raise ApiError(415, "the body of the request was in an unknown format - accepted "
                                    "media types include: application/json-patch+json, "
                                    "application/merge-patch+json, application/apply-patch+yaml")
            candidate = patching.strategic_merge(old, body, patching.builtin_list_rule)
        else:
            raise ApiError(415, "the body of the request was in an unknown format - accepted media "
                                "types include: application/json-patch+json, application/merge-patch+json, "
                                "application/apply-patch+yaml, application/strategic-merge-patch+json")
        if not isinstance(candidate, dict):
            raise ApiError(422, "patch result is not an object")
        rv = (candidate.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "", old["metadata"]["resourceVersion"]):
            raise conflict(res.group, res.plural, name)
        return self._commit(res, old, self._merge_sub(res, old, candidate, sub), dry_run)

    def _apply(self, res: Resource, namespace: str | None, name: str, old: dict[str, Any] | None,
               config: dict[str, Any], sub: str, manager: str, force: bool, dry_run: bool) -> dict[str, Any]:
        """Server-side apply: merge, prune what this manager dropped, check other managers'
        fields for conflicts (fieldmanager), then the one write path."""
        rule = self._list_rule(res)
        key = (manager, "Apply", sub)
        owned = fieldmanager.scoped(fieldmanager.config_set(config, rule), sub, "status" in res.subresources)
        token = APPLYING.set(True)
        try:
            if old is None:
                if sub:
                    raise not_found(res.group, res.plural, name)
                result = self.create(res, namespace, config, dry_run)
                owners = fieldmanager.Owners()
            else:
                owners = self.owners.get(old["metadata"]["uid"], fieldmanager.Owners()).copy()
                merged = patching.apply_merge(old, config, rule)
                merged = fieldmanager.prune(merged, owners.to_prune(key, owned))
                candidate = self._merge_sub(res, old, merged, sub)
                touched, removed = self._changes(res, old, candidate, sub)
                before = self.owners.get(old["metadata"]["uid"], fieldmanager.Owners()).sets
                owners.apply(key, owned, touched, removed, force, res.api_version)
                # New owners alone are a write on a real server (managedFields change): new version, event.
                token_write = OWNERS_CHANGED.set(owners.sets != before)
                try:
                    result = self._commit(res, old, candidate, dry_run)
                finally:
                    OWNERS_CHANGED.reset(token_write)
        finally:
            APPLYING.reset(token)
        if not dry_run and result["metadata"].get("uid"):
            if old is None:
                owners.sets[key] = owned
            self.owners[result["metadata"]["uid"]] = owners
        return result

    def _list_rule(self, res: Resource) -> patching.ListRule:
        return patching.schema_list_rule(res.schema) if res.custom else patching.builtin_list_rule

    def _changes(self, res: Resource, old: dict[str, Any] | None, new: dict[str, Any],
                 sub: str) -> tuple[set[fieldmanager.FieldPath], set[fieldmanager.FieldPath]]:
        touched, removed = fieldmanager.changed(old or {}, new, self._list_rule(res))
        has_status = "status" in res.subresources
        return (fieldmanager.scoped(touched, sub, has_status), fieldmanager.scoped(removed, sub, has_status))

    def _track_update(self, res: Resource, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """An update (not an apply) takes the fields it changed from every other manager."""
        manager, sub = WRITER.get()
        if not manager or APPLYING.get():
            return
        touched, removed = self._changes(res, old, new, sub)
        owners = self.owners.setdefault(new["metadata"]["uid"], fieldmanager.Owners())
        owners.update((manager, "Update", sub), touched, removed)

    def _decode_apply(self, res: Resource, raw: bytes) -> dict[str, Any]:
        try:
            applied = yamlcompat.load(raw.decode() or "{}")
        except yaml.YAMLError as e:
            raise bad_request(f"error decoding YAML: error converting YAML to JSON: {e}") from e
        if not isinstance(applied, dict):
            kind = "array" if isinstance(applied, list) else "string" if isinstance(applied, str) else "number"
            raise bad_request("error decoding YAML: error unmarshaling JSON: while decoding JSON: json: "
                              f"cannot unmarshal {kind} into Go value of type map[string]interface {{}}")
        if not res.custom:
            problems = admission.builtin_type_errors(res.kind, applied)
            if problems:
                meta = applied.get("metadata") if isinstance(applied.get("metadata"), dict) else {}
                ns, name = (v if isinstance(v, str) else "" for v in (meta.get("namespace"), meta.get("name")))
                listed = problems[0] if len(problems) == 1 else "errors:\n" + "\n".join(f"  {p}" for p in problems)
                raise ApiError(500, f"failed to create typed patch object ({ns}/{name}; {res.group}/{res.version}, "
                                    f"Kind={res.kind}): {listed}")
        return applied

    def delete(self, res: Resource, namespace: str | None, name: str,
               options: dict[str, Any] | None = None, dry_run: bool = False) -> dict[str, Any]:
        options = options or {}
        key = self.key(res, namespace, name)
        old = self.store.get(key)
        if old is None:
            raise not_found(res.group, res.plural, name)
        pre = options.get("preconditions") or {}
        if pre.get("uid") not in (None, old["metadata"]["uid"]):
            raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                f"object meta: {old['metadata']['uid']}", reason="Conflict")
        if pre.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise conflict(res.group, res.plural, name)
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background")
        if policy not in ("Background", "Foreground", "Orphan"):
            raise bad_request(f"invalid propagationPolicy {policy!r}")
        new = copy.deepcopy(old)
        meta = new["metadata"]
        fins = list(meta.get("finalizers") or [])
        extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(policy)
        if extra and extra not in fins and not meta.get("deletionTimestamp"):
            fins.append(extra)
        grace = self._grace(res, old, options)
        is_namespace = res.group_resource == ("", "namespaces")
        if is_namespace:
            # The namespace controller (gc.sweep) empties it and then removes it.
            new.setdefault("status", {})["phase"] = "Terminating"
        if not fins and not grace and not is_namespace:
            if dry_run:
                return self.present(res, old)
            gone = self.store.remove(key)
            self._after_remove(res, old)
            out = self.present(res, gone or old)
            if res.group_resource == ("", "pods"):  # the deleted pod as served: marked, grace 0
                out["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0,
                                       generation=int(out["metadata"].get("generation", 1)) + 1)
            return out
        if not meta.get("deletionTimestamp"):
            meta["deletionTimestamp"] = now_rfc3339()
            if _has_generation(res):
                meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["deletionGracePeriodSeconds"] = grace
        meta["finalizers"] = fins
        if not fins:
            meta.pop("finalizers")
        return self._write(res, old, new, dry_run)

    def _grace(self, res: Resource, pod: dict[str, Any], options: dict[str, Any]) -> int:
        """Pods bound to a node and still running are deleted gracefully (the kubelet finishes)."""
        if res.group_resource != ("", "pods"):
            return 0
        if not (pod.get("spec") or {}).get("nodeName"):
            return 0
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        grace = options.get("gracePeriodSeconds")
        if grace is None:
            grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        current = pod["metadata"].get("deletionGracePeriodSeconds")
        return int(min(grace, current) if current is not None else grace)

    def delete_collection(self, res: Resource, namespace: str | None, label: str | None,
                          field: str | None, options: dict[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        for obj in self.list(res, namespace, label, field):
            try:
                out.append(self.delete(res, obj["metadata"].get("namespace"), obj["metadata"]["name"], options))
            except ApiError as e:
                if e.code != 404:
                    raise
        return out

    # -- the one write path -----------------------------------------------------------------------

    def _commit(self, res: Resource, old: dict[str, Any] | None, new: dict[str, Any],
                dry_run: bool) -> dict[str, Any]:
        meta = new["metadata"]
        if old is not None and res.group_resource == ("", "pods"):
            admission.default_tolerations(new.setdefault("spec", {}))
        if not res.custom:
            _omit_empty(res, new)
        if old is not None:
            if _content(old) != _content(new) and _has_generation(res):
                meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if old["metadata"].get("deletionTimestamp") and added:
                self._invalid(res, new, [("metadata.finalizers", "Forbidden",
                              "Forbidden: no new finalizers can be added if the object is being deleted, "
                              f"found new finalizers {json.dumps(sorted(added))}")])
            if res.group_resource == ("", "pods"):
                self._check_pod_update(res, old, new)
        else:
            self._check_name(res, new)
        problems = validation.builtin_errors("" if res.custom else res.kind, new, old is not None)
        if problems:
            self._invalid(res, new, problems)
        if res.group_resource == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self._validate_crd(res, old, new)
        if res.custom and res.schema:
            new = self._validate_custom(res, old, new)
        if old is None and self.store.get(self.key(res, meta.get("namespace"), meta["name"])) is not None:
            raise already_exists(res.group, res.plural, meta["name"])  # after validation, as on a real server
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and not (
            res.group_resource == ("", "pods") and meta.get("deletionGracePeriodSeconds")
        ) and res.group_resource != ("", "namespaces"):
            if dry_run:
                return self.present(res, new)
            # Deleted without storing the emptied object first: the DELETED event carries the
            # last stored state (finalizers included), as etcd's delete does; the caller gets `new`.
            key = self.key(res, meta.get("namespace"), meta["name"])
            gone = self.store.remove(key)
            self._after_remove(res, new)
            out = self.present(res, new)
            if gone:
                out["metadata"]["resourceVersion"] = gone["metadata"]["resourceVersion"]
            return out
        return self._write(res, old, new, dry_run)

    def _write(self, res: Resource, old: dict[str, Any] | None, new: dict[str, Any],
               dry_run: bool) -> dict[str, Any]:
        if dry_run:
            return self.present(res, new)
        meta = new["metadata"]
        if old is not None and _same_content(old, new) and not OWNERS_CHANGED.get():
            # A real API server does not bump resourceVersion (nor send a watch event) for a
            # write that changes nothing; controllers that re-apply every reconcile rely on it.
            return self.present(res, old)
        stored = self.store.put(self.key(res, meta.get("namespace"), meta["name"]), new)
        self._track_update(res, old, stored)
        if res.group_resource == ("apiextensions.k8s.io", "customresourcedefinitions"):
            self.registry.set_crd(stored)
        self.after_write()
        return self.present(res, stored)

    def _after_remove(self, res: Resource, obj: dict[str, Any]) -> None:
        uid = obj["metadata"].get("uid")
        self.owners.pop(uid, None)
        if res.group_resource == ("apiextensions.k8s.io", "customresourcedefinitions"):
            spec = obj.get("spec") or {}
            group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
            for key in [k for k in self.store.objects if k[:2] == (group, plural)]:
                self.store.remove(key)
            self.registry.remove_crd(obj["metadata"]["name"])
            for w in self.store.watchers:  # a real server ends watches of a resource it stops serving
                if (w.group, w.plural) == (group, plural):
                    w.cut.set()
        self.after_write()

    # -- validation -----------------------------------------------------------------------------

    def _invalid(self, res: Resource, obj: dict[str, Any], errors: list[tuple[str, str, str]]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        kind = f"{res.kind}.{res.group}" if res.group else res.kind
        texts = [f"{path}: {detail}" for path, _, detail in errors]
        body = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
        raise invalid(res.kind, res.group, name,
                      [{"reason": _CAUSE_REASONS.get(t, t), "message": d, "field": p}
                       for p, t, d in errors], f'{kind} "{name}" is invalid: {body}')

    def _check_name(self, res: Resource, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        label = res.plural in ("namespaces", "services")
        rx, what = (_DNS_LABEL, "label") if label else (_DNS_SUBDOMAIN, "subdomain")
        limit = 63 if label else 253
        if not rx.match(name) or len(name) > limit:
            self._invalid(res, obj, [("metadata.name", "Invalid value",
                          f'Invalid value: "{name}": a lowercase RFC 1123 {what} must consist of lower '
                          "case alphanumeric characters, '-' or '.', and must start and end with an "
                          "alphanumeric character")])

    def _check_pod_update(self, res: Resource, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Pod specs are immutable except images, activeDeadlineSeconds, tolerations, gates."""

        def mutable_stripped(spec: dict[str, Any]) -> dict[str, Any]:
            spec = copy.deepcopy(spec or {})
            for key in ("containers", "initContainers"):
                for c in spec.get(key) or []:
                    c.pop("image", None)
            for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
                spec.pop(key, None)
            return spec

        def sans_seconds(tolerations: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
            return [{k: v for k, v in t.items() if k != "tolerationSeconds"} for t in tolerations or []]

        added = sans_seconds((new.get("spec") or {}).get("tolerations"))
        if any(t not in added for t in sans_seconds((old.get("spec") or {}).get("tolerations"))):
            self._invalid(res, new, [("spec.tolerations", "Forbidden",
                          "Forbidden: existing toleration can not be modified except its tolerationSeconds")])
        if mutable_stripped(old.get("spec")) != mutable_stripped(new.get("spec")):
            self._invalid(res, new, [("spec", "Forbidden",
                          "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, "
                          "`spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, "
                          "`spec.tolerations` (only additions to existing tolerations), "
                          "`spec.schedulingGates`")])

    def _validate_crd(self, res: Resource, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
        """Refuse a CRD whose schema the real server refuses (list-map keys, CEL rule types)."""
        if kubeschema is None or (old is not None and old.get("spec") == new.get("spec")):
            return
        errors = kubeschema.crd_errors(new)
        if errors:
            self._invalid(res, new, [(e.field, e.reason, e.body) for e in errors])

    def _validate_custom(self, res: Resource, old: dict[str, Any] | None,
                         new: dict[str, Any]) -> dict[str, Any]:
        """Default, then prune (or reject, with fieldValidation=Strict), then validate."""
        if kubeschema is None:
            return new
        schema = res.schema or {}
        if FIELD_VALIDATION.get() == "Strict":
            unknown = kubeschema.unknown_fields(schema, new)
            if unknown:
                texts = ", ".join(str(e) for e in unknown)
                raise bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a '
                                  f"{res.kind}: strict decoding error: {texts}")
        candidate = kubeschema.prune(schema, kubeschema.apply_defaults(schema, new))
        for k in ("apiVersion", "kind", "metadata"):
            if k in new:
                candidate[k] = new[k]
        errors = kubeschema.validate(schema, candidate, old)
        if errors:
            self._invalid(res, candidate, [(e.path or "<nil>", e.type, e.body()) for e in errors])
        return candidate

    # -- subresources ---------------------------------------------------------------------------

    def get_scale(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.get(res, namespace, name)
        spec_path, status_path, selector_path = res.scale_paths
        if res.custom:
            selector = jsonpath(obj, selector_path) if selector_path else None
        else:
            selector = selector_string((obj.get("spec") or {}).get("selector"))
        meta = obj["metadata"]
        scale: dict[str, Any] = {
            "kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": jsonpath(obj, spec_path) or 0},
            "status": {"replicas": jsonpath(obj, status_path) or 0},
        }
        if selector:
            scale["status"]["selector"] = selector
        return scale

    def set_scale(self, res: Resource, namespace: str | None, name: str, scale: dict[str, Any],
                  dry_run: bool = False) -> dict[str, Any]:
        old = self.store.get(self.key(res, namespace, name))
        if old is None:
            raise not_found(res.group, res.plural, name)
        rv = (scale.get("metadata") or {}).get("resourceVersion")
        if rv not in (None, "", old["metadata"]["resourceVersion"]):
            raise conflict(res.group, res.plural, name)
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid("Scale", "autoscaling", name, [{"reason": "FieldValueInvalid",
                          "message": "Invalid value: must be greater than or equal to 0",
                          "field": "spec.replicas"}],
                          f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                          f"{replicas}: must be greater than or equal to 0")
        new = copy.deepcopy(old)
        cur: dict[str, Any] = new
        parts = res.scale_paths[0].strip(".").split(".")
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        cur[parts[-1]] = replicas
        self._commit(res, old, new, dry_run)
        return self.get_scale(res, namespace, name) if not dry_run else scale

    def bind(self, namespace: str, name: str, binding: dict[str, Any]) -> None:
        res = self.registry.get("", "v1", "pods")
        assert res is not None
        old = self.store.get(self.key(res, namespace, name))
        if old is None:
            raise not_found("", "pods", name)
        node = ((binding or {}).get("target") or {}).get("name")
        if not node:
            raise invalid("Binding", "", name, [{"reason": "FieldValueRequired", "message": "Required value",
                          "field": "target.name"}], f'Binding "{name}" is invalid: target.name: Required value')
        if (old.get("spec") or {}).get("nodeName"):
            raise ApiError(409, f"pod {name} is already assigned to node "
                                f"\"{old['spec']['nodeName']}\"", reason="Conflict")
        new = copy.deepcopy(old)
        new["spec"]["nodeName"] = node
        conds = [c for c in new.setdefault("status", {}).get("conditions") or [] if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": now_rfc3339()})
        new["status"]["conditions"] = conds
        self._write(res, old, new, False)

    def read_log(self, namespace: str, pod_name: str, container: str | None) -> str:
        res = self.registry.get("", "v1", "pods")
        assert res is not None
        pod = self.get(res, namespace, pod_name)
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        if container is None:
            if len(names) != 1:
                raise bad_request(f"a container name must be specified for pod {pod_name}, choose one "
                                  f"of: [{' '.join(str(n) for n in names)}]")
            container = names[0]
        elif container not in names and container not in [
                c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]:
            raise bad_request(f"container {container} is not valid for pod {pod_name}")
        for source in self.log_sources:
            text = source(namespace, pod_name, container)
            if text is not None:
                return text
        return self.logs.get((namespace, pod_name, container), "")


# Built-in kinds whose strategy keeps metadata.generation (spec-bearing workloads, pods since
# 1.33); the others (ConfigMap, Service, Namespace, ...) have none.
_GENERATION_GROUPS = {"apps", "batch", "apiextensions.k8s.io"}
_GENERATION_KINDS = {("", "pods"), ("policy", "poddisruptionbudgets"), ("networking.k8s.io", "networkpolicies"),
                     ("networking.k8s.io", "ingresses"), ("autoscaling", "horizontalpodautoscalers"),
                     ("scheduling.k8s.io", "podgroups"), ("scheduling.k8s.io", "workloads")}
# Go maps and slices with `omitempty` that clients empty: stored empty, served absent.
_OMIT_EMPTY = {"": (("metadata", "labels"), ("metadata", "annotations"), ("metadata", "finalizers"),
                    ("metadata", "ownerReferences")),
               "ConfigMap": (("data",), ("binaryData",)), "Secret": (("data",), ("stringData",))}


def _has_generation(res: Resource) -> bool:
    return res.custom or res.group in _GENERATION_GROUPS or res.group_resource in _GENERATION_KINDS


def _omit_empty(res: Resource, obj: dict[str, Any]) -> None:
    for path in (*_OMIT_EMPTY[""], *_OMIT_EMPTY.get(res.kind, ())):
        parent = obj
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if isinstance(parent, dict) and path[-1] in parent and parent[path[-1]] in ({}, [], None):
            del parent[path[-1]]


def _pod_defaults(spec: dict[str, Any]) -> None:
    """The API's defaulting of a pod spec (pkg/apis/core/v1/defaults.go), the fields clients see."""
    for key, value in (("restartPolicy", "Always"), ("terminationGracePeriodSeconds", 30),
                       ("schedulerName", "default-scheduler"), ("dnsPolicy", "ClusterFirst"),
                       ("enableServiceLinks", True), ("securityContext", {})):
        spec.setdefault(key, value)
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = str(c.get("image") or "")
        tag = image.rpartition("/")[2].partition("@")[0].rpartition(":")[2] if ":" in image.rpartition("/")[2] else ""
        latest = "@" not in image and tag in ("", "latest")
        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
        c.setdefault("resources", {})
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")


def _same_content(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """True when a write would store exactly what is stored (resourceVersion aside)."""
    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "resourceVersion"}
        return {**obj, "metadata": meta}
    return strip(old) == strip(new)
