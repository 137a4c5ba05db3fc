"""The one implementation behind both doors.

`NodeServicer.invoke` takes a request message of any node rpc, hands the
legacy arguments to the backend function registered for its procedure, and
returns the response message. The gRPC door wraps it in the generated
`*Servicer` classes; the legacy door (compat_jsonrpc) calls it in-process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Executor
from functools import partial
from typing import Any

import grpc
from google.protobuf.message import Message

from compat_jsonrpc import codec
from noded.api import Rpc, Service, services
from noded.context import NodeContext
from noded.errors import InvalidArguments, NotImplementedOnNode, RpcFail
from noded.registry import Procedure
from noded.tls import ClientCertPolicy

log = logging.getLogger(__name__)

#: Prefix of failures that are not expected by the backend (as Ganeti words them).
BACKEND_ERROR_PREFIX = "Error while executing backend function: "


class BackendError(Exception):
    """A procedure failed unexpectedly; the message says how."""


class NodeServicer:
    """Runs node procedures for either door."""

    def __init__(self, ctx: NodeContext, table: Mapping[str, Procedure],
                 executor: Executor | None = None) -> None:
        self.ctx = ctx
        self.table = dict(table)
        self.executor = executor

    async def invoke(self, rpc: Rpc, request: Message) -> Message:
        """Run `rpc`. Raises RpcFail for expected failures, BackendError for the rest."""
        proc = self.table.get(rpc.procedure)
        if proc is None:
            raise NotImplementedOnNode(rpc.procedure)
        args = codec.args_from_request(request)
        try:
            if proc.blocking:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self.executor, partial(proc.func, self.ctx, *args))
            else:
                result = proc.func(self.ctx, *args)
                if inspect.isawaitable(result):
                    result = await result
        except RpcFail:
            raise
        except Exception as err:
            log.exception("procedure %s failed", rpc.procedure)
            raise BackendError(BACKEND_ERROR_PREFIX + str(err)) from err
        try:
            return codec.response_from_result(rpc.response_cls, result, rpc.procedure)
        except codec.CodecError as err:
            log.error("procedure %s returned a result that does not fit %s: %s",
                      rpc.procedure, rpc.response_cls.DESCRIPTOR.full_name, err)
            raise BackendError(BACKEND_ERROR_PREFIX + str(err)) from err


GrpcMethod = Callable[[Any, Message, grpc.aio.ServicerContext], Awaitable[Message]]


def _grpc_method(node: NodeServicer, rpc: Rpc, policy: ClientCertPolicy | None,
                 slots: asyncio.Semaphore | None) -> GrpcMethod:
    async def method(_self: Any, request: Message, context: grpc.aio.ServicerContext) -> Message:
        if slots is None:
            return await serve(request, context)
        async with slots:  # beyond --max-clients, calls wait; none is refused
            return await serve(request, context)

    async def serve(request: Message, context: grpc.aio.ServicerContext) -> Message:
        if policy is not None:
            certs = context.auth_context().get("x509_pem_cert")
            reason = policy.check_pem(certs[0] if certs else None)
            if reason is not None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)
        try:
            return await node.invoke(rpc, request)
        except NotImplementedOnNode as err:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, str(err))
        except InvalidArguments as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except RpcFail as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except BackendError as err:
            await context.abort(grpc.StatusCode.INTERNAL, str(err))
        raise AssertionError("unreachable")  # context.abort raises
    method.__name__ = rpc.name
    return method


def grpc_servicer(node: NodeServicer, service: Service, policy: ClientCertPolicy | None,
                  slots: asyncio.Semaphore | None = None) -> Any:
    """An instance of the generated `<Service>Servicer` class whose methods call `node`."""
    base = getattr(service.pb2_grpc, f"{service.descriptor.name}Servicer")
    methods = {rpc.name: _grpc_method(node, rpc, policy, slots) for rpc in service.rpcs}
    cls = type(f"Node{service.descriptor.name}", (base,), methods)
    return cls()


def add_to_grpc_server(node: NodeServicer, server: grpc.aio.Server,
                       policy: ClientCertPolicy | None, slots: asyncio.Semaphore | None = None) -> list[str]:
    """Register every node service on `server`; returns the full service names."""
    names = []
    for service in services():
        add = getattr(service.pb2_grpc, f"add_{service.descriptor.name}Servicer_to_server")
        add(grpc_servicer(node, service, policy, slots), server)
        names.append(service.descriptor.full_name)
    return names
