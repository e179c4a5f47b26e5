"""The four PATCH flavours kube-apiserver accepts, as pure functions on plain dicts.

- JSON merge patch (RFC 7386): maps merge recursively, `null` deletes, lists are replaced.
- JSON patch (RFC 6902): a list of operations on JSON pointers; a failed `test` is an error
  that the server answers 422.
- Strategic merge patch: a merge patch where some lists are merged instead of replaced,
  matched by a merge key (containers by `name`, conditions by `type`, ...), with the
  `$patch`, `$deleteFromPrimitiveList/` and `$setElementOrder/` directives that kubectl
  sends. Real servers learn the keys from Go struct tags; the emulator uses a table of the
  fields Kopf, kubectl and this project touch (`builtin_list_rule`).
- Server-side apply: the applied configuration is merged into the live object with the same
  list rules (`apply_merge`); which manager owns what, conflicts and the pruning of what a
  manager stopped applying live in fieldmanager.

For custom resources the list rules come from the CRD schema (`x-kubernetes-list-type`
and `x-kubernetes-list-map-keys`), lists being atomic unless declared otherwise, as on a
real server.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .errors import ApiError

Path = tuple[str, ...]
# (strategy, keys): ("map", ("name",)), ("set", ()), or ("atomic", ()).
ListRule = Callable[[Path], tuple[str, tuple[str, ...]]]

_BY_NAME = {"containers", "initContainers", "ephemeralContainers", "env", "volumes",
            "imagePullSecrets", "resourceClaims", "hostAliases"}


def builtin_list_rule(path: Path) -> tuple[str, tuple[str, ...]]:
    """Patch strategies of the built-in fields the emulator's clients touch."""
    field = path[-1] if path else ""
    if field in _BY_NAME:
        return ("map", ("name",) if field != "hostAliases" else ("ip",))
    if field == "conditions":
        return ("map", ("type",))
    if field == "volumeMounts":
        return ("map", ("mountPath",))
    if field == "ports":
        return ("map", ("containerPort",) if "containers" in path or "initContainers" in path
                else ("port",))
    if field == "ownerReferences":
        return ("map", ("uid",))
    if field == "finalizers":
        return ("set", ())
    return ("atomic", ())


def schema_list_rule(schema: dict[str, Any] | None) -> ListRule:
    """List rules of a custom resource, read from its openAPIV3Schema."""

    def rule(path: Path) -> tuple[str, tuple[str, ...]]:
        if path and path[0] == "metadata":
            return builtin_list_rule(path)
        node = schema or {}
        for part in path:
            if node.get("type") == "array":
                node = node.get("items") or {}
            node = (node.get("properties") or {}).get(part) or node.get("additionalProperties") or {}
            if not isinstance(node, dict):
                return ("atomic", ())
        kind = node.get("x-kubernetes-list-type", "atomic")
        if kind == "map":
            return ("map", tuple(node.get("x-kubernetes-list-map-keys") or ()))
        return (kind, ())

    return rule


# -- JSON merge patch ---------------------------------------------------------------------------

def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# -- JSON patch ---------------------------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], op: str, path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise ApiError(422, f"{op} operation does not apply: doc is missing path: {path}")
    return cur


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise ApiError(400, "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, path = op.get("op"), op.get("path", "")
        parts = _pointer(path)
        if kind == "test":
            if _walk(doc, parts, kind, path) != op.get("value"):
                raise ApiError(422, f"testing value {path} failed: test failed")
            continue
        if kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, src, kind, op.get("from", "")))
            if kind == "move":
                doc = _remove(doc, src, op.get("from", ""))
            doc = _add(doc, parts, value, path)
        elif kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        elif kind == "remove":
            doc = _remove(doc, parts, path)
        elif kind == "replace":
            # as kube-apiserver's json-patch: replacing a missing key of an existing map adds it
            parent = _walk(doc, parts[:-1], kind, path) if parts else None
            if not (isinstance(parent, dict) and parts[-1] not in parent):
                doc = _remove(doc, parts, path)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")), path)
        else:
            raise ApiError(422, f"Unexpected kind: {kind}")
    return doc


def _add(doc: Any, parts: list[str], value: Any, path: str) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], "add", path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= index <= len(parent):
            raise ApiError(422, f"add operation does not apply: index out of range: {path}")
        parent.insert(index, value)
    else:
        raise ApiError(422, f"add operation does not apply: doc is missing path: {path}")
    return doc


def _remove(doc: Any, parts: list[str], path: str) -> Any:
    parent = _walk(doc, parts[:-1], "remove", path)
    last = parts[-1] if parts else ""
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        del parent[int(last)]
    else:
        raise ApiError(422, f"remove operation does not apply: doc is missing path: {path}")
    return doc


# -- strategic merge patch ----------------------------------------------------------------------

def _strip(value: Any) -> Any:
    """A patch value with its directives removed (what gets stored when nothing merges)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value if not (isinstance(v, dict) and v.get("$patch") == "delete")]
    return value


def _key_of(item: Any, keys: tuple[str, ...]) -> tuple[Any, ...] | None:
    if not isinstance(item, dict) or not keys:
        return None
    return tuple(item.get(k) for k in keys)


def strategic_merge(target: Any, patch: Any, rule: ListRule, path: Path = ()) -> Any:
    if not isinstance(patch, dict):
        return _strip(patch)
    if patch.get("$patch") == "replace":
        return _strip(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [x for x in result.get(field) or [] if x not in value]
            continue
        if key.startswith("$"):
            continue  # $setElementOrder/ is read with its list below; $retainKeys is not modelled
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            order = patch.get(f"$setElementOrder/{key}")
            result[key] = _smp_list(result.get(key), value, rule, (*path, key), order)
        else:
            result[key] = strategic_merge(result.get(key), value, rule, (*path, key))
    for key, order in patch.items():  # an order alone (kubectl sends one for unchanged lists)
        field = key.partition("/")[2]
        if key.startswith("$setElementOrder/") and field not in patch and isinstance(result.get(field), list):
            result[field] = _smp_list(result[field], [], rule, (*path, field), order)
    return result


def _smp_list(old: Any, new: list[Any], rule: ListRule, path: Path, order: list[Any] | None) -> list[Any]:
    """A merged list in apimachinery's order (strategicpatch `normalizeElementOrder`).

    The items the patch names come in the patch's order (or `$setElementOrder`'s); items only
    on the server keep their server order and are interleaved back: each goes right before
    the first patch item that the server held after it. A patch item new to the server
    therefore comes first: patching env [E2] onto [E1] gives [E2, E1].
    """
    strategy, keys = rule(path)
    if not isinstance(old, list) or strategy == "atomic" or (strategy == "map" and not keys) or any(
            isinstance(i, dict) and i.get("$patch") == "replace" for i in new):
        return _merge_list(old, new, rule, path, strategic_merge)
    if strategy == "set":
        merged = _uniqify(list(old) + _strip(new))
        ident: Callable[[Any], Any] = lambda v: v  # noqa: E731
    else:
        merged = _merge_list(old, new, rule, path, strategic_merge)
        ident = lambda v: _key_of(v, keys)  # noqa: E731
    named = [ident(i) for i in (order if order is not None else new)]
    from_patch = sorted((i for i in merged if ident(i) in named), key=lambda i: named.index(ident(i)))
    server = [ident(i) for i in old]
    server_only = sorted((i for i in merged if ident(i) not in named),
                         key=lambda i: server.index(ident(i)) if ident(i) in server else len(server))
    out: list[Any] = []
    while from_patch or server_only:
        if not server_only or (from_patch and not (
                ident(server_only[0]) in server and ident(from_patch[0]) in server
                and server.index(ident(server_only[0])) < server.index(ident(from_patch[0])))):
            out.append(from_patch.pop(0))
        else:
            out.append(server_only.pop(0))
    return out


def _uniqify(items: list[Any]) -> list[Any]:
    """Go's `uniqifyScalars`: a duplicate is overwritten by the last item (order not kept)."""
    s = list(items)
    i = 0
    while i < len(s) - 1:
        j = i + 1
        while j < len(s):
            if s[i] == s[j]:
                s[j] = s[-1]
                s.pop()
                continue
            j += 1
        i += 1
    return s


def _merge_list(old: Any, new: list[Any], rule: ListRule, path: Path,
                merge: Callable[..., Any]) -> list[Any]:
    strategy, keys = rule(path)
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in new):
        return _strip([i for i in new if not (isinstance(i, dict) and "$patch" in i)])
    if not isinstance(old, list) or strategy == "atomic" or (strategy == "map" and not keys):
        return _strip(new)
    if strategy == "set":
        return list(old) + [v for v in _strip(new) if v not in old]
    result = copy.deepcopy(old)
    for item in new:
        key = _key_of(item, keys)
        index = next((i for i, o in enumerate(result) if _key_of(o, keys) == key), None)
        if isinstance(item, dict) and item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_strip(item))
        else:
            result[index] = merge(result[index], item, rule, path)
    return result


# -- server-side apply: the merge half (ownership, conflicts and pruning: fieldmanager) ---------

def apply_merge(live: Any, applied: Any, rule: ListRule, path: Path = ()) -> Any:
    if not isinstance(applied, dict):
        return copy.deepcopy(applied)
    result = copy.deepcopy(live) if isinstance(live, dict) else {}
    for key, value in applied.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _apply_list(result.get(key), value, rule, (*path, key))
        else:
            result[key] = apply_merge(result.get(key), value, rule, (*path, key))
    return result


def _apply_list(live: Any, applied: list[Any], rule: ListRule, path: Path) -> list[Any]:
    """Merge a keyed list or set in structured-merge-diff's order (its `visitListItems`).

    Walk both lists: an item the two share is emitted when the applied list reaches it, in the
    applied order; an item only live stays where it is relative to its neighbours; an item only
    applied comes at its applied position. So re-applying [http, grpc] over [grpc, http] gives
    [http, grpc].
    """
    strategy, keys = rule(path)
    if not isinstance(live, list) or strategy == "atomic" or (strategy == "map" and not keys):
        return _merge_list(live, applied, rule, path, apply_merge)

    def ident(item: Any) -> str:
        return repr(_key_of(item, keys) if strategy == "map" else item)

    lhs, rhs = list(live), _strip(applied)
    lk, rk = [ident(i) for i in lhs], [ident(i) for i in rhs]
    rset = set(rk)
    shared = [k for k in rk if k in set(lk)]
    next_shared = shared.pop(0) if shared else None
    merged: set[str] = set()
    out: list[Any] = []
    li = ri = 0
    while li < len(lhs) or ri < len(rhs):
        if li < len(lhs) and ri < len(rhs):
            if lk[li] == rk[ri]:
                merged.add(lk[li])
                out.append(apply_merge(lhs[li], rhs[ri], rule, path) if strategy == "map" else rhs[ri])
                li, ri = li + 1, ri + 1
                next_shared = shared.pop(0) if shared else None
                continue
            if lk[li] in rset and next_shared is not None and next_shared != lk[li]:
                li += 1  # shared, but its turn comes with the applied order
                continue
        if li < len(lhs) and (lk[li] not in rset or lk[li] in merged):
            if lk[li] not in rset:
                out.append(lhs[li])
            li += 1
            continue
        if ri < len(rhs):
            pe = rk[ri]
            merged.add(pe)
            match = lhs[lk.index(pe)] if pe in lk else None
            out.append(apply_merge(match, rhs[ri], rule, path) if strategy == "map" and match is not None else rhs[ri])
            ri += 1
            if next_shared == pe:
                next_shared = shared.pop(0) if shared else None
    return out
