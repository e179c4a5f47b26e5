"""Field ownership for server-side apply, after structured-merge-diff (SMD).

Every write records which manager owns which fields of the object:

- An *update* (create, PUT, merge/JSON/strategic patch) by manager U takes every field it
  added or changed: U's set grows by them and every other manager loses them (no conflicts).
- An *apply* by manager M owns exactly the fields of its configuration (leaves, list items,
  empty maps). Before that, a field that changes value (or appears) and that another manager
  owns is a conflict: 409 `FieldManagerConflict` naming the field and the manager, unless the
  apply is forced, which takes the field from the other manager.
- What M applied last time but left out now is removed from the object unless someone else
  still owns it (the "prune" half of apply).

Paths are tuples of SMD path elements: ``f:name`` for a field, ``k:{"name":"a"}`` for an item
of a keyed list, ``v:"x"`` for an item of a set; atomic lists are one leaf. Managers are
keyed by (name, operation, subresource), as in `metadata.managedFields`. Not emulated: the
`managedFields` rendering itself and apiVersion conversion of owned sets.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from .errors import ApiError
from .patching import ListRule

FieldPath = tuple[str, ...]
ManagerKey = tuple[str, str, str]  # (manager, "Apply" | "Update", subresource)
_NODE = object()  # the value recorded for a map or list item: its children carry the content
# Identity and server-set metadata: never owned (SMD strips them before tracking).
_IGNORED = {("f:apiVersion",), ("f:kind",), ("f:metadata", "f:name"), ("f:metadata", "f:namespace"),
            ("f:metadata", "f:uid"), ("f:metadata", "f:resourceVersion"), ("f:metadata", "f:generation"),
            ("f:metadata", "f:creationTimestamp"), ("f:metadata", "f:deletionTimestamp"),
            ("f:metadata", "f:deletionGracePeriodSeconds"), ("f:metadata", "f:managedFields"),
            ("f:metadata", "f:selfLink")}


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _walk(obj: Any, rule: ListRule, names: tuple[str, ...], path: FieldPath,
          out: dict[FieldPath, Any], apply_set: bool) -> None:
    """Record each node of `obj` under `path`: leaves with their value, maps and keyed items as
    nodes. `apply_set` records what an apply config owns (SMD's ToFieldSet) instead: leaves,
    keyed items and empty maps, not the maps that only contain them."""
    if isinstance(obj, dict):
        if not obj and apply_set:
            out[path] = {}
        for key, value in obj.items():
            child = (*path, f"f:{key}")
            if child in _IGNORED:
                continue
            if not apply_set or not isinstance(value, dict):
                out[child] = _NODE if isinstance(value, dict) else _leaf(value, rule, (*names, key))
            if isinstance(value, (dict, list)):
                _walk(value, rule, (*names, key), child, out, apply_set)
        return
    if not isinstance(obj, list):
        return
    strategy, keys = rule(names)
    if strategy == "atomic" or (strategy == "map" and not keys):
        return  # the list itself is the leaf, recorded by the caller
    if apply_set:
        out.pop(path, None)  # an apply owns the items of a merged list, not the list
    for item in obj:
        if strategy == "set":
            out[(*path, f"v:{_dump(item)}")] = item
        elif isinstance(item, dict):
            element = (*path, "k:" + _dump({k: item.get(k) for k in keys if k in item}))
            out[element] = _NODE
            _walk(item, rule, names, element, out, apply_set)


def _leaf(value: Any, rule: ListRule, names: tuple[str, ...]) -> Any:
    if isinstance(value, list):
        strategy, keys = rule(names)
        if strategy == "atomic" or (strategy == "map" and not keys):
            return _dump(value)
        return _NODE
    return value


def nodes(obj: dict[str, Any], rule: ListRule) -> dict[FieldPath, Any]:
    out: dict[FieldPath, Any] = {}
    _walk(obj, rule, (), (), out, apply_set=False)
    return out


def config_set(config: dict[str, Any], rule: ListRule) -> set[FieldPath]:
    out: dict[FieldPath, Any] = {}
    _walk(config, rule, (), (), out, apply_set=True)
    return set(out) - {()}


def changed(old: dict[str, Any], new: dict[str, Any], rule: ListRule) -> tuple[set[FieldPath], set[FieldPath]]:
    """(added or modified, removed) paths between two versions of an object."""
    before, after = nodes(old, rule), nodes(new, rule)
    touched = {p for p, v in after.items() if p not in before or (v is not _NODE and before[p] != v)
               or (v is _NODE) != (before[p] is _NODE)}
    return touched, set(before) - set(after)


def scoped(paths: set[FieldPath], sub: str, has_status: bool) -> set[FieldPath]:
    """The fields a write may own: /status owns only status; the main resource of a kind with
    a status subresource never owns status (SMD's reset fields)."""
    if sub == "status":
        return {p for p in paths if p[:1] == ("f:status",)}
    if has_status:
        return {p for p in paths if p[:1] != ("f:status",)}
    return paths


class Owners:
    """The managers of one object and the fields each owns."""

    def __init__(self) -> None:
        self.sets: dict[ManagerKey, set[FieldPath]] = {}

    def copy(self) -> Owners:
        other = Owners()
        other.sets = {k: set(v) for k, v in self.sets.items()}
        return other

    def update(self, key: ManagerKey, touched: set[FieldPath], removed: set[FieldPath]) -> None:
        for other in self.sets:
            if other != key:
                self.sets[other] -= touched | removed
        self.sets[key] = (self.sets.get(key, set()) | touched) - removed
        self._drop_empty()

    def conflicts(self, key: ManagerKey, touched: set[FieldPath]) -> dict[ManagerKey, set[FieldPath]]:
        found = {}
        for other, owned in self.sets.items():
            if other != key and owned & touched:
                found[other] = owned & touched
        return found

    def apply(self, key: ManagerKey, owned: set[FieldPath], touched: set[FieldPath], removed: set[FieldPath],
              force: bool, api_version: str) -> None:
        """Record an apply; raises the 409 for conflicts unless `force`."""
        found = self.conflicts(key, touched)
        if found and not force:
            raise conflict_error(found, api_version)
        for other, paths in found.items():
            self.sets[other] -= paths
        for other in self.sets:
            if other != key:
                self.sets[other] -= removed
        self.sets[key] = set(owned)
        self._drop_empty()

    def others(self, key: ManagerKey) -> set[FieldPath]:
        return set().union(*(v for k, v in self.sets.items() if k != key))

    def to_prune(self, key: ManagerKey, owned: set[FieldPath]) -> set[FieldPath]:
        """What `key` applied before, applies no more, and nobody else owns (nor anything
        inside it); the key fields of a kept list item stay with the item."""
        keep = owned | self.others(key)
        prefixes = {p[:i] for p in keep for i in range(1, len(p) + 1)}
        return {p for p in self.sets.get(key, set()) - keep if p not in prefixes and not _item_key(p, prefixes)}

    def _drop_empty(self) -> None:
        self.sets = {k: v for k, v in self.sets.items() if v}


def _item_key(path: FieldPath, kept: set[FieldPath]) -> bool:
    """Is `path` a key field of a keyed list item that stays?"""
    if len(path) < 2 or not path[-2].startswith("k:") or path[:-1] not in kept:
        return False
    return path[-1][2:] in json.loads(path[-2][2:])


def prune(merged: dict[str, Any], drop: set[FieldPath]) -> dict[str, Any]:
    """`merged` without the fields at `drop` (the applier's former fields nobody owns now)."""
    out = copy.deepcopy(merged)
    for path in sorted(drop, key=len):  # a dropped item or map takes what it holds with it
        if not any(path[:i] in drop for i in range(1, len(path))):
            _remove(out, path)
    return out


def _remove(obj: Any, path: FieldPath) -> None:
    """Remove the node at `path`, then each map or list it leaves empty (SMD's remove walker
    keeps no empty container)."""
    chain = [obj]
    for element in path[:-1]:
        chain.append(_child(chain[-1], element))
        if chain[-1] is None:
            return
    for depth in range(len(path) - 1, -1, -1):
        parent, last = chain[depth], path[depth]
        if isinstance(parent, dict) and last.startswith("f:"):
            parent.pop(last[2:], None)
        elif isinstance(parent, list):
            item = _child(parent, last)
            if item is not None:
                parent.remove(item)
        if depth == 0 or parent:
            return


def _child(cur: Any, element: str) -> Any:
    if isinstance(cur, dict) and element.startswith("f:"):
        return cur.get(element[2:])
    if isinstance(cur, list) and element.startswith("k:"):
        want = json.loads(element[2:])
        return next((i for i in cur if isinstance(i, dict) and all(i.get(k) == v for k, v in want.items())), None)
    if isinstance(cur, list) and element.startswith("v:"):
        want = json.loads(element[2:])
        return next((i for i in cur if i == want), None)
    return None


def render(path: FieldPath) -> str:
    """A path as the real server prints it in conflicts: .data.k, .spec.ports[name="http"]."""
    out = ""
    for element in path:
        kind, text = element[:2], element[2:]
        if kind == "f:":
            out += f".{text}"
        elif kind == "k:":
            out += "[" + ",".join(f"{k}={_dump(v)}" for k, v in json.loads(text).items()) + "]"
        else:
            out += f"[={text}]"
    return out


def conflict_error(found: dict[ManagerKey, set[FieldPath]], api_version: str) -> ApiError:
    """409 worded like SMD's Conflicts error, one cause per field."""
    def who(key: ManagerKey) -> str:
        return f'"{key[0]}"' if key[1] == "Apply" else f'"{key[0]}" using {api_version}'

    pairs = sorted((who(k), render(p)) for k, paths in found.items() for p in paths)
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {w}", "field": p} for w, p in pairs]
    if len(pairs) == 1:
        text = f"conflict with {pairs[0][0]}: {pairs[0][1]}"
    else:
        lines = []
        for w in sorted({w for w, _ in pairs}):
            lines.append(f"conflicts with {w}:")
            lines += [f"- {p}" for x, p in pairs if x == w]
        text = "\n".join(lines)
    n = len(pairs)
    return ApiError(409, f"Apply failed with {n} conflict{'s' if n != 1 else ''}: {text}",
                    reason="Conflict", details={"causes": causes})
