"""Ganeti's query filter language (the JSON list form, `qfilter`) compiled to a predicate.

A filter is `None` (everything matches) or a list whose first element is the
operator (luxi-protocol.md §8.5; Ganeti's qlang/query.py):

    ["&", f1, f2, ...]   all sub-filters match (no operand: true)
    ["|", f1, f2, ...]   any sub-filter matches (no operand: false)
    ["!", f]             f does not match
    ["?", field]         the field's value is true (Python truth)
    ["==", field, v]     equal; "=" is the legacy spelling
    ["!=", field, v]     not equal
    ["<", field, v], ["<=", ...], [">", ...], [">=", ...]
    ["=~", field, regex] the regex matches somewhere in the (string) value
    ["=[]", field, v]    the (list) value contains v

These are exactly the operators Ganeti 3.0 accepts; `=*` (glob) and `!~`
exist only in the text language, where the client turns them into `=~`
before sending. Nesting is limited to 10 levels, like Ganeti.

Checks made when compiling, with Ganeti's messages (query.py): the shape of
each operator, that the field exists, and that the value's type suits the
field's kind (text: string, number/unit: integer, bool: boolean, float:
float, timestamp: number, other: anything; a job id field also takes
numeric strings, as luxid does). Errors raise `FilterError`
(encoded as Ganeti's ParameterError); structural ones raise its subclass
`QueryFilterParseError`.

Evaluation follows luxid where it differs from the Python code: a field whose
value is not available (status other than RS_NORMAL) lets the condition pass
("filter has no data to work, accepting it"), and comparing values of
incompatible types raises `FilterError` instead of a Python TypeError.

Interface
    `compile_filter(qfilter, fields) -> Predicate`: `fields` maps a field name to
    its `FieldSpec`; the predicate takes an item and returns a bool.
    `requested_names(qfilter, namefield)`: the names an "OR of ==" filter asks
    for (luxid's name selection), `[]` for no filter, None for any other filter.
    `filter_field_names(qfilter)`: the field names a (valid) filter mentions.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from masterd.query.errors import FilterError, QueryFilterParseError
from masterd.query.fields import (
    FLAG_HOSTNAME,
    FLAG_JOB_ID,
    FLAG_SPLIT_TIMESTAMP,
    KIND_BOOL,
    KIND_FLOAT,
    KIND_NUMBER,
    KIND_OTHER,
    KIND_TEXT,
    KIND_TIMESTAMP,
    KIND_UNIT,
    RS_NORMAL,
    FieldSpec,
)

T = TypeVar("T")

#: A compiled filter: item -> matches.
Predicate = Callable[[Any], bool]

OP_AND = "&"
OP_OR = "|"
OP_NOT = "!"
OP_TRUE = "?"
OP_EQUAL = "=="
OP_EQUAL_LEGACY = "="
OP_NOT_EQUAL = "!="
OP_LT = "<"
OP_LE = "<="
OP_GT = ">"
OP_GE = ">="
OP_REGEXP = "=~"
OP_CONTAINS = "=[]"

LOGIC_OPS = frozenset({OP_AND, OP_OR})
UNARY_OPS = frozenset({OP_NOT, OP_TRUE})
BINARY_OPS = frozenset({OP_EQUAL, OP_EQUAL_LEGACY, OP_NOT_EQUAL, OP_LT, OP_LE, OP_GT, OP_GE, OP_REGEXP,
                        OP_CONTAINS})
ALL_OPS = LOGIC_OPS | UNARY_OPS | BINARY_OPS

#: How deep filters can be nested (query.py's _LEVELS_MAX).
MAX_LEVELS = 10


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float)


def _is_job_id(value: Any) -> bool:
    return (_is_int(value) and value >= 0) or (isinstance(value, str) and value.isdigit())


#: Value check per field kind and the type description Ganeti prints for it (query.py's _VERIFY_FN).
_VALUE_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    KIND_TEXT: (lambda v: isinstance(v, str), "String"),
    KIND_BOOL: (lambda v: isinstance(v, bool), "Boolean"),
    KIND_NUMBER: (_is_int, "Integer"),
    KIND_FLOAT: (lambda v: isinstance(v, float), "Float"),
    KIND_UNIT: (_is_int, "Integer"),
    KIND_TIMESTAMP: (_is_number, "Integer or Float"),
    KIND_OTHER: (lambda v: True, "Anything"),
}


def _show(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _merge_time(value: Any) -> float:
    """`[sec, usec]` -> float seconds (utils.MergeTime); numbers pass through."""
    if _is_number(value):
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        return float(value[0]) + float(value[1]) / 1e6
    raise FilterError(f"Invalid timestamp {_show(value)}, expected a number or [seconds, microseconds]")


def _hostname_equal(actual: Any, wanted: Any) -> bool:
    """utils.MatchNameComponent(wanted, [actual], case_sensitive=False) on one name."""
    if not isinstance(actual, str) or not isinstance(wanted, str):
        return bool(actual == wanted)
    if actual == wanted:
        return True
    return re.match(r"^" + re.escape(wanted) + r"(\..*)?$", actual, re.IGNORECASE) is not None


def _ordered(fn: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(actual: Any, wanted: Any) -> bool:
        comparable = ((_is_number(actual) and _is_number(wanted))
                      or (isinstance(actual, str) and isinstance(wanted, str))
                      or (isinstance(actual, list) and isinstance(wanted, list)))
        if comparable:
            try:
                return bool(fn(actual, wanted))
            except TypeError:
                pass
        raise FilterError(f"Invalid types in comparison, trying to compare {_show(actual)} with "
                          f"'{_show(wanted)}'")
    return compare


def _contains(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, list):
        return wanted in actual
    if isinstance(actual, str) and isinstance(wanted, str):
        return wanted in actual
    raise FilterError(f"Invalid field value used in containment check, expecting list but got "
                      f"'{_show(actual)}'")


def _regexp(actual: Any, pattern: re.Pattern[str]) -> bool:
    if not isinstance(actual, str):
        raise FilterError(f"Invalid field value used in regexp matching, expecting string but got "
                          f"'{_show(actual)}'")
    return pattern.search(actual) is not None


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    OP_LT: operator.lt, OP_LE: operator.le, OP_GT: operator.gt, OP_GE: operator.ge,
}


class _Compiler:
    def __init__(self, fields: Mapping[str, FieldSpec[Any]]) -> None:
        self._fields = fields

    def compile(self, qfilter: Any, level: int) -> Predicate:
        if not (isinstance(qfilter, (list, tuple)) and qfilter):
            raise QueryFilterParseError(f"Invalid filter on level {level}")
        if level >= MAX_LEVELS:
            raise QueryFilterParseError(
                f"Only up to {MAX_LEVELS} levels are allowed (filter nested too deep)")
        op, operands = qfilter[0], list(qfilter[1:])
        if not isinstance(op, str) or op not in ALL_OPS:
            raise QueryFilterParseError(f"Unknown operator '{op}'")
        if op in LOGIC_OPS:
            return self._logic(op, operands, level)
        if op in UNARY_OPS:
            return self._unary(op, operands, level)
        return self._binary(op, operands)

    def _lookup(self, name: Any) -> FieldSpec[Any]:
        spec = self._fields.get(name) if isinstance(name, str) else None
        if spec is None:
            raise FilterError(f"Unknown field '{name}'")
        return spec

    def _logic(self, op: str, operands: list[Any], level: int) -> Predicate:
        parts = [self.compile(sub, level + 1) for sub in operands]
        if op == OP_AND:
            return lambda item: all(part(item) for part in parts)
        return lambda item: any(part(item) for part in parts)

    def _unary(self, op: str, operands: list[Any], level: int) -> Predicate:
        if len(operands) != 1:
            raise QueryFilterParseError(f"Unary operator '{op}' expects exactly one operand")
        if op == OP_NOT:
            inner = self.compile(operands[0], level + 1)
            return lambda item: not inner(item)
        getter = self._lookup(operands[0]).getter

        def truth(item: Any) -> bool:
            status, value = getter(item)
            return True if status != RS_NORMAL else bool(value)
        return truth

    def _binary(self, op: str, operands: list[Any]) -> Predicate:
        if len(operands) != 2:
            raise QueryFilterParseError("Invalid binary operator, expected exactly two operands")
        name, value = operands
        spec = self._lookup(name)
        kind = spec.definition.kind
        check, expected = _VALUE_CHECKS.get(kind, (lambda v: v is None, "None"))
        if FLAG_JOB_ID in spec.flags:
            check, expected = _is_job_id, "JobId (an integer or a numeric string)"
        if not check(value):
            raise FilterError(f"Unable to compare field '{name}' (type '{kind}') with "
                              f"'{type(value).__name__}', expected {expected}")
        if FLAG_JOB_ID in spec.flags and op != OP_REGEXP:
            value = int(value)
        compare = self._comparison(op, spec, value)
        getter = spec.getter

        def evaluate(item: Any) -> bool:
            status, actual = getter(item)
            if status != RS_NORMAL:
                return True
            return compare(actual)
        return evaluate

    def _comparison(self, op: str, spec: FieldSpec[Any], value: Any) -> Callable[[Any], bool]:
        flags = spec.flags
        if op == OP_REGEXP:
            if not isinstance(value, str):
                raise FilterError(f"Invalid regex pattern (expected a string, got {_show(value)})")
            try:
                pattern = re.compile(value)
            except re.error as err:
                raise FilterError(f"Invalid regex pattern ({err})") from None
            return lambda actual: _regexp(actual, pattern)
        if op == OP_CONTAINS:
            return lambda actual: _contains(actual, value)
        if op in (OP_EQUAL, OP_EQUAL_LEGACY, OP_NOT_EQUAL):
            negate = op == OP_NOT_EQUAL
            if FLAG_HOSTNAME in flags:
                return lambda actual: _hostname_equal(actual, value) != negate
            if FLAG_SPLIT_TIMESTAMP in flags:
                wanted = _merge_time(value)
                return lambda actual: (_merge_time(actual) == wanted) != negate
            return lambda actual: bool(actual == value) != negate
        ordered = _ordered(_ORDERINGS[op])
        if FLAG_SPLIT_TIMESTAMP in flags:
            wanted_ts = _merge_time(value)
            return lambda actual: ordered(_merge_time(actual), wanted_ts)
        return lambda actual: ordered(actual, value)


def _always(item: Any) -> bool:
    return True


def compile_filter(qfilter: Any, fields: Mapping[str, FieldSpec[Any]]) -> Predicate:
    """Compile a filter against a resource's fields; None matches everything.

    Raises `FilterError` (or its subclass `QueryFilterParseError`) with
    Ganeti's message when the filter is invalid.
    """
    if qfilter is None:
        return _always
    return _Compiler(fields).compile(qfilter, 0)


def requested_names(qfilter: Any, namefield: str) -> list[Any] | None:
    """The values of an OR of `==` on `namefield` (luxid's requestedNames).

    `[]` when there is no filter (meaning every item), None when the filter is
    anything else. Nested ORs count; `=` is the same as `==`.
    """
    if qfilter is None:
        return []
    if not isinstance(qfilter, (list, tuple)) or not qfilter:
        return None
    op = qfilter[0]
    if op == OP_OR:
        names: list[Any] = []
        for sub in qfilter[1:]:
            part = requested_names(sub, namefield)
            if part is None:
                return None
            names.extend(part)
        return names
    if op in (OP_EQUAL, OP_EQUAL_LEGACY) and len(qfilter) == 3 and qfilter[1] == namefield:
        return [qfilter[2]]
    return None


def filter_field_names(qfilter: Any) -> list[str]:
    """The field names a filter refers to, in order of first appearance."""
    names: list[str] = []

    def walk(node: Any) -> None:
        if not isinstance(node, (list, tuple)) or not node:
            return
        op = node[0]
        if op in LOGIC_OPS:
            for sub in node[1:]:
                walk(sub)
        elif op == OP_NOT and len(node) == 2:
            walk(node[1])
        elif op in UNARY_OPS | BINARY_OPS and len(node) >= 2 and isinstance(node[1], str):
            if node[1] not in names:
                names.append(node[1])

    walk(qfilter)
    return names
