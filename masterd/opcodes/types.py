"""Opcode parameter types: a small JSON type tree, its checker and its Ganeti-style description.

The tree is what tools/gen_opcode_defs.py derives from Ganeti's type
descriptions (ht.py: "None or (List of NonEmptyString)"...) and stores in
opcodes.json. Each node is a dict with a "t" key:

    any, none, bool, int, float, string, nonempty_string, list, dict, tuple
    non_negative_int (>= 0), positive_int (> 0)     Ganeti's EqualOrGreaterThanZero / GreaterThanZero
    elem_of {values}                                OneOf a, b, c
    list_of {item}, set_of {item}                   List of X, Set of X (a JSON list)
    dict_of {key, value}                            Dictionary with keys of K and values of V
    tuple_of {items}                                Tuple of (A, B): a list of that length
    length {n}, items {items}, less_than {n}         Length n, Item 0 is A, item 1 is B, Less than n
    and {of}, or {of}                               combinations
    private {inner}                                 Private X (clients send the value in clear)
    ipv4_address, ipv4_network, ipv6_address, ipv6_network (strings)
    job_id (int >= 0 or numeric string), relative_job_id (int < 0)

Any node may carry "doc" (Ganeti's "[comment]").

Interface
    `check(node, value) -> Problem | None`: None when the value fits; else the
    path inside the value (e.g. "[1]" or "['mode']") and what was expected there.
    `describe(node)`: Ganeti's description text of the type.
    `accepts(node, value) -> bool`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

TypeNode = dict[str, Any]

_PAREN_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
_JOB_ID_RE = re.compile(r"^\d+$")

_SIMPLE_NAMES = {
    "any": "Anything", "none": "None", "bool": "Boolean", "int": "Integer", "float": "Float",
    "string": "String", "nonempty_string": "NonEmptyString", "list": "List", "dict": "Dictionary",
    "tuple": "Tuple", "non_negative_int": "EqualOrGreaterThanZero", "positive_int": "GreaterThanZero",
    "ipv4_address": "IPv4 address", "ipv4_network": "IPv4 network", "ipv6_address": "IPv6 address",
    "ipv6_network": "IPv6 network", "job_id": "JobId", "relative_job_id": "RelativeJobId",
}


@dataclass(frozen=True)
class Problem:
    """Where a value fails its type (`path`, "" for the value itself) and why."""

    path: str
    expected: str
    value: Any

    def explain(self) -> str:
        where = f" at {self.path}" if self.path else ""
        return f"expected {self.expected}{where}, got {show_value(self.value)}"


def show_value(value: Any) -> str:
    """A short, JSON-flavoured rendering of a value with its JSON type."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object"}
    kind = "null" if value is None else kinds.get(type(value), type(value).__name__)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return "null" if value is None else f"{kind} {text}"


def _parens(text: str) -> str:
    return text if _PAREN_RE.match(text) else f"({text})"


def describe(node: TypeNode) -> str:
    """Ganeti's description of the type (ht.py wording)."""
    kind = node["t"]
    if kind in _SIMPLE_NAMES:
        text = _SIMPLE_NAMES[kind]
    elif kind == "elem_of":
        text = "OneOf " + ", ".join(str(v) for v in node["values"])
    elif kind == "list_of":
        text = "List of " + _parens(describe(node["item"]))
    elif kind == "set_of":
        text = "Set of " + _parens(describe(node["item"]))
    elif kind == "dict_of":
        text = (f"Dictionary with keys of {_parens(describe(node['key']))} "
                f"and values of {_parens(describe(node['value']))}")
    elif kind == "tuple_of":
        text = "Tuple of " + _parens(", ".join(describe(i) for i in node["items"]))
    elif kind == "length":
        text = f"Length {node['n']}"
    elif kind == "less_than":
        text = f"Less than {node['n']}"
    elif kind == "items":
        text = ", ".join(f"{'Item' if i == 0 else 'item'} {i} is {_parens(describe(sub))}"
                         for i, sub in enumerate(node["items"]))
    elif kind in ("and", "or"):
        parts = node["of"]
        if len(parts) == 1:
            text = describe(parts[0])
        else:
            text = f" {kind} ".join(_parens(describe(p)) for p in parts)
    elif kind == "private":
        text = "Private " + _parens(describe(node["inner"]))
    else:
        raise ValueError(f"unknown type node {node!r}")
    if node.get("doc"):
        text = f"{text} [{node['doc']}]"
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ip_ok(kind: str, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    factory = {"ipv4_address": ipaddress.IPv4Address, "ipv4_network": ipaddress.IPv4Network,
               "ipv6_address": ipaddress.IPv6Address, "ipv6_network": ipaddress.IPv6Network}[kind]
    try:
        factory(value)
    except ValueError:
        return False
    return True


_SCALAR_CHECKS = {
    "any": lambda v: True,
    "none": lambda v: v is None,
    "bool": lambda v: isinstance(v, bool),
    "int": _is_int,
    "float": lambda v: isinstance(v, float),
    "string": lambda v: isinstance(v, str),
    "nonempty_string": lambda v: isinstance(v, str) and v != "",
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
    "tuple": lambda v: False,  # JSON has no tuples; Ganeti's TTuple never matches decoded JSON
    "non_negative_int": lambda v: _is_int(v) and v >= 0,
    "positive_int": lambda v: _is_int(v) and v > 0,
    "job_id": lambda v: (_is_int(v) and v >= 0) or (isinstance(v, str) and _JOB_ID_RE.match(v) is not None),
    "relative_job_id": lambda v: _is_int(v) and v < 0,
}


def check(node: TypeNode, value: Any, path: str = "") -> Problem | None:
    """None when value fits node; otherwise the innermost useful Problem."""
    kind = node["t"]
    fail = Problem(path, describe(node), value)
    if kind in _SCALAR_CHECKS:
        return None if _SCALAR_CHECKS[kind](value) else fail
    if kind.startswith("ipv"):
        return None if _ip_ok(kind, value) else fail
    if kind == "elem_of":
        ok = any(value == v and type(value) is type(v) for v in node["values"])
        return None if ok else fail
    if kind in ("list_of", "set_of"):
        if not isinstance(value, list):
            return fail
        for index, element in enumerate(value):
            problem = check(node["item"], element, f"{path}[{index}]")
            if problem:
                return problem
        return None
    if kind == "dict_of":
        if not isinstance(value, dict):
            return fail
        for key, element in value.items():
            problem = check(node["key"], key, f"{path} key {key!r}") or check(
                node["value"], element, f"{path}[{key!r}]")
            if problem:
                return problem
        return None
    if kind == "tuple_of":
        items = node["items"]
        if not isinstance(value, list) or len(value) != len(items):
            return fail
        return _check_items(items, value, path)
    if kind == "length":
        return None if isinstance(value, (list, dict, str)) and len(value) == node["n"] else fail
    if kind == "less_than":
        return None if (_is_int(value) or isinstance(value, float)) and value < node["n"] else fail
    if kind == "items":
        if not isinstance(value, list):
            return fail
        return _check_items(node["items"], value, path)
    if kind == "and":
        for part in node["of"]:
            problem = check(part, value, path)
            if problem:
                # report the whole combination unless the part pinpointed something inside the value
                return problem if problem.path != path else fail
        return None
    if kind == "or":
        problems = [check(part, value, path) for part in node["of"]]
        if any(p is None for p in problems):
            return None
        inner = [p for p in problems if p is not None and p.path != path]
        return inner[0] if len(inner) == 1 else fail
    if kind == "private":
        return check(node["inner"], value, path)
    raise ValueError(f"unknown type node {node!r}")


def _check_items(items: list[TypeNode], value: list[Any], path: str) -> Problem | None:
    for index, (sub, element) in enumerate(zip(items, value, strict=False)):
        problem = check(sub, element, f"{path}[{index}]")
        if problem:
            return problem
    return None


def accepts(node: TypeNode, value: Any) -> bool:
    return check(node, value) is None
