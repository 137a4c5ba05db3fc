"""Query, QueryFields and classic (QueryNodes/QueryJobs style) answers, resource-independent.

Shapes (luxi-protocol.md §8):
    Query        -> {"fields": [fielddef, ...], "data": [[[status, value], ...], ...]}
    QueryFields  -> {"fields": [fielddef, ...]}
    classic rows -> [[value, ...], ...]  (status dropped, non-normal values null)

Rules kept here: field definitions have exactly name/title/kind/doc and the
responses no extra key (the client's ConfigObjects reject any: §8.2); an
unknown field gets `kind: "unknown"` and `[RS_UNKNOWN, null]` in every row;
a value goes with status RS_NORMAL or is null; QueryFields with no names
lists every field in natural order; classic rows refuse unknown fields with
`OpPrereqError("Unknown output fields selected: a, b", "wrong_input")`.

Interface
    `Resource(name, specs, namefield)`: a resource's fields (`FieldSpec` by
    name) and the field naming its items (`name`, `id` for jobs, `node` for
    exports). `Resource.from_registry(name, registry, getters, flags)` pairs
    the definitions of fields.json with getters and refuses a getter for a
    field the table does not have.
    `resource_definitions(registry, what, method)`: the field table of a
    resource named in a Query/QueryFields request, or luxid's refusal
    (`GenericError` for cluster/os, `UnknownResourceError` for other names).
    `query_fields(definitions, names)`: the QueryFields answer.
    `run_query(resource, fields, qfilter, items)`: the Query answer over items
    the caller has already selected and ordered; the filter is compiled first
    (errors before any work) and applied to every item.
    `classic_rows(response)`: the classic answer from a Query answer.
    `check_query_response(obj)` / `check_fields_response(obj)`: raise
    ValueError when a response breaks the wire rules (for tests and asserts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from masterd.query.errors import ECODE_INVAL, GenericError, OpPrereqError, QueryError
from masterd.query.fields import (
    KIND_UNKNOWN,
    RESULT_STATUSES,
    RS_NORMAL,
    UNKNOWN,
    Entry,
    FieldDefinition,
    FieldRegistry,
    FieldSpec,
    nice_sort_key,
)
from masterd.query.filter import compile_filter

T = TypeVar("T")

FIELD_DEF_KEYS = frozenset({"name", "title", "kind", "doc"})


@dataclass(frozen=True)
class Resource(Generic[T]):
    """A queryable resource: its fields with getters, and its name field."""

    name: str
    specs: Mapping[str, FieldSpec[T]]
    namefield: str = "name"
    definitions: Mapping[str, FieldDefinition] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.definitions:
            object.__setattr__(self, "definitions", {n: s.definition for n, s in self.specs.items()})

    @classmethod
    def from_registry(cls, name: str, registry: FieldRegistry, getters: Mapping[str, Callable[[T], Entry]],
                      *, namefield: str = "name",
                      flags: Mapping[str, frozenset[str]] | None = None) -> Resource[T]:
        """Pair fields.json's definitions of `name` with getters (a subset is allowed).

        Fields without a getter stay listed by QueryFields but are unknown to
        Query, so a resource can be implemented field by field.
        """
        definitions = registry.fields(name)
        extra = sorted(set(getters) - set(definitions))
        if extra:
            raise ValueError(f"resource {name!r}: getters for fields its table lacks: {extra}")
        flags = flags or {}
        specs = {fname: FieldSpec(definitions[fname], getter, flags.get(fname, frozenset()))
                 for fname, getter in getters.items()}
        return cls(name, specs, namefield, dict(definitions))


class UnknownResourceError(QueryError):
    """A Query/QueryFields `what` that names no resource.

    luxid cannot even parse such a request; `encode()` gives its plain-string
    answer ("Failed to parse request: ...").
    """

    def __init__(self, what: Any) -> None:
        super().__init__(f"Can't parse value '{what}' as neither QueryTypeLuxi nor QueryTypeOp")

    def encode(self) -> Any:
        return "Failed to parse request: " + self.message


def resource_definitions(registry: FieldRegistry, what: Any,
                         method: str = "Query") -> dict[str, FieldDefinition]:
    """The field table for `what`, or luxid's error for a resource it does not serve."""
    if isinstance(what, str) and what in registry.resources():
        return dict(registry.fields(what))
    refusal = registry.unsupported_error(what) if isinstance(what, str) else None
    if isinstance(refusal, list) and len(refusal) == 2 and refusal[1]:
        message = str(refusal[1][0])
        if message.startswith("QueryFields ") and method != "QueryFields":
            message = method + message[len("QueryFields"):]
        raise GenericError(message)
    raise UnknownResourceError(what)


def _check_field_names(fields: Any) -> list[str]:
    if fields is None:
        return []
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise OpPrereqError(f"The list of fields must be a list of strings, got {fields!r}", ECODE_INVAL)
    return fields


def query_fields(definitions: Mapping[str, FieldDefinition], names: Sequence[str] | None) -> dict[str, Any]:
    """QueryFields: every field in natural order for no names, else one definition per name."""
    wanted = _check_field_names(list(names) if names is not None else None)
    if not wanted:
        selected = [definitions[n] for n in sorted(definitions, key=nice_sort_key)]
    else:
        selected = [definitions.get(n) or FieldDefinition.unknown(n) for n in wanted]
    return {"fields": [d.to_dict() for d in selected]}


def _entry(spec: FieldSpec[T] | None, item: T) -> list[Any]:
    if spec is None:
        status, value = UNKNOWN
    else:
        status, value = spec.getter(item)
    if status not in RESULT_STATUSES:
        raise ValueError(f"getter returned unknown status {status!r}")
    return [status, value if status == RS_NORMAL else None]


def run_query(resource: Resource[T], fields: Sequence[str], qfilter: Any,
              items: Iterable[T]) -> dict[str, Any]:
    """Query: the rows of the items that pass the filter, one [status, value] per field."""
    names = _check_field_names(list(fields))
    predicate = compile_filter(qfilter, resource.specs)
    selected = [resource.specs.get(n) for n in names]
    fdefs = [(resource.definitions.get(n) if resource.specs.get(n) else None) or FieldDefinition.unknown(n)
             for n in names]
    data = [[_entry(spec, item) for spec in selected] for item in items if predicate(item)]
    return {"fields": [d.to_dict() for d in fdefs], "data": data}


def classic_rows(response: Mapping[str, Any]) -> list[list[Any]]:
    """Classic answer: plain values; unknown fields refused as luxid does."""
    unknown = [f["name"] for f in response["fields"] if f["kind"] == KIND_UNKNOWN]
    if unknown:
        raise OpPrereqError("Unknown output fields selected: " + ", ".join(unknown), ECODE_INVAL)
    return [[value for (_status, value) in row] for row in response["data"]]


def _check_fielddefs(fdefs: Any) -> None:
    if not isinstance(fdefs, list):
        raise ValueError("'fields' must be a list")
    for fdef in fdefs:
        if not isinstance(fdef, dict) or set(fdef) != FIELD_DEF_KEYS:
            raise ValueError(f"field definition {fdef!r} must have exactly the keys {sorted(FIELD_DEF_KEYS)}")
        if not fdef["name"] or not fdef["title"]:
            raise ValueError(f"field definition {fdef!r}: name and title must be non-empty")


def check_fields_response(obj: Any) -> None:
    """Raise ValueError unless obj is a valid QueryFields answer."""
    if not isinstance(obj, dict) or set(obj) != {"fields"}:
        raise ValueError(f"QueryFields answer must have exactly the key 'fields', got {obj!r:.200}")
    _check_fielddefs(obj["fields"])


def check_query_response(obj: Any) -> None:
    """Raise ValueError unless obj is a valid Query answer (keys, row widths, status/value pairs)."""
    if not isinstance(obj, dict) or set(obj) != {"fields", "data"}:
        raise ValueError(f"Query answer must have exactly the keys 'fields' and 'data', got {obj!r:.200}")
    _check_fielddefs(obj["fields"])
    width = len(obj["fields"])
    for row in obj["data"]:
        if not isinstance(row, list) or len(row) != width:
            raise ValueError(f"row {row!r:.200} must hold one [status, value] per field ({width})")
        for entry in row:
            if not (isinstance(entry, list) and len(entry) == 2 and entry[0] in RESULT_STATUSES):
                raise ValueError(f"entry {entry!r:.200} must be [status, value]")
            if entry[0] != RS_NORMAL and entry[1] is not None:
                raise ValueError(f"entry {entry!r:.200}: a non-normal status needs a null value")
