"""The node API as data: every rpc of ganeti.node.v1 and the legacy procedure it answers to.

Read from the generated descriptors (proto/ is the single source of truth),
like Ganeti's rpc_defs.py table: the servicer, the gRPC door and the legacy
door are all derived from this list.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

import generated.ganeti.node.v1 as node_v1_pkg
from generated.ganeti.common.v1 import legacy_pb2

PACKAGE = "ganeti.node.v1"


@dataclass(frozen=True)
class Rpc:
    """One rpc of the node API."""

    procedure: str                 # legacy procedure name, e.g. "version"
    service: ServiceDescriptor
    method: MethodDescriptor
    request_cls: type[Message]
    response_cls: type[Message]
    timeout: int                   # LegacyTimeout value
    accept_offline_node: bool

    @property
    def name(self) -> str:
        return str(self.method.name)

    @property
    def path(self) -> str:
        """The gRPC method path, e.g. /ganeti.node.v1.ClusterService/Version."""
        return f"/{self.service.full_name}/{self.method.name}"


@dataclass(frozen=True)
class Service:
    """One gRPC service with its generated modules."""

    descriptor: ServiceDescriptor
    pb2: ModuleType
    pb2_grpc: ModuleType
    rpcs: tuple[Rpc, ...]


def _modules() -> list[tuple[ModuleType, ModuleType]]:
    found = []
    for info in sorted(pkgutil.iter_modules(node_v1_pkg.__path__), key=lambda i: i.name):
        if info.name.endswith("_pb2"):
            pb2 = importlib.import_module(f"{node_v1_pkg.__name__}.{info.name}")
            pb2_grpc = importlib.import_module(f"{node_v1_pkg.__name__}.{info.name}_grpc")
            found.append((pb2, pb2_grpc))
    return found


@cache
def services() -> tuple[Service, ...]:
    """Every service of ganeti.node.v1, in file and declaration order."""
    result = []
    for pb2, pb2_grpc in _modules():
        for sdesc in pb2.DESCRIPTOR.services_by_name.values():
            rpcs = []
            for m in sdesc.methods:
                opts = m.GetOptions()
                if not opts.HasExtension(legacy_pb2.legacy):
                    raise TypeError(f"{m.full_name} has no (ganeti.common.v1.legacy) option")
                legacy = opts.Extensions[legacy_pb2.legacy]
                rpcs.append(Rpc(
                    procedure=legacy.name, service=sdesc, method=m,
                    request_cls=GetMessageClass(m.input_type),
                    response_cls=GetMessageClass(m.output_type),
                    timeout=legacy.timeout,
                    accept_offline_node=legacy.accept_offline_node,
                ))
            result.append(Service(descriptor=sdesc, pb2=pb2, pb2_grpc=pb2_grpc, rpcs=tuple(rpcs)))
    return tuple(result)


@cache
def rpcs_by_procedure() -> dict[str, Rpc]:
    """Legacy procedure name -> rpc. Procedure names are unique."""
    table: dict[str, Rpc] = {}
    for svc in services():
        for rpc in svc.rpcs:
            if rpc.procedure in table:
                raise TypeError(f"legacy procedure {rpc.procedure} is declared twice")
            table[rpc.procedure] = rpc
    return table
