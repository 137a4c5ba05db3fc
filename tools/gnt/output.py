"""What our gnt-* tools print, formatted exactly like Ganeti 3.0's cli/utils helpers.

Interface
    `to_stdout(text)`, `to_stderr(text)`: one line, flushed (cli.ToStdout/ToStderr).
    `format_time(seconds, usecs=None)`: "%F %T[.usec]" in local time, "N/A" for no time.
    `format_timestamp(ts)`: a `[sec, usec]` pair, "?" for anything else.
    `format_unit(mib, units)`: "h" (automatic M/G/T), "m", "g", "t".
    `parse_timespec(text)`: seconds from "30", "2h", "1w"... (OpPrereqError otherwise).
    `to_roman(value)`: roman numeral of an integer 1..4999, the value unchanged otherwise.
    `Column(title, fn, align_right)`, `format_table(rows, columns, header, separator)`:
    cli.FormatTable. `format_query_result(response, ...)`: cli.FormatQueryResult, a
    Query answer turned into (status, lines), with per-field overrides.
    `print_generic_info(data)`: cli.PrintGenericInfo's YAML-like layout (dicts sorted,
    lists of (key, value[, group]) tuples as ordered dicts).
    `safe_encode(text)`: utils.SafeEncode (non-printable characters escaped).
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tools.gnt.errors import ECODE_INVAL, GanetiError

#: Result statuses of a query cell (constants.RS_*) and their texts (verbose, normal).
RS_NORMAL, RS_UNKNOWN, RS_NODATA, RS_UNAVAIL, RS_OFFLINE = 0, 1, 2, 3, 4
RS_DESCRIPTION = {
    RS_UNKNOWN: ("(unknown)", "??"),
    RS_NODATA: ("(nodata)", "?"),
    RS_UNAVAIL: ("(unavail)", "-"),
    RS_OFFLINE: ("(offline)", "*"),
}

#: Overall query statuses (cli.QR_*).
QR_NORMAL, QR_UNKNOWN, QR_INCOMPLETE = 0, 1, 2


def _write(stream: Any, text: str) -> None:
    try:
        stream.write(text + "\n")
        stream.flush()
    except BrokenPipeError:
        sys.exit(1)


def to_stdout(text: str) -> None:
    _write(sys.stdout, text)


def to_stderr(text: str) -> None:
    _write(sys.stderr, text)


def format_time(value: Any, usecs: int | None = None) -> str:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return "N/A"
    result = time.strftime("%F %T", time.localtime(value))
    if usecs is not None:
        result += f".{usecs:06d}"
    return result


def format_timestamp(ts: Any) -> str:
    if not isinstance(ts, list | tuple) or len(ts) != 2:
        return "?"
    return format_time(ts[0], usecs=ts[1])


def merge_time(ts: Sequence[Any]) -> float:
    """A `[sec, usec]` pair as float seconds (utils.MergeTime)."""
    return float(ts[0]) + float(ts[1]) * 0.000001


def format_unit(value: int | float, units: str) -> str:
    if units not in ("m", "g", "t", "h"):
        raise GanetiError("ProgrammerError", f"Invalid unit specified '{units}'")
    if units == "m" or (units == "h" and value < 1024):
        return f"{value:0.0f}" + ("M" if units == "h" else "")
    if units == "g" or (units == "h" and value < 1024 * 1024):
        return f"{float(value) / 1024:0.1f}" + ("G" if units == "h" else "")
    return f"{float(value) / 1024 / 1024:0.1f}" + ("T" if units == "h" else "")


_TIMESPEC_SUFFIXES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_timespec(value: str) -> int:
    if not value:
        raise GanetiError("OpPrereqError", "Empty time specification passed", ECODE_INVAL)
    multiplier = _TIMESPEC_SUFFIXES.get(value[-1])
    number = value if multiplier is None else value[:-1]
    if multiplier is not None and not number:
        raise GanetiError("OpPrereqError", "Invalid time specification (only suffix passed)", ECODE_INVAL)
    try:
        return int(number) * (multiplier or 1)
    except ValueError:
        raise GanetiError("OpPrereqError", f"Invalid time specification '{number}'", ECODE_INVAL) from None


_ROMAN = ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
          (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I"))


def to_roman(value: Any) -> Any:
    """The roman numeral of an integer in 1..4999 (the `roman` module's range), else the value."""
    if not isinstance(value, int) or not 0 < value < 5000:
        return value
    out = []
    for number, letters in _ROMAN:
        while value >= number:
            out.append(letters)
            value -= number
    return "".join(out)


def safe_encode(text: str) -> str:
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    out = []
    for char in text:
        code = ord(char)
        if char == "\t":
            out.append(r"\t")
        elif char == "\n":
            out.append(r"\n")
        elif char == "\r":
            out.append(r"\'r")
        elif code < 32 or code >= 127:
            out.append("\\x%02x" % (code & 0xFF))
        else:
            out.append(char)
    return "".join(out)


# --------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Column:
    title: str
    format: Callable[[Any], str]
    align_right: bool


def format_table(rows: Sequence[Sequence[Any]], columns: Sequence[Column], header: bool,
                 separator: str | None) -> list[str]:
    data: list[list[str]] = [[c.title for c in columns]] if header else []
    widths = [len(c.title) for c in columns] if header else [0] * len(columns)
    for row in rows:
        formatted = [col.format(value) for value, col in zip(row, columns, strict=True)]
        if separator is None:
            widths = [max(w, len(v)) for w, v in zip(widths, formatted, strict=True)]
        data.append(formatted)
    if separator is not None:
        return [separator.join(row) for row in data]
    if columns and not columns[-1].align_right:
        widths[-1] = 0  # no trailing spaces
    fmt = " ".join(f"%{'' if col.align_right else '-'}{width}s"
                   for col, width in zip(columns, widths, strict=True))
    return [fmt % tuple(row) for row in data]


def _format_bool(value: Any) -> str:
    return "Y" if value else "N"


#: Default cell formatting per field kind: (function, align right) (cli._DEFAULT_FORMAT_QUERY).
_DEFAULT_FORMAT: dict[str, tuple[Callable[[Any], str], bool]] = {
    "text": (str, False),
    "bool": (_format_bool, False),
    "number": (str, True),
    "float": (str, True),
    "timestamp": (format_time, False),
    "other": (str, False),
    "unknown": (str, False),
}

FormatOverride = Mapping[str, tuple[Callable[[Any], Any], bool]]


def _column_formatter(fdef: Mapping[str, Any], override: FormatOverride,
                      unit: str) -> tuple[Callable[[Any], Any], bool]:
    if fdef["name"] in override:
        return override[fdef["name"]]
    if fdef["kind"] == "unit":
        return (lambda value: format_unit(value, unit)), True
    if fdef["kind"] in _DEFAULT_FORMAT:
        return _DEFAULT_FORMAT[fdef["kind"]]
    raise GanetiError("ProgrammerError", f"Can't format column type '{fdef['kind']}'")


def format_result_error(status: int, verbose: bool) -> str:
    try:
        verbose_text, normal_text = RS_DESCRIPTION[status]
    except KeyError:
        raise GanetiError("ProgrammerError", f"Unknown result status {status}") from None
    return verbose_text if verbose else normal_text


def unknown_fields(fdefs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [fdef["name"] for fdef in fdefs if fdef["kind"] == "unknown"]


def format_query_result(response: Mapping[str, Any], unit: str | None = None,
                        format_override: FormatOverride | None = None, separator: str | None = None,
                        header: bool = False, verbose: bool = False) -> tuple[int, list[str]]:
    """(overall status QR_*, lines) for a Query answer, like cli.FormatQueryResult."""
    if unit is None:
        unit = "m" if separator else "h"
    override = format_override or {}
    seen = dict.fromkeys(RS_DESCRIPTION, 0)
    columns = []
    for fdef in response["fields"]:
        fn, align_right = _column_formatter(fdef, override, unit)

        def cell(entry: Any, fn: Callable[[Any], Any] = fn) -> str:
            status, value = entry
            if status == RS_NORMAL:
                return fn(value)  # type: ignore[no-any-return]
            if value is not None:
                raise GanetiError("ProgrammerError", f"Found value {value!r} for abnormal status {status}")
            seen[status] = seen.get(status, 0) + 1
            return format_result_error(status, verbose)

        columns.append(Column(fdef["title"], cell, align_right))
    data = response.get("data", [])
    lines = format_table(data, columns, header, separator)
    if seen.get(RS_UNKNOWN) or (not data and unknown_fields(response["fields"])):
        status = QR_UNKNOWN
    elif any(seen.values()):
        status = QR_INCOMPLETE
    else:
        status = QR_NORMAL
    return status, lines


# --------------------------------------------------------------------------
# The YAML-like info layout


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, list | dict | tuple)


def _serialize(buf: io.StringIO, data: Any, level: int, afterkey: bool = False) -> None:
    indent = "  "
    if isinstance(data, dict):
        if not data:
            buf.write("\n")
            return
        if afterkey:
            buf.write("\n")
        for index, key in enumerate(sorted(data)):
            if afterkey or index:
                buf.write(indent * level)
            buf.write(f"{key}: ")
            _serialize(buf, data[key], level + 1, afterkey=True)
    elif isinstance(data, list) and data and isinstance(data[0], tuple):
        if afterkey:
            buf.write("\n")
        widths: dict[Any, int] = {}
        for entry in data:
            if len(entry) > 2:
                widths[entry[2]] = max(widths.get(entry[2], 0), len(entry[0]))
        for index, entry in enumerate(data):
            key, value = entry[0], entry[1]
            if afterkey or index:
                buf.write(indent * level)
            buf.write(f"{key}: ")
            if len(entry) > 2:
                buf.write(" " * (widths[entry[2]] - len(key)))
            _serialize(buf, value, level + 1, afterkey=True)
    elif isinstance(data, tuple) and all(_is_scalar(item) for item in data):
        buf.write("[" + ", ".join(str(item) for item in data) + "]\n")
    elif isinstance(data, list | tuple):
        if not data:
            buf.write("\n")
            return
        if afterkey:
            buf.write("\n")
        for index, item in enumerate(data):
            if afterkey or index:
                buf.write(indent * level)
            buf.write("- ")
            _serialize(buf, item, level + 1)
    else:
        buf.write(f"{_py_str(data)}\n")


def _py_str(value: Any) -> str:
    """str() of a JSON value as Python 3 prints it (the real tools print parsed JSON)."""
    return str(value)


def print_generic_info(data: Any) -> None:
    buf = io.StringIO()
    _serialize(buf, data, 0)
    to_stdout(buf.getvalue().rstrip("\n"))


#: gnt-* list-fields: how a field kind is named in the Type column (cli.py's _QFT_NAMES).
FIELD_TYPE_NAMES = {"unknown": "Unknown", "text": "Text", "bool": "Boolean", "number": "Number",
                    "float": "Floating-point number", "unit": "Storage size", "timestamp": "Timestamp",
                    "other": "Custom"}


def field_listing(response: Mapping[str, Any], header: bool,
                  separator: str | None) -> tuple[list[str], list[str]]:
    """A QueryFields answer as `list-fields` prints it: (lines, unknown field names)."""
    columns = [Column(title, str, False) for title in ("Name", "Type", "Title", "Description")]
    rows = [[f["name"], FIELD_TYPE_NAMES.get(f["kind"], f["kind"]), f["title"], f["doc"]]
            for f in response["fields"]]
    return format_table(rows, columns, header, separator), unknown_fields(response["fields"])
