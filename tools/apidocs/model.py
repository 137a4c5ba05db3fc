"""The documentation model: packages, services, rpcs, messages, enums and extensions.

Built from the FileDescriptorProtos of a CodeGeneratorRequest, with the
comments and the legacy options (proto/ganeti/common/v1/legacy.proto) read
into plain values, so that the renderers only lay text out. Everything is
ordered deterministically: files, messages, enums and extensions by name,
services by name, rpcs and fields in declaration order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

from generated.ganeti.common.v1 import legacy_pb2

from . import comments as c

FDP = descriptor_pb2.FieldDescriptorProto

_SCALARS: dict[int, str] = {
    FDP.TYPE_DOUBLE: "double", FDP.TYPE_FLOAT: "float", FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64", FDP.TYPE_INT32: "int32", FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32", FDP.TYPE_BOOL: "bool", FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes", FDP.TYPE_UINT32: "uint32", FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64", FDP.TYPE_SINT32: "sint32", FDP.TYPE_SINT64: "sint64",
}

# Well-known types documented on the protobuf site (anchor = kebab-case name).
_WKT_URL = "https://protobuf.dev/reference/protobuf/google.protobuf/#"
_WKT = {
    "Any", "BoolValue", "BytesValue", "DoubleValue", "Duration", "Empty", "FieldMask", "FloatValue",
    "Int32Value", "Int64Value", "ListValue", "NullValue", "StringValue", "Struct", "Timestamp",
    "UInt32Value", "UInt64Value", "Value",
}


@dataclass(frozen=True)
class TypeLink:
    """A type name as shown, and where it is documented (page package + anchor, or a URL)."""
    name: str
    package: str | None = None
    anchor: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class FieldType:
    """A field's type: `value`, or `map<key, value>` when `key` is set."""
    value: TypeLink
    key: TypeLink | None = None


@dataclass(frozen=True)
class Field:
    name: str
    number: int
    type: FieldType
    label: str            # "optional", "repeated", "map", "oneof <name>" or ""
    legacy_name: str
    legacy_rest: bool
    comment: str


@dataclass(frozen=True)
class Message:
    full_name: str
    name: str             # relative to the package, "Outer.Inner" for nested messages
    file: str
    comment: str
    legacy_shape: str     # "TUPLE", "OBJECT", ... or "" when unspecified
    legacy_shape_comment: str
    default_shape: str    # what an unspecified shape means for this message's role
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class EnumValue:
    name: str
    number: int
    comment: str


@dataclass(frozen=True)
class Enum:
    full_name: str
    name: str
    file: str
    comment: str
    values: tuple[EnumValue, ...]


@dataclass(frozen=True)
class Legacy:
    """The `(ganeti.common.v1.legacy)` option of an rpc."""
    name: str
    timeout: str          # "URGENT", ... or "" when unspecified
    timeout_comment: str  # the LegacyTimeout value's comment, e.g. "60 seconds."
    accept_offline_node: bool


@dataclass(frozen=True)
class Rpc:
    name: str
    full_name: str
    comment: str
    request: TypeLink
    response: TypeLink
    client_streaming: bool
    server_streaming: bool
    legacy: Legacy | None


@dataclass(frozen=True)
class Service:
    name: str
    full_name: str
    file: str
    comment: str
    rpcs: tuple[Rpc, ...]


@dataclass(frozen=True)
class Extension:
    name: str
    full_name: str
    file: str
    extendee: str
    number: int
    type: FieldType
    label: str
    comment: str


@dataclass(frozen=True)
class ProtoFile:
    name: str
    comment: str


@dataclass
class Package:
    name: str
    files: list[ProtoFile] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    enums: list[Enum] = field(default_factory=list)
    extensions: list[Extension] = field(default_factory=list)

    @property
    def rpc_count(self) -> int:
        return sum(len(s.rpcs) for s in self.services)


def _strip_prefix(name: str, prefix: str) -> str:
    return name.removeprefix(prefix)


class _Builder:
    """Walks the descriptors once to index types, then builds the model."""

    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto], documented: set[str]) -> None:
        self._files = files
        self._documented = documented
        # full name (no leading dot) -> (package, descriptor)
        self._messages: dict[str, tuple[str, descriptor_pb2.DescriptorProto]] = {}
        self._enums: dict[str, tuple[str, descriptor_pb2.EnumDescriptorProto]] = {}
        self._enum_comments: dict[str, str] = {}   # full enum value name -> comment
        self._requests: set[str] = set()
        self._responses: set[str] = set()
        for fd in files:
            comments = c.CommentIndex(fd)
            prefix = f"{fd.package}." if fd.package else ""
            for i, msg in enumerate(fd.message_type):
                self._index_message(fd, comments, prefix, msg, (c.FILE_MESSAGE, i))
            for i, enum in enumerate(fd.enum_type):
                self._index_enum(fd, comments, prefix, enum, (c.FILE_ENUM, i))
            for svc in fd.service:
                for m in svc.method:
                    self._requests.add(m.input_type.lstrip("."))
                    self._responses.add(m.output_type.lstrip("."))

    def _index_message(self, fd: descriptor_pb2.FileDescriptorProto, comments: c.CommentIndex, prefix: str,
                       msg: descriptor_pb2.DescriptorProto, path: c.Path) -> None:
        full = prefix + msg.name
        self._messages[full] = (fd.package, msg)
        for i, nested in enumerate(msg.nested_type):
            self._index_message(fd, comments, f"{full}.", nested, (*path, c.MESSAGE_NESTED, i))
        for i, enum in enumerate(msg.enum_type):
            self._index_enum(fd, comments, f"{full}.", enum, (*path, c.MESSAGE_ENUM, i))

    def _index_enum(self, fd: descriptor_pb2.FileDescriptorProto, comments: c.CommentIndex, prefix: str,
                    enum: descriptor_pb2.EnumDescriptorProto, path: c.Path) -> None:
        full = prefix + enum.name
        self._enums[full] = (fd.package, enum)
        for i, value in enumerate(enum.value):
            self._enum_comments[f"{full}.{value.name}"] = comments.get((*path, c.ENUM_VALUE, i))

    # -- types ---------------------------------------------------------------

    def link(self, type_name: str) -> TypeLink:
        full = type_name.lstrip(".")
        entry = self._messages.get(full) or self._enums.get(full)
        if entry is not None and entry[0] in self._documented:
            package = entry[0]
            return TypeLink(_strip_prefix(full, f"{package}.") if package else full, package, full)
        if full.startswith("google.protobuf.") and full.rsplit(".", 1)[1] in _WKT:
            short = full.rsplit(".", 1)[1]
            return TypeLink(full, url=_WKT_URL + re.sub(r"(?<!^)(?=[A-Z])", "-", short).lower())
        return TypeLink(full)

    def field_type(self, f: descriptor_pb2.FieldDescriptorProto) -> FieldType:
        if f.type in (FDP.TYPE_MESSAGE, FDP.TYPE_GROUP):
            entry = self._messages.get(f.type_name.lstrip("."))
            if entry is not None and entry[1].options.map_entry:
                key, value = entry[1].field[0], entry[1].field[1]
                return FieldType(self.field_type(value).value, self.field_type(key).value)
            return FieldType(self.link(f.type_name))
        if f.type == FDP.TYPE_ENUM:
            return FieldType(self.link(f.type_name))
        return FieldType(TypeLink(_SCALARS.get(f.type, f"type {f.type}")))

    def label(self, f: descriptor_pb2.FieldDescriptorProto,
              msg: descriptor_pb2.DescriptorProto | None) -> str:
        if f.label == FDP.LABEL_REPEATED:
            return "map" if self.field_type(f).key is not None else "repeated"
        if f.proto3_optional:
            return "optional"
        if f.label == FDP.LABEL_REQUIRED:
            return "required"
        if msg is not None and f.HasField("oneof_index"):
            return f"oneof {msg.oneof_decl[f.oneof_index].name}"
        return ""

    def enum_comment(self, enum_full: str, value: int) -> tuple[str, str]:
        """(short value name, value comment) of a legacy enum value; ("", "") for 0."""
        entry = self._enums.get(enum_full)
        if value == 0 or entry is None:
            return "", ""
        for v in entry[1].value:
            if v.number == value:
                prefix = re.sub(r"(?<!^)(?=[A-Z])", "_", enum_full.rsplit(".", 1)[1]).upper() + "_"
                return _strip_prefix(v.name, prefix), self._enum_comments.get(f"{enum_full}.{v.name}", "")
        return str(value), ""

    # -- model ---------------------------------------------------------------

    def build(self, to_generate: Iterable[str]) -> list[Package]:
        packages: dict[str, Package] = {}
        by_name = {fd.name: fd for fd in self._files}
        for name in sorted(to_generate):
            fd = by_name[name]
            pkg = packages.setdefault(fd.package, Package(fd.package))
            comments = c.CommentIndex(fd)
            pkg.files.append(ProtoFile(fd.name, comments.header))
            prefix = f"{fd.package}." if fd.package else ""
            for i, msg in enumerate(fd.message_type):
                self._add_message(pkg, fd, comments, prefix, msg, (c.FILE_MESSAGE, i))
            for i, enum in enumerate(fd.enum_type):
                pkg.enums.append(self._enum(fd, comments, prefix, enum, (c.FILE_ENUM, i)))
            for i, ext in enumerate(fd.extension):
                pkg.extensions.append(self._extension(fd, comments, prefix, ext, (c.FILE_EXTENSION, i)))
            for i, svc in enumerate(fd.service):
                pkg.services.append(self._service(fd, comments, prefix, svc, (c.FILE_SERVICE, i)))
        for pkg in packages.values():
            pkg.services.sort(key=lambda s: s.full_name)
            pkg.messages.sort(key=lambda m: m.full_name)
            pkg.enums.sort(key=lambda e: e.full_name)
            pkg.extensions.sort(key=lambda e: (e.extendee, e.number))
        return [packages[k] for k in sorted(packages)]

    def _add_message(self, pkg: Package, fd: descriptor_pb2.FileDescriptorProto, comments: c.CommentIndex,
                     prefix: str, msg: descriptor_pb2.DescriptorProto, path: c.Path) -> None:
        if msg.options.map_entry:
            return
        full = prefix + msg.name
        shape_value = msg.options.Extensions[legacy_pb2.legacy_shape]
        shape, shape_comment = self.enum_comment("ganeti.common.v1.LegacyShape", shape_value)
        fields = tuple(
            Field(
                name=f.name, number=f.number, type=self.field_type(f), label=self.label(f, msg),
                legacy_name=f.options.Extensions[legacy_pb2.legacy_name],
                legacy_rest=f.options.Extensions[legacy_pb2.legacy_rest],
                comment=comments.get((*path, c.MESSAGE_FIELD, i)),
            )
            for i, f in enumerate(msg.field)
        )
        pkg.messages.append(Message(
            full_name=full, name=_strip_prefix(full, f"{fd.package}.") if fd.package else full, file=fd.name,
            comment=comments.get(path), legacy_shape=shape, legacy_shape_comment=shape_comment,
            default_shape=self._default_shape(full, len(fields)), fields=fields,
        ))
        for i, nested in enumerate(msg.nested_type):
            self._add_message(pkg, fd, comments, f"{full}.", nested, (*path, c.MESSAGE_NESTED, i))
        for i, enum in enumerate(msg.enum_type):
            pkg.enums.append(self._enum(fd, comments, f"{full}.", enum, (*path, c.MESSAGE_ENUM, i)))
        for i, ext in enumerate(msg.extension):
            ext_path = (*path, c.MESSAGE_EXTENSION, i)
            pkg.extensions.append(self._extension(fd, comments, f"{full}.", ext, ext_path))

    def _default_shape(self, full: str, n_fields: int) -> str:
        """What an unspecified legacy_shape means, by the rules in legacy.proto's header."""
        roles = []
        if full in self._requests:
            roles.append("as a request: the JSON array of positional arguments")
        if full in self._responses:
            payload = ("null" if n_fields == 0 else "the value of its single field" if n_fields == 1
                       else "a JSON object")
            roles.append(f"as a response: {payload}")
        if not roles:
            roles.append("nested: a JSON object keyed by field name")
        return "; ".join(roles)

    def _enum(self, fd: descriptor_pb2.FileDescriptorProto, comments: c.CommentIndex, prefix: str,
              enum: descriptor_pb2.EnumDescriptorProto, path: c.Path) -> Enum:
        full = prefix + enum.name
        values = tuple(EnumValue(v.name, v.number, comments.get((*path, c.ENUM_VALUE, i)))
                       for i, v in enumerate(enum.value))
        name = _strip_prefix(full, f"{fd.package}.") if fd.package else full
        return Enum(full, name, fd.name, comments.get(path), values)

    def _extension(self, fd: descriptor_pb2.FileDescriptorProto, comments: c.CommentIndex, prefix: str,
                   ext: descriptor_pb2.FieldDescriptorProto, path: c.Path) -> Extension:
        return Extension(
            name=ext.name, full_name=prefix + ext.name, file=fd.name, extendee=ext.extendee.lstrip("."),
            number=ext.number, type=self.field_type(ext), label=self.label(ext, None),
            comment=comments.get(path),
        )

    def _service(self, fd: descriptor_pb2.FileDescriptorProto, comments: c.CommentIndex, prefix: str,
                 svc: descriptor_pb2.ServiceDescriptorProto, path: c.Path) -> Service:
        full = prefix + svc.name
        rpcs = []
        for i, m in enumerate(svc.method):
            legacy: Legacy | None = None
            if m.options.HasExtension(legacy_pb2.legacy):
                opt = m.options.Extensions[legacy_pb2.legacy]
                timeout, timeout_comment = self.enum_comment("ganeti.common.v1.LegacyTimeout", opt.timeout)
                legacy = Legacy(opt.name, timeout, timeout_comment, opt.accept_offline_node)
            rpcs.append(Rpc(
                name=m.name, full_name=f"{full}.{m.name}", comment=comments.get((*path, c.SERVICE_METHOD, i)),
                request=self.link(m.input_type), response=self.link(m.output_type),
                client_streaming=m.client_streaming, server_streaming=m.server_streaming, legacy=legacy,
            ))
        return Service(svc.name, full, fd.name, comments.get(path), tuple(rpcs))


def build(files: Sequence[descriptor_pb2.FileDescriptorProto], to_generate: Sequence[str]) -> list[Package]:
    """The documentation model of the packages of `to_generate` (files named as protoc names them)."""
    by_name = {fd.name: fd for fd in files}
    missing = [n for n in to_generate if n not in by_name]
    if missing:
        raise ValueError(f"no descriptor for {', '.join(missing)} in the request")
    unpackaged = [n for n in to_generate if not by_name[n].package]
    if unpackaged:
        raise ValueError(f"{', '.join(unpackaged)}: no `package` statement; every documented file needs one "
                         "(its package names its page)")
    documented = {by_name[n].package for n in to_generate}
    return _Builder(files, documented).build(to_generate)


def is_luxi(rpc: Rpc) -> bool:
    """Whether the rpc's legacy twin is a LUXI method of the master (not a node procedure)."""
    return rpc.full_name.startswith("ganeti.master.")
