"""Job filter rules (gnt-filter): their shape, their order, and which rule applies to a job.

Semantics are luxid's (Ganeti 3.0 JQScheduler filtering, doc/design-optables):

* A rule: uuid, watermark (the last job id handed out when the rule was
  added or replaced), priority (int >= 0), predicates, action, reason trail.
* Rules are taken in order of priority, then watermark, then uuid.
* The rule that *applies* to a job is the first one whose predicates all
  match the job (no predicate: always matches) and whose action is not
  CONTINUE. No applying rule means the job runs normally.
* Predicates are ``[name, qfilter]`` with a query-language filter
  (`["&", ...]`, `["|", ...]`, `["!", f]`, `["?", field]`, `["==", field, v]`
  (`=` too), `!=`, `<`, `<=`, `>`, `>=`, `["=~", field, regex]`,
  `["=[]", field, v]`; values are strings or integers):

  - ``jobid``: the only field is ``id``, the job id; the value
    ``"watermark"`` stands for the rule's watermark (``[">", "id",
    "watermark"]``: jobs submitted after the rule). Only comparisons are
    evaluated: any other operator, field or string makes the predicate false
    (as in luxid).
  - ``opcode``: true when the filter holds for at least one opcode of the
    job; fields are keys of the opcode (``OP_ID``, ``duration``, dotted
    ``a.b`` for nested objects) compared as JSON values (luxid's order: null
    < bool < number < string < list < object). A missing field, a regex on a
    non-string, ``?`` on a non-boolean or ``=[]`` on a non-list makes it false
    for that opcode.
  - ``reason``: true when the filter holds for at least one reason trail
    entry ``[source, reason, timestamp]`` of one opcode; fields ``source``,
    ``reason``, ``timestamp``; comparisons only, as for ``jobid``.

* Actions: ACCEPT (run it), PAUSE (leave it queued), REJECT (cancel it
  while queued), CONTINUE (never applies) and ``["RATE_LIMIT", n]`` (it may
  start only while fewer than n running jobs have this rule applying).

Interface::

    rule = FilterRule.new(uuid, watermark, priority, predicates, action, reason_trail)
        # RuleError (message for the client) when the predicates/action/reason are malformed
    FilterRule.from_dict(d) / rule.to_dict()   # the config.data "filters" entry shape
    rule.order_key, rule.rate_limit (n or None), rule.matches(job_id, op_inputs)
    applying_rule(ordered_rules, job_id, op_inputs) -> FilterRule | None
    order_rules(rules) -> list sorted by (priority, watermark, uuid)
    is_uuid(text)
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ACCEPT = "ACCEPT"
PAUSE = "PAUSE"
REJECT = "REJECT"
CONTINUE = "CONTINUE"
RATE_LIMIT = "RATE_LIMIT"
SIMPLE_ACTIONS = (ACCEPT, PAUSE, REJECT, CONTINUE)

PREDICATE_NAMES = ("jobid", "opcode", "reason")
_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_MAX_LEVELS = 10

_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "=": operator.eq, "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge,
}


class RuleError(ValueError):
    """A malformed filter rule; the message says which part and why."""


def is_uuid(text: Any) -> bool:
    return isinstance(text, str) and _UUID_RE.match(text) is not None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# -- parsing: the JSON filter into a small tree -------------------------------------------------
# Nodes: ("&", [nodes]) ("|", [nodes]) ("!", node) ("?", field) ("cmp", op, field, value, negate)
#        ("=~", field, compiled regex) ("=[]", field, value)

Node = tuple[Any, ...]


def _parse(qfilter: Any, level: int = 0) -> Node:
    if not isinstance(qfilter, list) or not qfilter:
        raise RuleError(f"invalid filter on level {level}: {qfilter!r} is not a non-empty list")
    if level >= _MAX_LEVELS:
        raise RuleError(f"filter nested deeper than {_MAX_LEVELS} levels")
    op, args = qfilter[0], qfilter[1:]
    if op in ("&", "|"):
        return (op, [_parse(sub, level + 1) for sub in args])
    if op == "!":
        if len(args) != 1:
            raise RuleError("operator '!' takes exactly one filter")
        return ("!", _parse(args[0], level + 1))
    if op == "?":
        if len(args) != 1 or not isinstance(args[0], str):
            raise RuleError("operator '?' takes exactly one field name")
        return ("?", args[0])
    if op in _COMPARATORS or op in ("!=", "=~", "=[]"):
        if len(args) != 2 or not isinstance(args[0], str):
            raise RuleError(f"operator '{op}' takes a field name and a value")
        name, value = args
        if not (isinstance(value, str) or _is_int(value)):
            raise RuleError(f"filter value {value!r} must be a string or an integer")
        if op == "=~":
            if not isinstance(value, str):
                raise RuleError(f"regular expression {value!r} must be a string")
            try:
                return ("=~", name, re.compile(value))
            except re.error as err:
                raise RuleError(f"invalid regular expression {value!r}: {err}") from None
        if op == "=[]":
            return ("=[]", name, value)
        if op == "!=":
            return ("cmp", "==", name, value, True)
        return ("cmp", op, name, value, False)
    raise RuleError(f"unknown filter operator {op!r}")


# -- evaluation ----------------------------------------------------------------------------------
# A leaf evaluator returns True/False, or None when the leaf cannot be evaluated ("Nothing" in
# luxid): that makes the whole predicate false, unless an earlier operand already decided.

Leaf = Callable[[Node], bool | None]


def _evaluate(node: Node, leaf: Leaf) -> bool | None:
    kind = node[0]
    if kind in ("&", "|"):
        want = kind == "|"
        for sub in node[1]:
            result = _evaluate(sub, leaf)
            if result is None or result == want:
                return result
        return not want
    if kind == "!":
        result = _evaluate(node[1], leaf)
        return None if result is None else not result
    return leaf(node)


def _filter_value_key(value: Any) -> tuple[int, Any]:
    """luxid's FilterValue order: any string before any number."""
    return (0, value) if isinstance(value, str) else (1, value)


def _compare(op: str, actual: Any, wanted: Any, negate: bool) -> bool:
    result = _COMPARATORS[op](_filter_value_key(actual), _filter_value_key(wanted))
    return result != negate


def _jobid_leaf(job_id: int, watermark: int) -> Leaf:
    def leaf(node: Node) -> bool | None:
        if node[0] != "cmp" or node[2] != "id":
            return None
        _, op, _, value, negate = node
        if value == "watermark":
            value = watermark
        elif not _is_int(value):
            return None
        return _compare(op, job_id, value, negate)
    return leaf


def _reason_leaf(entry: Sequence[Any]) -> Leaf:
    values = {"source": entry[0], "reason": entry[1], "timestamp": entry[2]}

    def leaf(node: Node) -> bool | None:
        if node[0] != "cmp" or node[2] not in values:
            return None
        _, op, name, value, negate = node
        return _compare(op, values[name], value, negate)
    return leaf


def _json_key(value: Any) -> tuple[int, Any]:
    """Text.JSON's order of values: null < bool < number < string < array < object."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, int | float):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, list):
        return (4, tuple(_json_key(v) for v in value))
    if isinstance(value, dict):
        return (5, tuple((k, _json_key(v)) for k, v in value.items()))
    return (6, repr(value))


class _Missing(Exception):
    pass


def _access(op_input: Mapping[str, Any], name: str) -> Any:
    """A dotted key path into the opcode (luxid's nestedAccessByKeyDotted)."""
    value: Any = op_input
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise _Missing(name)
        value = value[part]
    return value


def _field_names(node: Node) -> list[str]:
    if node[0] in ("&", "|"):
        return [name for sub in node[1] for name in _field_names(sub)]
    if node[0] == "!":
        return _field_names(node[1])
    return [node[2] if node[0] == "cmp" else node[1]]


def _opcode_leaf(op_input: Mapping[str, Any]) -> Leaf:
    def leaf(node: Node) -> bool | None:
        actual = _access(op_input, node[2] if node[0] == "cmp" else node[1])
        if node[0] == "cmp":
            _, op, _, value, negate = node
            return bool(_COMPARATORS[op](_json_key(actual), _json_key(value))) != negate
        if node[0] == "?":
            return actual if isinstance(actual, bool) else None
        if node[0] == "=~":
            return node[2].search(actual) is not None if isinstance(actual, str) else None
        if node[0] == "=[]":
            return node[2] in actual if isinstance(actual, list) else None
        return None
    return leaf


def _reasons(op_inputs: Iterable[Mapping[str, Any]]) -> list[Sequence[Any]]:
    out: list[Sequence[Any]] = []
    for op_input in op_inputs:
        trail = op_input.get("reason")
        if isinstance(trail, list):
            out.extend(e for e in trail if isinstance(e, (list, tuple)) and len(e) == 3)
    return out


# -- rules ---------------------------------------------------------------------------------------

def check_action(action: Any) -> str | list[Any]:
    if action in SIMPLE_ACTIONS:
        return str(action)
    if (isinstance(action, list) and len(action) == 2 and action[0] == RATE_LIMIT and _is_int(action[1])
            and action[1] >= 1):
        return [RATE_LIMIT, action[1]]
    raise RuleError(f'action must be "ACCEPT", "PAUSE", "REJECT", "CONTINUE" or ["RATE_LIMIT", n]'
                    f" with n >= 1, not {action!r}")


def check_reason_trail(trail: Any) -> list[list[Any]]:
    if not isinstance(trail, list):
        raise RuleError(f"reason trail must be a list of [source, reason, timestamp], not {trail!r}")
    out: list[list[Any]] = []
    for entry in trail:
        if not (isinstance(entry, list | tuple) and len(entry) == 3 and isinstance(entry[0], str)
                and isinstance(entry[1], str) and _is_int(entry[2])):
            raise RuleError(f"reason trail entry {entry!r} must be [source, reason, timestamp in ns]")
        out.append(list(entry))
    return out


def parse_predicates(predicates: Any) -> list[tuple[str, Node]]:
    if not isinstance(predicates, list):
        raise RuleError(f"predicates must be a list of [name, filter], not {predicates!r}")
    parsed: list[tuple[str, Node]] = []
    for predicate in predicates:
        if not (isinstance(predicate, list) and len(predicate) == 2 and predicate[0] in PREDICATE_NAMES):
            raise RuleError(f"predicate {predicate!r} must be [\"jobid\"|\"opcode\"|\"reason\", filter]")
        try:
            parsed.append((predicate[0], _parse(predicate[1])))
        except RuleError as err:
            raise RuleError(f"predicate {predicate!r}: {err}") from None
    return parsed


@dataclass(frozen=True)
class FilterRule:
    uuid: str
    watermark: int
    priority: int
    predicates: list[Any]
    action: str | list[Any]
    reason_trail: list[list[Any]]
    _parsed: list[tuple[str, Node]] = field(compare=False, repr=False, default_factory=list)

    @classmethod
    def new(cls, uuid: str, watermark: int, priority: int, predicates: Any, action: Any,
            reason_trail: Any) -> FilterRule:
        if not is_uuid(uuid):
            raise RuleError(f"{uuid!r} is not a UUID")
        if not _is_int(watermark) or watermark < 0:
            raise RuleError(f"watermark must be a job id, not {watermark!r}")
        if not _is_int(priority) or priority < 0:
            raise RuleError(f"priority must be a non-negative integer, not {priority!r}")
        parsed = parse_predicates(predicates)
        return cls(uuid, watermark, priority, [list(p) for p in predicates], check_action(action),
                   check_reason_trail(reason_trail), parsed)

    @classmethod
    def from_dict(cls, data: Any) -> FilterRule:
        if not isinstance(data, Mapping):
            raise RuleError(f"a filter rule must be an object, not {data!r}")
        try:
            return cls.new(data["uuid"], data["watermark"], data["priority"], data["predicates"],
                           data["action"], data["reason_trail"])
        except KeyError as err:
            raise RuleError(f"filter rule {data.get('uuid')!r} lacks {err.args[0]!r}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"uuid": self.uuid, "watermark": self.watermark, "priority": self.priority,
                "predicates": self.predicates, "action": self.action, "reason_trail": self.reason_trail}

    @property
    def order_key(self) -> tuple[int, int, str]:
        return (self.priority, self.watermark, self.uuid)

    @property
    def action_name(self) -> str:
        return self.action if isinstance(self.action, str) else RATE_LIMIT

    @property
    def rate_limit(self) -> int | None:
        return int(self.action[1]) if isinstance(self.action, list) else None

    def matches(self, job_id: int, op_inputs: Sequence[Mapping[str, Any]]) -> bool:
        return all(self._predicate_holds(name, node, job_id, op_inputs) for name, node in self._parsed)

    def _predicate_holds(self, name: str, node: Node, job_id: int,
                         op_inputs: Sequence[Mapping[str, Any]]) -> bool:
        if name == "jobid":
            return _evaluate(node, _jobid_leaf(job_id, self.watermark)) is True
        if name == "reason":
            return any(_evaluate(node, _reason_leaf(e)) is True for e in _reasons(op_inputs))
        names = _field_names(node)
        for op_input in op_inputs:
            try:
                for name in names:  # luxid looks every field up before evaluating: one missing -> false
                    _access(op_input, name)
                if _evaluate(node, _opcode_leaf(op_input)) is True:
                    return True
            except _Missing:
                continue
        return False


def order_rules(rules: Iterable[FilterRule]) -> list[FilterRule]:
    return sorted(rules, key=lambda r: r.order_key)


def applying_rule(ordered: Sequence[FilterRule], job_id: int,
                  op_inputs: Sequence[Mapping[str, Any]]) -> FilterRule | None:
    """The first rule (in `ordered`, already sorted) matching the job whose action is not CONTINUE."""
    for rule in ordered:
        if rule.action != CONTINUE and rule.matches(job_id, op_inputs):
            return rule
    return None
