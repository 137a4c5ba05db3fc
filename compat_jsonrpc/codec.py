"""Legacy JSON <-> proto messages, driven by the descriptors.

One generic mapping serves all 108 procedures; the rules are stated in
proto/ganeti/common/v1/legacy.proto. "Native" values are what `json.loads`
gives and `json.dumps` takes: dict, list, str, int, float, bool, None.

Each message type gets a compiled plan (a list of per-field converters) the
first time it is seen, so a call costs a few dictionary lookups per field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from generated.ganeti.common.v1 import legacy_pb2
from noded.errors import InvalidArguments

TUPLE = legacy_pb2.LEGACY_SHAPE_TUPLE
OBJECT = legacy_pb2.LEGACY_SHAPE_OBJECT
UNWRAP = legacy_pb2.LEGACY_SHAPE_UNWRAP
NULL = legacy_pb2.LEGACY_SHAPE_NULL

_STRUCT = "google.protobuf.Struct"
_VALUE = "google.protobuf.Value"
_LIST_VALUE = "google.protobuf.ListValue"

_INT_TYPES = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
_FLOAT_TYPES = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}


class CodecError(InvalidArguments):
    """A legacy value does not fit the message it must become."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _fail(where: str, expected: str, value: Any) -> CodecError:
    return CodecError(f"{where}: expected {expected}, got {_kind(value)}")


def plain_number(value: float) -> int | float:
    """A float without fractional part as int (the Haskell decoders want `1`, not `1.0`)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 2**63:
        return int(value)
    return value


# -- google.protobuf.Value / Struct / ListValue -----------------------------

def value_to_native(v: struct_pb2.Value) -> Any:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        return plain_number(v.number_value)
    if kind == "bool_value":
        return v.bool_value
    if kind == "struct_value":
        return struct_to_native(v.struct_value)
    if kind == "list_value":
        return [value_to_native(x) for x in v.list_value.values]
    return None


def struct_to_native(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: value_to_native(v) for k, v in s.fields.items()}


def list_to_native(lv: struct_pb2.ListValue) -> list[Any]:
    return [value_to_native(x) for x in lv.values]


def native_to_value(v: struct_pb2.Value, value: Any, where: str) -> None:
    if value is None:
        v.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, (int, float)):
        v.number_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, dict):
        native_to_struct(v.struct_value, value, where)
    elif isinstance(value, (list, tuple)):
        lv = v.list_value
        lv.SetInParent()
        for i, item in enumerate(value):
            native_to_value(lv.values.add(), item, f"{where}[{i}]")
    else:
        raise _fail(where, "a JSON value", value)


def native_to_struct(s: struct_pb2.Struct, value: Any, where: str) -> None:
    if not isinstance(value, dict):
        raise _fail(where, "an object", value)
    s.SetInParent()
    for k, item in value.items():
        if not isinstance(k, str):
            raise CodecError(f"{where}: object keys must be strings")
        native_to_value(s.fields[k], item, f"{where}.{k}")


def native_to_list(lv: struct_pb2.ListValue, value: Any, where: str) -> None:
    if not isinstance(value, (list, tuple)):
        raise _fail(where, "a list", value)
    lv.SetInParent()
    for i, item in enumerate(value):
        native_to_value(lv.values.add(), item, f"{where}[{i}]")


# -- scalars ----------------------------------------------------------------

def _scalar_in(field: FieldDescriptor) -> Callable[[Any, str], Any]:
    t = field.type
    if t in _INT_TYPES:
        def conv_int(value: Any, where: str) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(where, "an integer", value)
            if isinstance(value, float):
                if not value.is_integer():
                    raise CodecError(f"{where}: expected an integer, got {value!r}")
                return int(value)
            return value
        return conv_int
    if t in _FLOAT_TYPES:
        def conv_float(value: Any, where: str) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _fail(where, "a number", value)
            return value
        return conv_float
    if t == FieldDescriptor.TYPE_BOOL:
        def conv_bool(value: Any, where: str) -> Any:
            if isinstance(value, bool):
                return value
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise _fail(where, "a boolean", value)
        return conv_bool
    if t == FieldDescriptor.TYPE_STRING:
        def conv_str(value: Any, where: str) -> Any:
            if not isinstance(value, str):
                raise _fail(where, "a string", value)
            return value
        return conv_str
    if t == FieldDescriptor.TYPE_BYTES:
        def conv_bytes(value: Any, where: str) -> Any:
            if not isinstance(value, str):
                raise _fail(where, "a string", value)
            return value.encode("utf-8", "surrogateescape")
        return conv_bytes
    if t == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None

        def conv_enum(value: Any, where: str) -> Any:
            if isinstance(value, str) and value in enum.values_by_name:
                return enum.values_by_name[value].number
            if isinstance(value, int) and not isinstance(value, bool) and value in enum.values_by_number:
                return value
            raise CodecError(f"{where}: {value!r} is not a valid {enum.name}")
        return conv_enum
    raise TypeError(f"unsupported field type {t} of {field.full_name}")


def _scalar_out(field: FieldDescriptor) -> Callable[[Any], Any]:
    t = field.type
    if t in _FLOAT_TYPES:
        return plain_number
    if t == FieldDescriptor.TYPE_BYTES:
        return lambda b: b.decode("utf-8", "surrogateescape")
    return lambda x: x


# -- plans ----------------------------------------------------------------------

def _is_map(field: FieldDescriptor) -> bool:
    mt = field.message_type
    return bool(mt is not None and mt.GetOptions().map_entry)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@dataclass
class _FieldPlan:
    field: FieldDescriptor
    name: str          # attribute name on the message
    key: str           # key in a legacy JSON object
    presence: bool     # unset <-> null
    rest: bool         # legacy_rest collector
    set_in: Callable[[Message, Any, str], None]
    get_out: Callable[[Message], Any]


class MessagePlan:
    """How one message type travels in legacy JSON."""

    def __init__(self, desc: Descriptor, role: str) -> None:
        self.desc = desc
        self.role = role
        shape = desc.GetOptions().Extensions[legacy_pb2.legacy_shape]
        fields = [f for f in desc.fields]
        plain = [f for f in fields if not f.GetOptions().Extensions[legacy_pb2.legacy_rest]]
        if shape == legacy_pb2.LEGACY_SHAPE_UNSPECIFIED:
            if role == "request":
                shape = TUPLE
            elif not plain:
                shape = NULL
            elif role == "response" and len(plain) == 1:
                shape = UNWRAP
            else:
                shape = OBJECT
        if shape == UNWRAP and len(plain) != 1:
            raise TypeError(f"{desc.full_name}: UNWRAP needs exactly one field")
        self.shape = shape
        self.fields: list[_FieldPlan] = []
        self.rest: _FieldPlan | None = None
        self.by_key: dict[str, _FieldPlan] = {}
        for f in sorted(fields, key=lambda f: f.number):
            plan = _make_field_plan(f)
            if plan.rest:
                if f.message_type is None or f.message_type.full_name != _STRUCT:
                    raise TypeError(f"{f.full_name}: legacy_rest must be a google.protobuf.Struct")
                self.rest = plan
            else:
                self.fields.append(plan)
                self.by_key[plan.key] = plan

    # native -> message
    def fill(self, msg: Message, value: Any, where: str) -> None:
        shape = self.shape
        if shape == TUPLE:
            if not isinstance(value, (list, tuple)):
                raise _fail(where, f"a list of {len(self.fields)} items", value)
            if len(value) != len(self.fields):
                raise CodecError(
                    f"{where}: expected {len(self.fields)} items, got {len(value)}")
            for plan, item in zip(self.fields, value, strict=False):
                plan.set_in(msg, item, f"{where}[{plan.key}]")
        elif shape == OBJECT:
            if not isinstance(value, dict):
                raise _fail(where, "an object", value)
            rest: dict[str, Any] | None = None
            for key, item in value.items():
                found = self.by_key.get(key)
                if found is not None:
                    found.set_in(msg, item, f"{where}.{key}")
                elif self.rest is not None:
                    if rest is None:
                        rest = {}
                    rest[key] = item
            if rest and self.rest is not None:
                native_to_struct(getattr(msg, self.rest.name), rest, f"{where}")
        elif shape == UNWRAP:
            self.fields[0].set_in(msg, value, where)
        else:  # NULL
            if value is not None:
                raise _fail(where, "null", value)

    # message -> native
    def dump(self, msg: Message) -> Any:
        shape = self.shape
        if shape == TUPLE:
            return [plan.get_out(msg) for plan in self.fields]
        if shape == OBJECT:
            out: dict[str, Any] = {}
            for plan in self.fields:
                if plan.presence and not msg.HasField(plan.name):
                    continue
                out[plan.key] = plan.get_out(msg)
            if self.rest is not None and msg.HasField(self.rest.name):
                for k, v in struct_to_native(getattr(msg, self.rest.name)).items():
                    out.setdefault(k, v)
            return out
        if shape == UNWRAP:
            return self.fields[0].get_out(msg)
        return None


_PLANS: dict[tuple[str, str], MessagePlan] = {}


def plan_for(desc: Any, role: str = "nested") -> MessagePlan:
    key = (desc.full_name, role)
    plan = _PLANS.get(key)
    if plan is None:
        plan = MessagePlan(desc, role)
        _PLANS[key] = plan
    return plan


def _message_in(mt: Descriptor) -> Callable[[Message, Any, str], None]:
    """Fill an (already obtained) sub-message from a native value."""
    name = mt.full_name
    if name == _STRUCT:
        return lambda m, v, w: native_to_struct(m, v, w)  # type: ignore[arg-type]
    if name == _VALUE:
        return lambda m, v, w: native_to_value(m, v, w)  # type: ignore[arg-type]
    if name == _LIST_VALUE:
        return lambda m, v, w: native_to_list(m, v, w)  # type: ignore[arg-type]

    def fill(m: Message, v: Any, w: str) -> None:
        m.SetInParent()
        plan_for(mt).fill(m, v, w)
    return fill


def _message_out(mt: Descriptor) -> Callable[[Message], Any]:
    name = mt.full_name
    if name == _STRUCT:
        return struct_to_native  # type: ignore[return-value]
    if name == _VALUE:
        return value_to_native  # type: ignore[return-value]
    if name == _LIST_VALUE:
        return list_to_native  # type: ignore[return-value]
    return lambda m: plan_for(mt).dump(m)


def _make_field_plan(f: FieldDescriptor) -> _FieldPlan:
    opts = f.GetOptions()
    key = opts.Extensions[legacy_pb2.legacy_name] or f.name
    rest = bool(opts.Extensions[legacy_pb2.legacy_rest])
    name = f.name
    set_in: Callable[[Message, Any, str], None]
    get_out: Callable[[Message], Any]
    presence = False

    if _is_map(f):
        entry = f.message_type
        assert entry is not None
        key_f = entry.fields_by_name["key"]
        val_f = entry.fields_by_name["value"]
        key_in = _scalar_in(key_f)
        if val_f.message_type is not None:
            sub_in = _message_in(val_f.message_type)
            sub_out = _message_out(val_f.message_type)

            def set_map_msg(msg: Message, value: Any, where: str) -> None:
                if value is None:
                    return
                if not isinstance(value, dict):
                    raise _fail(where, "an object", value)
                container = getattr(msg, name)
                for k, item in value.items():
                    sub_in(container[key_in(k, where)], item, f"{where}.{k}")

            def get_map_msg(msg: Message) -> Any:
                return {k: sub_out(v) for k, v in getattr(msg, name).items()}
            set_in, get_out = set_map_msg, get_map_msg
        else:
            val_in = _scalar_in(val_f)
            val_out = _scalar_out(val_f)

            def set_map(msg: Message, value: Any, where: str) -> None:
                if value is None:
                    return
                if not isinstance(value, dict):
                    raise _fail(where, "an object", value)
                container = getattr(msg, name)
                for k, item in value.items():
                    container[key_in(k, where)] = val_in(item, f"{where}.{k}")

            def get_map(msg: Message) -> Any:
                return {k: val_out(v) for k, v in getattr(msg, name).items()}
            set_in, get_out = set_map, get_map
    elif _is_repeated(f):
        if f.message_type is not None:
            sub_in = _message_in(f.message_type)
            sub_out = _message_out(f.message_type)

            def set_rep_msg(msg: Message, value: Any, where: str) -> None:
                if value is None:
                    return
                if not isinstance(value, (list, tuple)):
                    raise _fail(where, "a list", value)
                container = getattr(msg, name)
                for i, item in enumerate(value):
                    sub_in(container.add(), item, f"{where}[{i}]")

            def get_rep_msg(msg: Message) -> Any:
                return [sub_out(v) for v in getattr(msg, name)]
            set_in, get_out = set_rep_msg, get_rep_msg
        else:
            item_in = _scalar_in(f)
            item_out = _scalar_out(f)

            def set_rep(msg: Message, value: Any, where: str) -> None:
                if value is None:
                    return
                if not isinstance(value, (list, tuple)):
                    raise _fail(where, "a list", value)
                getattr(msg, name).extend([item_in(x, f"{where}[{i}]") for i, x in enumerate(value)])

            def get_rep(msg: Message) -> Any:
                return [item_out(v) for v in getattr(msg, name)]
            set_in, get_out = set_rep, get_rep
    elif f.message_type is not None:
        presence = True
        sub_in = _message_in(f.message_type)
        sub_out = _message_out(f.message_type)
        is_value = f.message_type.full_name == _VALUE

        def set_msg(msg: Message, value: Any, where: str) -> None:
            if value is None and not is_value:
                return
            sub_in(getattr(msg, name), value, where)

        def get_msg(msg: Message) -> Any:
            if not msg.HasField(name):
                return None
            return sub_out(getattr(msg, name))
        set_in, get_out = set_msg, get_msg
    else:
        presence = bool(f.has_presence)
        conv_in = _scalar_in(f)
        conv_out = _scalar_out(f)
        if presence:
            def set_opt(msg: Message, value: Any, where: str) -> None:
                if value is None:
                    return
                setattr(msg, name, conv_in(value, where))

            def get_opt(msg: Message) -> Any:
                if not msg.HasField(name):
                    return None
                return conv_out(getattr(msg, name))
            set_in, get_out = set_opt, get_opt
        else:
            def set_plain(msg: Message, value: Any, where: str) -> None:
                if value is None:
                    raise CodecError(f"{where}: must not be null")
                setattr(msg, name, conv_in(value, where))

            def get_plain(msg: Message) -> Any:
                return conv_out(getattr(msg, name))
            set_in, get_out = set_plain, get_plain
    return _FieldPlan(field=f, name=name, key=key, presence=presence, rest=rest,
                      set_in=set_in, get_out=get_out)


# -- entry points -----------------------------------------------------------------

def from_native(cls: type[Message], value: Any, role: str = "nested", where: str = "value") -> Message:
    """Build a message of `cls` from a native legacy value."""
    msg = cls()
    plan_for(msg.DESCRIPTOR, role).fill(msg, value, where)
    return msg


def to_native(msg: Message, role: str = "nested") -> Any:
    """The native legacy value of a message."""
    return plan_for(msg.DESCRIPTOR, role).dump(msg)


def request_from_args(cls: type[Message], args: Any, procedure: str) -> Message:
    """The request message of `procedure` from its legacy body (positional list, or object)."""
    plan = plan_for(cls.DESCRIPTOR, "request")
    msg = cls()
    if plan.shape == TUPLE:
        if not isinstance(args, list):
            raise CodecError(
                f"{procedure} takes a JSON list of {len(plan.fields)} positional arguments, "
                f"got {_kind(args)}")
        if len(args) != len(plan.fields) and not (
                len(args) < len(plan.fields)
                and all(p.presence for p in plan.fields[len(args):])):
            # Trailing arguments that may be null may also be left out (the
            # Haskell master sends instance_info without hvparams).
            names = ", ".join(p.key for p in plan.fields) or "none"
            raise CodecError(
                f"{procedure} takes {len(plan.fields)} argument(s) ({names}), got {len(args)}")
        for i, (fplan, item) in enumerate(zip(plan.fields, args, strict=False)):
            fplan.set_in(msg, item, f"argument {i + 1} ({fplan.key}) of {procedure}")
        return msg
    plan.fill(msg, args, f"body of {procedure}")
    return msg


def args_from_request(msg: Message) -> list[Any]:
    """The native positional arguments carried by a request message."""
    plan = plan_for(msg.DESCRIPTOR, "request")
    if plan.shape == TUPLE:
        return [fplan.get_out(msg) for fplan in plan.fields]
    return [plan.dump(msg)]


def response_from_result(cls: type[Message], result: Any, procedure: str) -> Message:
    """The response message of `procedure` from a backend's native result."""
    msg = cls()
    plan_for(cls.DESCRIPTOR, "response").fill(msg, result, f"result of {procedure}")
    return msg


def result_from_response(msg: Message) -> Any:
    """The legacy payload (inside `[true, ...]`) of a response message."""
    return plan_for(msg.DESCRIPTOR, "response").dump(msg)
