"""Generate masterd/opcodes/opcodes.json from Ganeti 3.0.2's opcode reference.

Input: `opcodes_reference.json` (generated from Ganeti's opcodes.py: per
opcode its OP_ID, class, OP_DSC_FIELD and parameters with the Python repr of
the default and ht.py's description of the type). Output: the committed
`masterd/opcodes/opcodes.json`, read by the master at run time.

The type descriptions ("None or (List of (Tuple of (Integer, Integer)))") are
parsed into the type trees of masterd.opcodes.types; the defaults are parsed
as Python literals. A parameter is required when, like in Ganeti's
OpCode.Validate, its default (None) does not pass its type. Every value
Ganeti uses for "EqualOrGreaterThanZero"/"GreaterThanZero" in opcode
parameters is an integer (checked against opcodes.py), so they become
non_negative_int/positive_int. The parameters every opcode has (dry_run,
debug_level, priority, depends, comment, reason) are written out here, from
opcodes.OpCode.OP_PARAMS.

    .venv/bin/python tools/gen_opcode_defs.py [--source PATH] [--output PATH] [--check]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from masterd.opcodes.types import TypeNode, accepts, describe  # noqa: E402

# shared/ lies beside the checkout (here, and in CI).
DEFAULT_SOURCE = (Path(__file__).resolve().parents[2] / "shared" / "reference" / "samples"
                  / "opcodes_reference.json")
DEFAULT_OUTPUT = ROOT / "masterd" / "opcodes" / "opcodes.json"

#: constants.STORAGE_TYPES (ht.TStorageType is a bare function, described by its repr).
STORAGE_TYPES = ["blockdev", "diskless", "ext", "file", "gluster", "lvm-pv", "lvm-vg", "rados", "sharedfile"]

_WORDS: dict[str, TypeNode] = {
    "Anything": {"t": "any"}, "None": {"t": "none"}, "Boolean": {"t": "bool"},
    "Integer": {"t": "int"}, "Float": {"t": "float"}, "String": {"t": "string"},
    "NonEmptyString": {"t": "nonempty_string"}, "List": {"t": "list"}, "Dictionary": {"t": "dict"},
    "Tuple": {"t": "tuple"}, "EqualOrGreaterThanZero": {"t": "non_negative_int"},
    "GreaterThanZero": {"t": "positive_int"}, "JobId": {"t": "job_id"},
    "RelativeJobId": {"t": "relative_job_id"},
}
_PHRASES: dict[str, TypeNode] = {
    "IPv4 address": {"t": "ipv4_address"}, "IPv4 network": {"t": "ipv4_network"},
    "IPv6 address": {"t": "ipv6_address"}, "IPv6 network": {"t": "ipv6_network"},
}
_FUNCTION_RE = re.compile(r"<function (\w+) at 0x[0-9a-f]+>")
_WORD_RE = re.compile(r"[A-Za-z0-9_-]+")
_INT_RE = re.compile(r"-?\d+")


class DescriptionError(ValueError):
    pass


class _Parser:
    """Recursive descent over one ht.py description string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, what: str) -> DescriptionError:
        return DescriptionError(f"{what} at offset {self.pos} of {self.text!r}")

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def take(self, literal: str) -> bool:
        if self.peek(literal):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            raise self.fail(f"expected {literal!r}")

    def parse(self) -> TypeNode:
        node = self.expr()
        if self.pos != len(self.text):
            raise self.fail("unparsed text")
        return node

    def expr(self) -> TypeNode:
        """Atoms joined by one of " or "/" and ", then "[comment]"s (ht.Comment wraps the whole)."""
        parts = [self.atom()]
        op = None
        while True:
            if self.peek(" or "):
                this = "or"
            elif self.peek(" and "):
                this = "and"
            else:
                break
            if op is not None and op != this:
                raise self.fail("mixed 'and'/'or' without parentheses")
            op = this
            self.pos += len(this) + 2
            parts.append(self.atom())
        node = parts[0] if op is None else {"t": op, "of": parts}
        return self.comments(node)

    def comments(self, node: TypeNode) -> TypeNode:
        while self.peek(" ["):
            end = self.text.index("]", self.pos)
            doc = self.text[self.pos + 2:end]
            self.pos = end + 1
            if node.get("doc"):
                node = {"t": "and", "of": [node]}  # keep both comments: wrap once more
            node = {**node, "doc": doc}
        return node

    def atom(self) -> TypeNode:
        if self.take("("):
            node = self.expr()
            self.expect(")")
            return node
        match = _FUNCTION_RE.match(self.text, self.pos)
        if match:
            if match.group(1) != "TStorageType":
                raise self.fail(f"unknown type function {match.group(1)}")
            self.pos = match.end()
            return {"t": "elem_of", "values": STORAGE_TYPES, "doc": "storage type"}
        for prefix, kind in (("List of ", "list_of"), ("Set of ", "set_of")):
            if self.take(prefix):
                return {"t": kind, "item": self.atom()}
        if self.take("Private "):
            return {"t": "private", "inner": self.atom()}
        if self.take("Dictionary with keys of "):
            key = self.atom()
            self.expect(" and values of ")
            return {"t": "dict_of", "key": key, "value": self.atom()}
        if self.take("Tuple of ("):
            items = self.tuple_items()
            self.expect(")")
            return {"t": "tuple_of", "items": items}
        if self.take("Length "):
            return {"t": "length", "n": self.integer()}
        if self.take("Less than "):
            return {"t": "less_than", "n": self.integer()}
        if self.take("Item 0 is "):
            items = [self.atom()]
            while self.take(f", item {len(items)} is "):
                items.append(self.atom())
            return {"t": "items", "items": items}
        if self.take("OneOf "):
            return {"t": "elem_of", "values": self.one_of_values(in_tuple=False)}
        for phrase, node in _PHRASES.items():
            if self.take(phrase):
                return dict(node)
        match = _WORD_RE.match(self.text, self.pos)
        if match and match.group(0) in _WORDS:
            self.pos = match.end()
            return dict(_WORDS[match.group(0)])
        raise self.fail("unknown type description")

    def integer(self) -> int:
        match = _INT_RE.match(self.text, self.pos)
        if not match:
            raise self.fail("expected an integer")
        self.pos = match.end()
        return int(match.group(0))

    def one_of_values(self, in_tuple: bool) -> list[Any]:
        """Values up to ')' or the end; in a tuple also up to the next item (a known type word)."""
        values: list[Any] = []
        while True:
            match = re.compile(r"[^,()]+").match(self.text, self.pos)
            if not match:
                raise self.fail("expected a OneOf value")
            values.append(match.group(0))
            self.pos = match.end()
            if not self.peek(", "):
                return values
            if in_tuple:
                following = _WORD_RE.match(self.text, self.pos + 2)
                if following and (following.group(0) in _WORDS or self.text.startswith(
                        ("OneOf ", "List of ", "Dictionary "), self.pos + 2)):
                    return values
            self.pos += 2

    def tuple_items(self) -> list[TypeNode]:
        items = []
        while True:
            if self.take("OneOf "):
                items.append({"t": "elem_of", "values": self.one_of_values(in_tuple=True)})
            else:
                items.append(self.atom())
            if not self.take(", "):
                return items


def parse_description(text: str) -> TypeNode:
    """The type tree of one ht.py description."""
    return _Parser(text).parse()


def _priority_type() -> TypeNode:
    return {"t": "elem_of", "values": [-10, 0, 10]}


def _depends_type() -> TypeNode:
    dependency = {"t": "and", "of": [
        {"t": "list"}, {"t": "length", "n": 2},
        {"t": "items", "items": [
            {"t": "or", "of": [{"t": "job_id"}, {"t": "relative_job_id"}]},
            {"t": "list_of", "item": {"t": "elem_of", "values": ["canceled", "error", "success"]}},
        ]},
    ]}
    return {"t": "or", "of": [{"t": "none"}, {"t": "list_of", "item": dependency}]}


def generic_params() -> list[dict[str, Any]]:
    """The parameters of every opcode (opcodes.OpCode.OP_PARAMS)."""
    maybe = lambda node: {"t": "or", "of": [{"t": "none"}, node]}  # noqa: E731
    reason_entry = {"t": "tuple_of", "items": [{"t": "string"}, {"t": "string"}, {"t": "int"}]}
    table: list[tuple[str, Any, TypeNode, str]] = [
        ("dry_run", None, maybe({"t": "bool"}), "Run checks only, don't execute"),
        ("debug_level", None, maybe({"t": "non_negative_int"}), "Debug level"),
        ("priority", 0, _priority_type(), "Opcode priority: -10 high, 0 normal, 10 low"),
        ("depends", None, _depends_type(),
         "Job dependencies [[job id, [final statuses]], ...]; negative ids are relative to the new job"),
        ("comment", None, maybe({"t": "string"}), "Comment describing the purpose of the opcode"),
        ("reason", [], maybe({"t": "list_of", "item": reason_entry}),
         "The reason trail: [[source, text, epoch nanoseconds], ...]"),
    ]
    return [_param(name, default, node, doc) for (name, default, node, doc) in table]


def _param(name: str, default: Any, node: TypeNode, doc: str = "") -> dict[str, Any]:
    required = default is None and not accepts(node, None)
    param: dict[str, Any] = {"name": name, "required": required, "default": None if required else default,
                             "type": node, "type_text": describe(node)}
    if doc:
        param["doc"] = doc
    return param


def build(reference: list[dict[str, Any]]) -> dict[str, Any]:
    opcodes: dict[str, Any] = {}
    generic_names = {p["name"] for p in generic_params()}
    for entry in reference:
        op_id = entry["OP_ID"]
        params = []
        for raw in entry["params"]:
            if raw["name"] in generic_names:
                raise SystemExit(f"{op_id}: parameter {raw['name']!r} clashes with a generic parameter")
            try:
                node = parse_description(raw["type"])
            except DescriptionError as err:
                raise SystemExit(f"{op_id}.{raw['name']}: {err}") from None
            try:
                default = ast.literal_eval(raw["default"])
            except (ValueError, SyntaxError):
                raise SystemExit(f"{op_id}.{raw['name']}: default {raw['default']!r} is no literal") from None
            params.append(_param(raw["name"], default, node))
        opcodes[op_id] = {"class": entry["class"], "summary_field": entry.get("OP_DSC_FIELD"),
                          "params": params, "result": entry.get("result")}
    return {
        "comment": "Generated by tools/gen_opcode_defs.py from Ganeti 3.0.2's opcode reference; do not edit.",
        "generic_params": generic_params(),
        "opcodes": opcodes,
    }


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--check", action="store_true", help="fail if the output is stale")
    args = parser.parse_args(argv)
    text = render(build(json.loads(args.source.read_text())))
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale; run tools/gen_opcode_defs.py", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
