"""Errors raised by the query machinery, each knowing its Ganeti wire encoding.

Every class carries the name of the `ganeti.errors` class the real client
re-raises (`ganeti_class`) and `encode()` gives Ganeti's encoded exception
`[class name, [args...]]` (errors.EncodeException), ready for a LUXI
`{"success": false, "result": ...}` answer. They are plain exceptions so this
package stays free of transport code; the LUXI layer can pass `encode()`
through or rebuild its own error from `ganeti_class` and `args`.

Filter errors are encoded as `ParameterError`, as Ganeti's own filter
compiler (query.py) and luxid's evaluator raise them. We do *not* encode them
as `QueryFilterParseError`: the real CLI's `FormatError` needs that class to
carry a pyparsing exception as second argument and crashes with a traceback on
anything it can receive over LUXI (checked with Ganeti 3.0.2's cli.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

#: Ganeti's error code for bad input (errors.ECODE_INVAL).
ECODE_INVAL = "wrong_input"
#: Ganeti's error code for a missing object (errors.ECODE_NOENT).
ECODE_NOENT = "unknown_entity"


class QueryError(Exception):
    """Base of the query errors; `encode()` is `[ganeti_class, list(args)]`."""

    ganeti_class: ClassVar[str] = "GenericError"

    def encode(self) -> list[Any]:
        return [self.ganeti_class, list(self.args)]

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class GenericError(QueryError):
    """Ganeti's GenericError (e.g. a resource that cannot be queried)."""

    ganeti_class = "GenericError"


class OpPrereqError(QueryError):
    """Ganeti's OpPrereqError(msg, ecode), e.g. unknown output fields."""

    ganeti_class = "OpPrereqError"

    def __init__(self, msg: str, ecode: str = ECODE_INVAL) -> None:
        super().__init__(msg, ecode)


class FilterError(QueryError):
    """A query filter is invalid or cannot be evaluated; Ganeti's ParameterError."""

    ganeti_class = "ParameterError"

    def __init__(self, msg: str) -> None:
        super().__init__(msg)


class QueryFilterParseError(FilterError):
    """The filter's structure is wrong: not a list, unknown operator, wrong operand count.

    Encoded like every `FilterError` (as ParameterError, see the module doc).
    """
