"""Ganeti's text query language (what `gnt-* list` takes as a filter), turned into the list form.

Client side, for our gnt-* tools: `gnt-job list 'status == "error"'` or
`gnt-instance list -F 'name =* "web*"'`. Same grammar and results as
Ganeti's qlang.ParseFilter and MakeFilter:

    condition := field                      -> ["?", field]
               | field OP value             (OP: == = != < <= > >=; value: integer or quoted string)
               | value "in" field           -> ["=[]", field, value]
               | value "not in" field       -> ["!", ["=[]", field, value]]
               | field "=~" regex | field "!~" regex   (regex: [m]/.../[flags], delimiters / # ^ |,
                                                        flags s and i)
               | field "=*" glob | field "!*" glob     (glob: quoted DNS-name pattern; * and ?)
    filter    := condition, "(" filter ")", "not" filter, filter "and" filter, filter "or" filter
                 (not binds tighter than and, and tighter than or; chains become one list)

Ganeti's quirks are kept on purpose, since the filter a user typed must mean
the same thing to both: backslash escapes inside a regex are unescaped
(`/\\d/` becomes the regex `d`), a field may be called `not`, `and` or `or`
where an operand is expected, and words right after a regex are read as its
flags.

Interface
    `parse_filter(text) -> list`: raises `QueryFilterParseError`
    ("Failed to parse query filter '<text>': <detail>").
    `make_filter(args, force_filter, namefield=None, isnumeric=False)`: the
    filter for a command's name arguments (None for no arguments), like
    qlang.MakeFilter: one argument with filter characters (or `force_filter`)
    is parsed, globs become regexes, job ids become integers.
    `dns_name_glob_pattern(pattern)`: the regex of a DNS-name glob.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from masterd.query.errors import ECODE_INVAL, OpPrereqError, QueryFilterParseError

FILTER_DETECTION_CHARS = frozenset(" \t\n\v\f\r!\"'()/<=>\\~")
GLOB_DETECTION_CHARS = frozenset("*?")

_WHITESPACE = " \t\n\r"
_FIELD_RE = re.compile(r"[A-Za-z][A-Za-z0-9_/.]*")
_NUMBER_RE = re.compile(r"[+-]?\d+")
_QUOTED_RE = re.compile(r'"(?:[^"\n\r\\]|""|\\(?:[^x]|x[0-9a-fA-F]+))*"'
                        r"|'(?:[^'\n\r\\]|''|\\(?:[^x]|x[0-9a-fA-F]+))*'")
_FLAGS_RE = re.compile(r"[A-Za-z]+")
_IDENT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_$")
_REGEX_DELIMITERS = "/#^|"
_KNOWN_REGEX_FLAGS = frozenset("si")
#: Binary operators, longest first; value: the list-form operator.
_BINARY_OPS = (("==", "=="), ("!=", "!="), ("<=", "<="), (">=", ">="), ("=", "=="), ("<", "<"), (">", ">"))


def dns_name_glob_pattern(pattern: str) -> str:
    """`*` matches within one DNS label, `?` one character of it; the match may stop at a dot."""
    parts = []
    for char in pattern:
        parts.append("[^.]*" if char == "*" else "[^.]" if char == "?" else re.escape(char))
    return "^" + "".join(parts) + r"(\..*)?$"


class _Fail(Exception):
    """A parse failure at a position (may be recovered from by backtracking)."""

    def __init__(self, detail: str, pos: int, fatal: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.pos = pos
        self.fatal = fatal


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def keyword(self, word: str) -> bool:
        self.skip()
        end = self.pos + len(word)
        bounded = end >= len(self.text) or self.text[end] not in _IDENT_CHARS
        if self.text.startswith(word, self.pos) and bounded:
            self.pos = end
            return True
        return False

    def literal(self, word: str) -> bool:
        self.skip()
        if self.text.startswith(word, self.pos):
            self.pos += len(word)
            return True
        return False

    def match(self, regex: re.Pattern[str]) -> str | None:
        self.skip()
        found = regex.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(0)

    def parse(self) -> Any:
        result = self.parse_or()
        self.skip()
        if self.pos != len(self.text):
            raise _Fail(f"Expected end of text, found {self.text[self.pos]!r}", self.pos)
        return result

    def parse_or(self) -> Any:
        return self._chain("or", "|", self.parse_and)

    def parse_and(self) -> Any:
        return self._chain("and", "&", self.parse_not)

    def _chain(self, word: str, op: str, operand: Any) -> Any:
        items = [operand()]
        while True:
            start = self.pos
            if not self.keyword(word):
                break
            try:
                items.append(operand())
            except _Fail as err:
                if err.fatal:
                    raise
                self.pos = start
                break
        return items[0] if len(items) == 1 else [op, *items]

    def parse_not(self) -> Any:
        start = self.pos
        if self.keyword("not"):
            try:
                return ["!", self.parse_not()]
            except _Fail as err:
                if err.fatal:
                    raise
                self.pos = start
        return self.parse_atom()

    def parse_atom(self) -> Any:
        start = self.pos
        if self.literal("("):
            inner = self.parse_or()
            if not self.literal(")"):
                raise _Fail("Expected ')'", self.pos)
            return inner
        self.pos = start
        return self.condition()

    def value(self) -> Any:
        number = self.match(_NUMBER_RE)
        if number is not None:
            return int(number)
        quoted = self.match(_QUOTED_RE)
        if quoted is not None:
            return quoted[1:-1]
        return _NO_VALUE

    def condition(self) -> Any:
        self.skip()
        start = self.pos
        value = self.value()
        if value is not _NO_VALUE:
            negate = self.literal("not")
            if not self.literal("in"):
                raise _Fail("Expected 'in'", self.pos)
            field = self.match(_FIELD_RE)
            if field is None:
                raise _Fail("Expected a field name", self.pos)
            cond = ["=[]", field, value]
            return ["!", cond] if negate else cond
        self.pos = start
        field = self.match(_FIELD_RE)
        if field is None:
            raise _Fail("Expected a field name, a value or '('", self.pos)
        after_field = self.pos
        for text, negate in (("=~", False), ("!~", True)):
            if self.literal(text):
                cond = ["=~", field, self.regex()]
                return ["!", cond] if negate else cond
        for text, negate in (("=*", False), ("!*", True)):
            if self.literal(text):
                glob = self.match(_QUOTED_RE)
                if glob is not None:
                    cond = ["=~", field, dns_name_glob_pattern(glob[1:-1])]
                    return ["!", cond] if negate else cond
                self.pos = after_field
        for text, op in _BINARY_OPS:
            if self.literal(text):
                rhs = self.value()
                if rhs is not _NO_VALUE:
                    return [op, field, rhs]
                break
        self.pos = after_field
        return ["?", field]

    def regex(self) -> str:
        self.skip()
        start = self.pos
        if self.text.startswith("m", self.pos):
            self.pos += 1
            self.skip()
        delimiter = self.text[self.pos] if self.pos < len(self.text) else ""
        if not delimiter or delimiter not in _REGEX_DELIMITERS:
            self.pos = start
            raise _Fail("Expected a regular expression like /.../", start)
        body = re.compile(re.escape(delimiter) + r"(?:[^" + re.escape(delimiter) + r"\n\r\\]|\\.)*"
                          + re.escape(delimiter)).match(self.text, self.pos)
        if body is None:
            raise _Fail("Unterminated regular expression", self.pos)
        self.pos = body.end()
        regexp = body.group(0)[1:-1]
        for escaped, char in ((r"\t", "\t"), (r"\n", "\n"), (r"\f", "\f"), (r"\r", "\r")):
            regexp = regexp.replace(escaped, char)
        regexp = re.sub(r"\\(.)", r"\g<1>", regexp)
        flags = self.match(_FLAGS_RE) or ""
        unknown = sorted(set(flags) - _KNOWN_REGEX_FLAGS)
        if unknown:
            raise _Fail(f"Unknown regular expression flags: '{''.join(unknown)}'", start, fatal=True)
        condition = (f"(?{''.join(sorted(flags))})" if flags else "") + regexp
        try:
            re.compile(condition)
        except re.error as err:
            raise _Fail(f"Invalid regular expression ({err})", start, fatal=True) from None
        return condition


_NO_VALUE = object()


def parse_filter(text: str) -> Any:
    """The list form of a text filter; QueryFilterParseError says where it fails."""
    try:
        return _Parser(text).parse()
    except _Fail as err:
        raise QueryFilterParseError(
            f"Failed to parse query filter '{text}': {err.detail} (at char {err.pos})") from None


def make_filter(args: Sequence[str], force_filter: bool, namefield: str | None = None,
                isnumeric: bool = False) -> Any:
    """The filter for a command's arguments (qlang.MakeFilter); None when there are none."""
    namefield = namefield or "name"
    if force_filter or (args and len(args) == 1 and frozenset(args[0]) & FILTER_DETECTION_CHARS):
        if len(args) != 1:
            raise OpPrereqError("Exactly one argument must be given as a filter", ECODE_INVAL)
        return parse_filter(args[0])
    if not args:
        return None
    parts: list[Any] = ["|"]
    for arg in args:
        if isnumeric:
            try:
                number = int(arg)
            except (TypeError, ValueError) as err:
                raise OpPrereqError(f"Invalid job ID passed: {err}", ECODE_INVAL) from None
            parts.append(["==", namefield, number])
        elif frozenset(arg) & GLOB_DETECTION_CHARS:
            parts.append(["=~", namefield, dns_name_glob_pattern(arg)])
        else:
            parts.append(["==", namefield, arg])
    return parts
