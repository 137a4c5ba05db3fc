"""The `filter` query resource: Query("filter", ...) and QueryFilters over the filter rules.

Fields are those of the real luxid (masterd/query/fields.json): uuid,
watermark, priority, predicates, action, reason_trail; all always available.
The name field is ``uuid``: a filter that is an OR of ``uuid ==`` selects
those rules in the order asked (duplicates dropped) and an unknown uuid
fails the query with luxid's ``OpPrereqError("Filter uuid X not found",
"unknown_entity")``; any other filter is evaluated over every rule, rows
sorted by uuid.

Interface::

    query_filter_rules(rules, fields, qfilter) -> Query answer
    query_filter_rules_classic(rules, uuids, fields) -> rows  (QueryFilters; None or [] = all)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from masterd.filters.rules import FilterRule
from masterd.query.engine import Resource, classic_rows, run_query
from masterd.query.errors import OpPrereqError
from masterd.query.fields import FieldRegistry, nice_sort_key, normal
from masterd.query.filter import requested_names

NAMEFIELD = "uuid"


def _getter(name: str) -> Any:
    return lambda rule: normal(rule.to_dict()[name])


@functools.cache
def filter_resource() -> Resource[FilterRule]:
    registry = FieldRegistry.load()
    getters: dict[str, Any] = {name: _getter(name) for name in registry.fields("filter")}
    return Resource.from_registry("filter", registry, getters, namefield=NAMEFIELD)


def _select(rules: Iterable[FilterRule], names: Sequence[Any]) -> list[FilterRule]:
    by_uuid = {r.uuid: r for r in rules}
    selected: list[FilterRule] = []
    seen: set[str] = set()
    for name in names:
        rule = by_uuid.get(name) if isinstance(name, str) else None
        if rule is None:
            raise OpPrereqError(f"Filter uuid {name} not found", "unknown_entity")
        if rule.uuid not in seen:
            seen.add(rule.uuid)
            selected.append(rule)
    return selected


def query_filter_rules(rules: Iterable[FilterRule], fields: Sequence[str], qfilter: Any) -> dict[str, Any]:
    resource = filter_resource()
    names = requested_names(qfilter, NAMEFIELD)
    if names:
        items = _select(rules, names)
    else:
        items = sorted(rules, key=lambda r: nice_sort_key(r.uuid))
    return run_query(resource, fields, qfilter, items)


def query_filter_rules_classic(rules: Iterable[FilterRule], uuids: Sequence[str] | None,
                               fields: Sequence[str]) -> list[list[Any]]:
    qfilter = ["|", *(["==", NAMEFIELD, u] for u in uuids)] if uuids else None
    return classic_rows(query_filter_rules(rules, fields, qfilter))

