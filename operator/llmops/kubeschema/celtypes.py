"""CEL type checking of CRD validation rules, as kube-apiserver does it when a CRD is written.

The API server compiles every ``x-kubernetes-validations`` rule against CEL types derived
from the OpenAPI schema (k8s.io/apiserver/pkg/cel/common ``SchemaDeclType``) and refuses the
CRD when a rule does not type-check: a comprehension over an object, ``int + string``, an
undefined field, a rule that is not ``bool``. celpy only parses and evaluates, so this module
adds the checker over celpy's parse tree:

- :func:`decl_type` maps a schema node to a :class:`CelType` the way Kubernetes does
  (properties -> object type, additionalProperties -> map(string, T), items -> list(T),
  int-or-string -> dyn, date-time/duration strings -> timestamp/duration, a node without a
  type -> no type at all, so it is not a field);
- :func:`check` type-checks one expression with ``self``/``oldSelf`` bound and returns its
  type or raises :class:`CelCheckError`.

Known operators, macros and functions follow cel-go's standard overloads plus the
Kubernetes libraries. What this checker does not know (an unknown function or method) has
the type :data:`UNKNOWN`, which behaves like ``dyn`` but is also accepted where a rule must
be ``bool``: the emulator must never refuse a rule the real server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy.celparser import Token, Tree  # the node types of celpy's parse tree (lark)

Schema = dict[str, Any]


@dataclass(frozen=True)
class CelType:
    """A CEL type. ``params``: list element / map key+value; objects compare by ``name``."""

    kind: str
    params: tuple[CelType, ...] = ()
    name: str = ""
    fields: Mapping[str, CelType] = field(default_factory=dict, compare=False, hash=False)

    def __str__(self) -> str:
        if self.kind == "list":
            return f"list({self.params[0]})"
        if self.kind == "map":
            return f"map({self.params[0]}, {self.params[1]})"
        if self.kind in ("object", "opaque", "var"):
            return self.name
        return "!error!" if self.kind == "error" else self.kind


def _prim(kind: str) -> CelType:
    return CelType(kind)


INT, UINT, DOUBLE, STRING, BOOL, BYTES = (_prim(k) for k in ("int", "uint", "double", "string", "bool", "bytes"))
NULL, TIMESTAMP, DURATION, TYPE, DYN = (_prim(k) for k in ("null", "timestamp", "duration", "type", "dyn"))
#: The type of an expression that already failed: fits anywhere, so one mistake is reported once.
ERROR = _prim("error")
#: What this checker cannot type (an unknown function): dyn, and never a reason to refuse.
UNKNOWN = _prim("unknown")
A, B = CelType("var", name="A"), CelType("var", name="B")


def list_of(t: CelType) -> CelType:
    return CelType("list", (t,))


def map_of(k: CelType, v: CelType) -> CelType:
    return CelType("map", (k, v))


def opaque(name: str) -> CelType:
    return CelType("opaque", name=name)


def object_of(name: str, fields: Mapping[str, CelType]) -> CelType:
    return CelType("object", name=name, fields=dict(fields))


@dataclass(frozen=True)
class Problem:
    """One compile-time error at a 1-based line and column."""

    message: str
    line: int = 1
    column: int = 1

    def render(self, expr: str) -> str:
        lines = expr.splitlines() or [""]
        src = lines[min(self.line, len(lines)) - 1]
        return f"ERROR: <input>:{self.line}:{self.column}: {self.message}\n | {src}\n | {'.' * (self.column - 1)}^"


class CelCheckError(Exception):
    """The errors of one expression, worded and ordered like cel-go's (``ERROR: <input>:L:C: ...``)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__(self.problems[0].message)

    def render(self, expr: str) -> str:
        return "\n".join(p.render(expr) for p in self.problems)


# --- schema -> type ------------------------------------------------------------------------------

# CEL keywords a property name may collide with; Kubernetes escapes them as __name__.
_RESERVED = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function", "if",
                       "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"})
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}
_ESCAPE_RX = re.compile(r"(__|[-./]|[^a-zA-Z0-9\-./_])")


def escape(name: str) -> str | None:
    """A property name as CEL sees it (apiserver/pkg/cel.Escape), or None when inexpressible."""
    if not name or name[0].isdigit():
        return None
    if name in _RESERVED:
        return f"__{name}__"
    bad = False

    def sub(m: re.Match[str]) -> str:
        nonlocal bad
        if m.group(0) in _ESCAPES:
            return _ESCAPES[m.group(0)]
        bad = True
        return ""

    out = _ESCAPE_RX.sub(sub, name)
    return None if bad else out


_OBJECT_META = {"type": "object", "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}}


def _with_type_and_object_meta(schema: Schema) -> Schema:
    """The root of a resource (and an embedded resource) always exposes these to rules."""
    props = dict(schema.get("properties") or {})
    props.update(apiVersion={"type": "string"}, kind={"type": "string"}, metadata=_OBJECT_META)
    return {**schema, "properties": props}


_STRING_FORMATS = {"byte": BYTES, "duration": DURATION, "date": TIMESTAMP, "date-time": TIMESTAMP}
_SCALARS = {"boolean": BOOL, "number": DOUBLE, "integer": INT}


def decl_type(schema: Schema, name: str = "selfType", resource_root: bool = False) -> CelType | None:
    """The CEL type of values of ``schema``; None where Kubernetes derives none (no type)."""
    if schema.get("x-kubernetes-int-or-string"):
        return DYN
    if resource_root or schema.get("x-kubernetes-embedded-resource"):
        schema = _with_type_and_object_meta(schema)
    t = schema.get("type")
    if t == "array":
        items = schema.get("items")
        elem = decl_type(items, f"{name}.@idx") if isinstance(items, dict) else None
        return None if elem is None else list_of(elem)
    if t == "object":
        addl = schema.get("additionalProperties")
        if isinstance(addl, dict):
            value = decl_type(addl, f"{name}.@elem")
            return None if value is None else map_of(STRING, value)
        fields = {}
        for prop, sub in (schema.get("properties") or {}).items():
            ft = decl_type(sub, f"{name}.{prop}") if isinstance(sub, dict) else None
            cel_name = escape(prop)
            if ft is not None and cel_name is not None:
                fields[cel_name] = ft
        return object_of(name, fields)
    if t == "string":
        return _STRING_FORMATS.get(schema.get("format", ""), STRING)
    return _SCALARS.get(t or "")


# --- type relations ------------------------------------------------------------------------------

_LOOSE = ("dyn", "unknown", "error")
_NULLABLE = ("object", "opaque", "timestamp", "duration", "null")


def join(a: CelType, b: CelType) -> CelType | None:
    """The common type of two values that must agree (``==``, list literals, ``?:``), or None."""
    if a.kind in _LOOSE:
        return a
    if b.kind in _LOOSE:
        return b
    if a.kind == "null" and b.kind in _NULLABLE:
        return b
    if b.kind == "null" and a.kind in _NULLABLE:
        return a
    if a.kind != b.kind or a.name != b.name:
        return None
    params = [join(x, y) for x, y in zip(a.params, b.params, strict=True)]
    if any(p is None for p in params):
        return None
    return CelType(a.kind, tuple(p for p in params if p is not None), a.name, a.fields)


def _bind(param: CelType, arg: CelType, env: dict[str, CelType]) -> bool:
    if param.kind == "var":
        bound = env.get(param.name)
        joined = arg if bound is None else join(bound, arg)
        if joined is None:
            return False
        env[param.name] = joined
        return True
    if arg.kind in _LOOSE or param.kind == "dyn":
        return True
    if arg.kind == "null":
        return param.kind in _NULLABLE
    if param.kind != arg.kind or param.name != arg.name:
        return False
    return all(_bind(p, a, env) for p, a in zip(param.params, arg.params, strict=True))


def _subst(t: CelType, env: dict[str, CelType]) -> CelType:
    if t.kind == "var":
        return env.get(t.name, DYN)
    if t.params:
        return CelType(t.kind, tuple(_subst(p, env) for p in t.params), t.name, t.fields)
    return t


Overload = tuple[tuple[CelType, ...], CelType]


def resolve(overloads: list[Overload], args: list[CelType]) -> CelType | None:
    """The result type of the overloads matching ``args``; dyn when several disagree."""
    results = []
    for params, result in overloads:
        env: dict[str, CelType] = {}
        if len(params) == len(args) and all(_bind(p, a, env) for p, a in zip(params, args, strict=True)):
            results.append(_subst(result, env))
    if not results:
        return None
    if any(a.kind == "error" for a in args):
        return ERROR
    if all(r == results[0] for r in results):
        return results[0]
    return UNKNOWN if any(a.kind == "unknown" for a in args) else DYN


# --- overload tables (cel-go's standard library + the Kubernetes libraries) ----------------------

_NUM = (INT, UINT, DOUBLE)
_ORDERED = (INT, UINT, DOUBLE, STRING, BYTES, BOOL, TIMESTAMP, DURATION)


def _same(types: tuple[CelType, ...], result: CelType | None = None) -> list[Overload]:
    return [((t, t), result or t) for t in types]


_CROSS_NUMERIC = [((x, y), BOOL) for x in _NUM for y in _NUM if x != y]
OPERATORS: dict[str, list[Overload]] = {
    "_+_": [
        *_same((INT, UINT, DOUBLE, STRING, BYTES)),
        ((list_of(A), list_of(A)), list_of(A)),
        ((TIMESTAMP, DURATION), TIMESTAMP),
        ((DURATION, TIMESTAMP), TIMESTAMP),
        ((DURATION, DURATION), DURATION),
    ],
    "_-_": [*_same(_NUM), ((TIMESTAMP, TIMESTAMP), DURATION), ((TIMESTAMP, DURATION), TIMESTAMP), ((DURATION, DURATION), DURATION)],
    "_*_": _same(_NUM),
    "_/_": _same(_NUM),
    "_%_": _same((INT, UINT)),
    **{op: _same(_ORDERED, BOOL) + _CROSS_NUMERIC for op in ("_<_", "_<=_", "_>_", "_>=_")},
    "_==_": [((A, A), BOOL)],
    "_!=_": [((A, A), BOOL)],
    "@in": [((A, list_of(A)), BOOL), ((A, map_of(A, B)), BOOL)],
    "_[_]": [((list_of(A), INT), A), ((map_of(A, B), A), B)],
    "!_": [((BOOL,), BOOL)],
    "-_": [((INT,), INT), ((DOUBLE,), DOUBLE)],
}

QUANTITY, URL, IP, CIDR = opaque("kubernetes.Quantity"), opaque("kubernetes.URL"), opaque("net.IP"), opaque("net.CIDR")

#: Global functions; a name not listed here is typed UNKNOWN.
FUNCTIONS: dict[str, list[Overload]] = {
    "size": [((STRING,), INT), ((BYTES,), INT), ((list_of(A),), INT), ((map_of(A, B),), INT)],
    "int": [((t,), INT) for t in (INT, UINT, DOUBLE, STRING, TIMESTAMP, DURATION)],
    "uint": [((t,), UINT) for t in (INT, UINT, DOUBLE, STRING)],
    "double": [((t,), DOUBLE) for t in (INT, UINT, DOUBLE, STRING)],
    "string": [((t,), STRING) for t in (INT, UINT, DOUBLE, STRING, BOOL, BYTES, TIMESTAMP, DURATION)],
    "bool": [((BOOL,), BOOL), ((STRING,), BOOL)],
    "bytes": [((BYTES,), BYTES), ((STRING,), BYTES)],
    "timestamp": [((STRING,), TIMESTAMP), ((INT,), TIMESTAMP), ((TIMESTAMP,), TIMESTAMP)],
    "duration": [((STRING,), DURATION), ((DURATION,), DURATION)],
    "matches": [((STRING, STRING), BOOL)],
    "dyn": [((A,), DYN)],
    "type": [((A,), TYPE)],
    "quantity": [((STRING,), QUANTITY)],
    "url": [((STRING,), URL)],
    "ip": [((STRING,), IP)],
    "cidr": [((STRING,), CIDR)],
    **{f"is{n}": [((STRING,), BOOL)] for n in ("Quantity", "URL", "IP", "CIDR", "Semver")},
}

_TIME_PARTS = ("getFullYear", "getMonth", "getDate", "getDayOfMonth", "getDayOfWeek", "getDayOfYear")
_CLOCK_PARTS = ("getHours", "getMinutes", "getSeconds", "getMilliseconds")
_COMPARABLE_LISTS = [list_of(t) for t in _ORDERED]

#: Methods as (receiver, *args) overloads. For a listed name, a receiver of a known type
#: with no matching overload is an error (as on the real server); unlisted names are UNKNOWN.
METHODS: dict[str, list[Overload]] = {
    "size": [((STRING,), INT), ((BYTES,), INT), ((list_of(A),), INT), ((map_of(A, B),), INT)],
    **{m: [((STRING, STRING), BOOL)] for m in ("contains", "startsWith", "endsWith", "matches")},
    **{m: [((TIMESTAMP,), INT), ((TIMESTAMP, STRING), INT)] for m in _TIME_PARTS},
    **{m: [((TIMESTAMP,), INT), ((TIMESTAMP, STRING), INT), ((DURATION,), INT)] for m in _CLOCK_PARTS},
    "charAt": [((STRING, INT), STRING)],
    **{m: [((STRING, STRING), INT), ((STRING, STRING, INT), INT), ((list_of(A), A), INT)] for m in ("indexOf", "lastIndexOf")},
    **{m: [((STRING,), STRING)] for m in ("lowerAscii", "upperAscii", "trim")},
    "replace": [((STRING, STRING, STRING), STRING), ((STRING, STRING, STRING, INT), STRING)],
    "split": [((STRING, STRING), list_of(STRING)), ((STRING, STRING, INT), list_of(STRING))],
    "substring": [((STRING, INT), STRING), ((STRING, INT, INT), STRING)],
    "join": [((list_of(STRING),), STRING), ((list_of(STRING), STRING), STRING)],
    "isSorted": [((lt,), BOOL) for lt in _COMPARABLE_LISTS],
    "sum": [((list_of(t),), t) for t in (INT, UINT, DOUBLE, DURATION)],
    **{m: [((lt,), lt.params[0]) for lt in _COMPARABLE_LISTS] for m in ("min", "max")},
    "isInteger": [((QUANTITY,), BOOL)],
    "asInteger": [((QUANTITY,), INT)],
    "asApproximateFloat": [((QUANTITY,), DOUBLE)],
    **{m: [((QUANTITY, QUANTITY), BOOL)] for m in ("isGreaterThan", "isLessThan")},
    "compareTo": [((QUANTITY, QUANTITY), INT)],
    **{m: [((QUANTITY, QUANTITY), QUANTITY), ((QUANTITY, INT), QUANTITY)] for m in ("add", "sub")},
    **{m: [((URL,), STRING)] for m in ("getScheme", "getHost", "getHostname", "getPort", "getEscapedPath")},
    "getQuery": [((URL,), map_of(STRING, list_of(STRING)))],
}

#: Namespaces of Kubernetes/extension functions (``format.dns1123Label()``, ``strings.quote()``).
NAMESPACES = frozenset({"format", "strings", "sets", "base64", "optional", "lists", "regex", "cel"})
#: Type names usable as values (``type(x) == int``).
TYPE_NAMES = frozenset({"int", "uint", "double", "string", "bool", "bytes", "list", "map", "null_type", "type", "dyn"})
#: Macros on a range, by the argument counts that make them macros.
_COMPREHENSIONS = {"all": (2,), "exists": (2,), "exists_one": (2,), "filter": (2,), "map": (2, 3)}


# --- the checker ---------------------------------------------------------------------------------

_BINARY_RULES = {
    "relation_lt": "_<_", "relation_le": "_<=_", "relation_gt": "_>_", "relation_ge": "_>=_",
    "relation_eq": "_==_", "relation_ne": "_!=_", "relation_in": "@in",
    "addition_add": "_+_", "addition_sub": "_-_",
    "multiplication_mul": "_*_", "multiplication_div": "_/_", "multiplication_mod": "_%_",
}
_LITERALS = {"INT_LIT": INT, "UINT_LIT": UINT, "FLOAT_LIT": DOUBLE, "STRING_LIT": STRING, "MLSTRING_LIT": STRING,
             "BYTES_LIT": BYTES, "BOOL_LIT": BOOL, "NULL_LIT": NULL}
_ENV = celpy.Environment()


_OPERATOR_RULES = ("conditionalor", "conditionaland", "relation", "addition", "multiplication")


def _args(node: Tree | None) -> list[Tree]:
    return [] if node is None else [c for c in node.children if isinstance(c, Tree)]


_WRAPPERS = ("expr", "conditionalor", "conditionaland", "relation", "addition", "multiplication", "unary", "member", "primary",
             "paren_expr")


def _single(node: Tree) -> Tree | Token:
    """Descend through single-child wrapper rules (expr -> ... -> member -> primary)."""
    while isinstance(node, Tree) and len(node.children) == 1 and node.data in _WRAPPERS:
        node = node.children[0]
    return node


class Checker:
    """Types one parsed expression under variable bindings (``self``, ``oldSelf``)."""

    def __init__(self, variables: Mapping[str, CelType], source: str = "") -> None:
        self.scopes: list[dict[str, CelType]] = [dict(variables)]
        self.source = source
        self.problems: list[Problem] = []

    def problem(self, node: Tree | Token, message: str) -> Problem:
        offset = self.offset(node)
        line = self.source.count("\n", 0, offset) + 1
        return Problem(message, line, offset - (self.source.rfind("\n", 0, offset) + 1) + 1)

    def error(self, node: Tree | Token, message: str) -> CelType:
        """Record a type error and go on, as cel-go does, with the expression typed ERROR."""
        self.problems.append(self.problem(node, message))
        return ERROR

    def fail(self, node: Tree | Token, message: str) -> CelCheckError:
        """A macro that cannot be expanded: a parse error, which stops everything."""
        return CelCheckError([self.problem(node, message)])

    def offset(self, node: Tree | Token) -> int:
        """Where cel-go places an expression: a select at its dot, a call at its parenthesis,
        an operator at its symbol, anything else at its start."""
        node = _single(node)
        if isinstance(node, Token):
            return node.start_pos or 0
        kids = node.children
        if node.data == "member_dot":
            return self.skip(kids[1].start_pos - 1, -1)  # type: ignore[union-attr]
        if node.data in ("member_dot_arg", "ident_arg", "dot_ident_arg"):
            ident = next(k for k in kids if isinstance(k, Token))
            return self.skip((ident.start_pos or 0) + len(ident), 1)
        if node.data == "member_index" or (node.data in _OPERATOR_RULES and len(kids) == 2):
            left = kids[0].children[0] if node.data in ("relation", "addition", "multiplication") else kids[0]
            return self.skip(left.meta.end_pos, 1)  # type: ignore[union-attr]
        if node.data == "expr" and len(kids) == 3:
            return self.skip(kids[0].meta.end_pos, 1)  # type: ignore[union-attr]
        return 0 if node.meta.empty else node.meta.start_pos

    def skip(self, offset: int, step: int) -> int:
        """The first non-blank character from ``offset`` in direction ``step``."""
        while 0 <= offset < len(self.source) and self.source[offset].isspace():
            offset += step
        return max(0, min(offset, len(self.source)))

    def lookup(self, name: str) -> CelType | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def type_of(self, node: Tree | Token) -> CelType:
        if isinstance(node, Token):
            return self.error(node, f"unexpected token {node!s}")
        kids = node.children
        handler = getattr(self, f"_{node.data}", None)
        if handler is not None:
            return handler(node)
        if len(kids) == 1:  # a wrapper rule (expr, relation, member, primary, ...)
            return self.type_of(kids[0])
        return self.error(node, f"unsupported expression {node.data}")

    # operators

    def _expr(self, node: Tree) -> CelType:
        if len(node.children) == 1:
            return self.type_of(node.children[0])
        cond, yes, no = (self.type_of(c) for c in node.children)
        joined = join(yes, no)
        if (cond.kind not in ("bool", *_LOOSE)) or joined is None:
            return self.error(node, f"found no matching overload for '_?_:_' applied to '({cond}, {yes}, {no})'")
        return joined

    def _logical(self, node: Tree) -> CelType:
        if len(node.children) == 1:
            return self.type_of(node.children[0])
        for child in node.children:
            t = self.type_of(child)
            if t.kind not in ("bool", *_LOOSE):
                self.error(child, f"expected type 'bool' but found '{t}'")
        return BOOL

    _conditionalor = _conditionaland = _logical

    def _binary(self, node: Tree) -> CelType:
        if len(node.children) == 1:
            return self.type_of(node.children[0])
        op_node, right = node.children
        assert isinstance(op_node, Tree)
        left_t, right_t = self.type_of(op_node.children[0]), self.type_of(right)
        return self.call(node, _BINARY_RULES[op_node.data], OPERATORS[_BINARY_RULES[op_node.data]], [left_t, right_t])

    _relation = _addition = _multiplication = _binary

    def _unary(self, node: Tree) -> CelType:
        if len(node.children) == 1:
            return self.type_of(node.children[0])
        op, operand = node.children
        name = "!_" if isinstance(op, Tree) and op.data == "unary_not" else "-_"
        return self.call(node, name, OPERATORS[name], [self.type_of(operand)])

    def call(self, node: Tree, name: str, overloads: list[Overload], args: list[CelType], receiver: bool = False) -> CelType:
        result = resolve(overloads, args)
        if result is None:
            shown = f"{args[0]}.({', '.join(map(str, args[1:]))})" if receiver else f"({', '.join(map(str, args))})"
            return self.error(node, f"found no matching overload for '{name}' applied to '{shown}'")
        return result

    # members

    def _member_dot(self, node: Tree) -> CelType:
        operand, ident = node.children
        return self.select(node, self.type_of(operand), str(ident))

    def select(self, node: Tree, t: CelType, name: str) -> CelType:
        if t.kind in _LOOSE:
            return t
        if t.kind == "object":
            # A reserved word is reachable both escaped and bare (self.namespace, self.__namespace__).
            found = t.fields.get(name) or (t.fields.get(f"__{name}__") if name in _RESERVED else None)
            if found is None:
                return self.error(node, f"undefined field '{name}'")
            return found
        if t.kind == "map":
            return t.params[1]
        return self.error(node, f"type '{t}' does not support field selection")

    def _member_index(self, node: Tree) -> CelType:
        operand, index = node.children
        return self.call(node, "_[_]", OPERATORS["_[_]"], [self.type_of(operand), self.type_of(index)])

    def _member_object(self, node: Tree) -> CelType:
        return UNKNOWN  # message construction: no message types are declared for rules

    def _member_dot_arg(self, node: Tree) -> CelType:
        operand, ident, *rest = node.children
        name, args = str(ident), _args(rest[0] if rest else None)
        if len(args) in _COMPREHENSIONS.get(name, ()):
            return self.comprehension(node, operand, name, args)
        target = _single(operand)
        namespace = str(target.children[0]) if isinstance(target, Tree) and target.data == "ident" else None
        if namespace is not None and namespace in NAMESPACES and self.lookup(namespace) is None:
            for a in args:
                self.type_of(a)
            return UNKNOWN
        recv = self.type_of(operand)
        arg_types = [self.type_of(a) for a in args]
        if name not in METHODS or recv.kind in ("unknown", "opaque", "type"):
            known = resolve(METHODS.get(name, []), [recv, *arg_types]) if recv.kind == "opaque" else None
            return known or UNKNOWN
        return self.call(node, name, METHODS[name], [recv, *arg_types], receiver=True)

    def comprehension(self, node: Tree, operand: Tree, name: str, args: list[Tree]) -> CelType:
        range_t = self.type_of(operand)
        var = _single(args[0])
        if not (isinstance(var, Tree) and var.data == "ident"):
            raise self.fail(args[0], "argument must be a simple name")
        if range_t.kind in ("list", "map"):  # a map ranges over its keys
            elem = range_t.params[0]
        elif range_t.kind in _LOOSE:
            elem = range_t
        else:
            elem = self.error(operand, f"expression of type '{range_t}' cannot be range of a comprehension (must be list, map, or dynamic)")
        self.scopes.append({str(var.children[0]): elem})
        try:
            return self.expansion(node, name, elem, args)
        finally:
            self.scopes.pop()

    def expansion(self, node: Tree, name: str, elem: CelType, args: list[Tree]) -> CelType:
        """Type what the macro expands to: all/exists fold with &&/||; exists_one, filter and
        the three-argument map fold with `pred ? ... : acc`, whose error cel-go reports at the call."""
        if name in ("all", "exists"):
            t = self.type_of(args[1])
            if t.kind not in ("bool", *_LOOSE):
                self.error(args[1], f"expected type 'bool' but found '{t}'")
            return BOOL
        step = {"exists_one": INT, "filter": list_of(elem)}.get(name)
        if step is None:  # map
            step = list_of(self.type_of(args[-1]))
        if name != "map" or len(args) == 3:
            cond = self.type_of(args[1])
            if cond.kind not in ("bool", *_LOOSE):
                self.error(node, f"found no matching overload for '_?_:_' applied to '({cond}, {step}, {step})'")
        return BOOL if name == "exists_one" else step

    # primaries

    def _ident(self, node: Tree) -> CelType:
        name = str(node.children[0])
        found = self.lookup(name)
        if found is not None:
            return found
        if name in TYPE_NAMES:
            return TYPE
        if name in NAMESPACES:
            return UNKNOWN
        return self.error(node, f"undeclared reference to '{name}' (in container '')")

    def _dot_ident(self, node: Tree) -> CelType:
        return self._ident(node)

    def _ident_arg(self, node: Tree) -> CelType:
        ident, *rest = node.children
        name, args = str(ident), _args(rest[0] if rest else None)
        if name == "has":
            return self.has(node, args)
        arg_types = [self.type_of(a) for a in args]
        if name not in FUNCTIONS:
            return UNKNOWN
        return self.call(node, name, FUNCTIONS[name], arg_types)

    _dot_ident_arg = _ident_arg

    def has(self, node: Tree, args: list[Tree]) -> CelType:
        target = _single(args[0]) if len(args) == 1 else None
        if not (isinstance(target, Tree) and target.data == "member_dot"):
            raise self.fail(args[0] if args else node, "invalid argument to has() macro")
        operand, ident = target.children
        self.select(node, self.type_of(operand), str(ident))  # a missing field is reported at has(
        return BOOL

    def _literal(self, node: Tree) -> CelType:
        token = node.children[0]
        assert isinstance(token, Token)
        return _LITERALS[token.type]

    def _list_lit(self, node: Tree) -> CelType:
        return list_of(self.homogeneous(_args(node.children[0] if node.children else None)))

    def _map_lit(self, node: Tree) -> CelType:
        entries = _args(node.children[0] if node.children else None)
        return map_of(self.homogeneous(entries[0::2]), self.homogeneous(entries[1::2]))

    def homogeneous(self, items: list[Tree]) -> CelType:
        """Kubernetes compiles with homogeneous aggregate literals: one element type."""
        elem: CelType | None = None
        for item in items:
            t = self.type_of(item)
            joined = t if elem is None else join(elem, t)
            if joined is None:
                assert elem is not None
                self.error(item, f"expected type '{elem}' but found '{t}'")
                continue
            elem = joined
        return elem or DYN


_OPTIONAL_SYNTAX = re.compile(r"(?<=\.)\?|(?<=\[)\?")


def parse(expr: str) -> Tree:
    """celpy's parse tree; raises CelCheckError on a syntax error.

    celpy does not know CEL's optional syntax (``self.?a``, ``m[?k]``), which Kubernetes
    enables; the ``?`` becomes a blank (positions kept), so the value is typed as the plain
    one and its optional methods (``orValue``, ``hasValue``) as unknown: never refused."""
    try:
        return _ENV.compile(_OPTIONAL_SYNTAX.sub(" ", expr))
    except Exception as exc:  # celpy.CELParseError and lark errors
        line = getattr(exc, "line", None) or 1
        column = getattr(exc, "column", None) or 1
        raise CelCheckError([Problem(f"Syntax error: {str(exc).splitlines()[0]}", line, column)]) from exc


_ESCAPE = re.compile(r"""\\([abfnrtv\\?"'`]|[xX][0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[0-3][0-7]{2})""")


def _bad_escape(literal: str) -> int | None:
    """Offset of the first backslash in a (non-raw) string literal that starts no CEL escape
    sequence: cel-go's lexer refuses ``'\\.'`` where celpy takes it."""
    if literal[:1] in "rR":
        return None
    i = literal.find("\\")
    while i >= 0:
        match = _ESCAPE.match(literal, i)
        if match is None:
            return i
        i = literal.find("\\", match.end())
    return None


def _check_escapes(tree: Tree) -> None:
    for token in tree.scan_values(lambda v: isinstance(v, Token) and v.type in ("STRING_LIT", "MLSTRING_LIT")):
        offset = _bad_escape(str(token))
        if offset is not None:
            raise CelCheckError([Problem(f"Syntax error: token recognition error at: '{str(token)[:offset + 2]}'",
                                         token.line or 1, token.column or 1)])


def check(expr: str, variables: Mapping[str, CelType]) -> CelType:
    """The type of ``expr`` with ``variables`` bound; CelCheckError with every error (sorted
    by position, as cel-go lists them) when it does not compile."""
    checker = Checker(variables, expr)
    tree = parse(expr)
    _check_escapes(tree)
    result = checker.type_of(tree)
    if checker.problems:
        raise CelCheckError(checker.problems)
    return result
