"""The master API over gRPC (ganeti.master.v1): the same handler methods as LUXI, through the codec.

Every rpc whose ``(ganeti.common.v1.legacy)`` option names a LUXI method is
served generically: request message -> the LUXI positional arguments
(`compat_jsonrpc.codec.args_from_request`) -> the LUXI argument checks
(`masterd.luxi.methods.validate_args`) -> the LUXI handler's method (the
very coroutine the LUXI server awaits) -> the native result -> the response
message (`codec.response_from_result`). The two rpcs without a LUXI twin are
written here on the job engine: GetJob (every job query field of one job,
live or archived) and WatchJob (a stream of status and log updates woken by
the engine's change notifications, ending with the final status).

Errors (jobs.proto header): a Ganeti error becomes a gRPC status whose
message is the error text and whose trailing metadata ``ganeti-error``
holds the LUXI encoding (``["OpPrereqError", ["msg", "unknown_entity"]]``)
as JSON, so that a client can tell the classes apart; see `status_for`.

Interface::

    api = MasterApi(handler, engine, policy)   # policy: .check_pem(pem) -> None | reason
    names = api.add_to_server(server)           # registers the three services; their full names
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from compat_jsonrpc import codec
from generated.ganeti.common.v1 import legacy_pb2
from generated.ganeti.master.v1 import cluster_pb2, jobs_pb2, objects_pb2, query_pb2
from masterd.engine import JobEngine
from masterd.jqueue.model import FINALIZED_STATUSES
from masterd.luxi import methods
from masterd.luxi.protocol import GanetiError, JobLost, LuxiError, RequestParseError
from masterd.luxi_handler import LuxiHandler, as_luxi_error
from masterd.query.errors import QueryError
from masterd.query.fields import FieldRegistry
from masterd.query.jobs import job_field_values, job_status
from noded.errors import InvalidArguments

log = logging.getLogger("masterd.grpc")

#: The generated modules of ganeti.master.v1 that declare services.
SERVICE_MODULES: tuple[ModuleType, ...] = (jobs_pb2, query_pb2, cluster_pb2)
#: Trailing metadata key carrying the LUXI encoding of a Ganeti error.
ERROR_METADATA_KEY = "ganeti-error"
#: How long WatchJob waits for a change before looking again (no message is sent then).
WATCH_POLL_CAP = 89.0

_OPPREREQ_CODES = {
    "unknown_entity": grpc.StatusCode.NOT_FOUND,
    "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "wrong_state": grpc.StatusCode.FAILED_PRECONDITION,
    "environment_error": grpc.StatusCode.FAILED_PRECONDITION,
    "insufficient_resources": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "temp_insufficient_resources": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "internal_error": grpc.StatusCode.INTERNAL,
}
_CLASS_CODES = {
    "ParameterError": grpc.StatusCode.INVALID_ARGUMENT,
    "TypeEnforcementError": grpc.StatusCode.INVALID_ARGUMENT,
    "QueryFilterParseError": grpc.StatusCode.INVALID_ARGUMENT,
    "JobQueueDrainError": grpc.StatusCode.FAILED_PRECONDITION,
    "JobQueueFull": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "JobLost": grpc.StatusCode.NOT_FOUND,
    "ConfigurationError": grpc.StatusCode.INTERNAL,
    "ProgrammerError": grpc.StatusCode.INTERNAL,
}


UnaryMethod = Callable[[Any, Message, grpc.aio.ServicerContext], Awaitable[Message]]


class CertificatePolicy(Protocol):
    def check_pem(self, pem: bytes | None) -> str | None: ...


class JobNotFound(GanetiError):
    """WatchJob/GetJob of a job that is neither live nor archived (gRPC NOT_FOUND)."""

    ganeti_class = "JobLost"


def error_text(err: LuxiError) -> str:
    """The human text of a LUXI error (its first argument, without the class name)."""
    if isinstance(err, RequestParseError):
        return err.detail
    args = list(err.args)
    if args and isinstance(args[0], str):
        return args[0]
    return str(err)


def status_for(err: LuxiError) -> grpc.StatusCode:
    """The gRPC status of a Ganeti error, following the jobs.proto header."""
    if isinstance(err, RequestParseError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if not isinstance(err, GanetiError):
        return grpc.StatusCode.UNKNOWN
    if err.name == "OpPrereqError":
        ecode = err.args[1] if len(err.args) > 1 else None
        return _OPPREREQ_CODES.get(str(ecode), grpc.StatusCode.INVALID_ARGUMENT)
    if err.name == "GenericError":
        text = error_text(err)
        if text == "Queue drained":
            return grpc.StatusCode.FAILED_PRECONDITION
        if text.endswith("is not implemented by this server"):
            return grpc.StatusCode.UNIMPLEMENTED
        return grpc.StatusCode.UNKNOWN
    return _CLASS_CODES.get(err.name, grpc.StatusCode.UNKNOWN)


@dataclass(frozen=True)
class MasterRpc:
    """One rpc of ganeti.master.v1; `luxi_method` is None for the gRPC-only ones."""

    service: ServiceDescriptor
    method: MethodDescriptor
    request_cls: type[Message]
    response_cls: type[Message]
    luxi_method: str | None

    @property
    def name(self) -> str:
        return str(self.method.name)


@functools.cache
def master_rpcs() -> dict[str, tuple[ModuleType, tuple[MasterRpc, ...]]]:
    """Service name -> (its pb2_grpc module, its rpcs), from the descriptors."""
    out: dict[str, tuple[ModuleType, tuple[MasterRpc, ...]]] = {}
    for pb2 in SERVICE_MODULES:
        pb2_grpc = __import__(f"{pb2.__name__}_grpc", fromlist=["_"])
        for sdesc in pb2.DESCRIPTOR.services_by_name.values():
            rpcs = []
            for m in sdesc.methods:
                opts = m.GetOptions()
                legacy = (opts.Extensions[legacy_pb2.legacy].name
                          if opts.HasExtension(legacy_pb2.legacy) else None)
                if legacy is not None and legacy not in methods.METHODS:
                    raise TypeError(f"{m.full_name} names LUXI method {legacy}, which does not exist")
                rpcs.append(MasterRpc(sdesc, m, GetMessageClass(m.input_type), GetMessageClass(m.output_type),
                                      legacy or None))
            out[sdesc.name] = (pb2_grpc, tuple(rpcs))
    return out


def luxi_args(method: str, request: Message) -> list[Any]:
    """The validated LUXI arguments carried by a request (unset optional trailing ones left out)."""
    args = codec.args_from_request(request)
    spec = methods.method_spec(method)
    while args and args[-1] is None and len(args) <= len(spec.params) and spec.params[len(args) - 1].optional:
        args.pop()
    return methods.validate_args(method, args)


@functools.cache
def job_field_names() -> tuple[str, ...]:
    return tuple(FieldRegistry.load().fields("job"))


def job_message(job_id: int, data: dict[str, Any], archived: bool) -> objects_pb2.Job:
    """Every job query field of one job, as a Job message."""
    names = job_field_names()
    values = job_field_values(job_id, data, names, archived)
    msg = codec.from_native(objects_pb2.Job, dict(zip(names, values, strict=True)), where="job")
    assert isinstance(msg, objects_pb2.Job)
    return msg


def _log_entry(value: Any) -> objects_pb2.LogEntry:
    msg = codec.from_native(objects_pb2.LogEntry, value, where="log entry")
    assert isinstance(msg, objects_pb2.LogEntry)
    return msg


def _log_entries(data: dict[str, Any], after: int) -> list[Any]:
    return [e for op in data.get("ops") or [] for e in (op.get("log") or []) if e[0] > after]


class MasterApi:
    """The servicers of ganeti.master.v1 over one LUXI handler and its engine."""

    def __init__(self, handler: LuxiHandler, engine: JobEngine, policy: CertificatePolicy | None) -> None:
        self.handler = handler
        self.engine = engine
        self.policy = policy

    # -- the gRPC-only rpcs ------------------------------------------------------------------
    async def _load(self, job_id: int) -> tuple[dict[str, Any], bool]:
        found = await asyncio.to_thread(self.engine.job_source.load_job, job_id)
        if found is None:
            raise JobNotFound(f"Job {job_id} not found (neither in the queue nor in the archive)")
        return found

    async def get_job(self, request: jobs_pb2.GetJobRequest) -> jobs_pb2.GetJobResponse:
        data, archived = await self._load(request.job_id)
        return jobs_pb2.GetJobResponse(job=job_message(request.job_id, data, archived))

    async def watch_job(self, request: jobs_pb2.WatchJobRequest) -> AsyncIterator[jobs_pb2.WatchJobResponse]:
        """Updates of one job: at once, then at each status change or new log entry, until final."""
        job_id = request.job_id
        after = request.after_log_serial if request.HasField("after_log_serial") else -1
        data, archived = await self._load(job_id)
        previous: str | None = None
        while True:
            status = job_status(data)
            entries = _log_entries(data, after)
            final = status in FINALIZED_STATUSES
            if previous is None or entries or status != previous or final:
                update = jobs_pb2.WatchJobResponse(status=status)
                update.log_entries.extend(_log_entry(entry) for entry in entries)
                if final:
                    update.job.CopyFrom(job_message(job_id, data, archived))
                yield update
            if final:
                return
            previous = status
            after = max([after, *(e[0] for e in entries)])
            with contextlib.suppress(JobLost):  # archived meanwhile: read it from the archive
                # Returns at once when the published job differs from what was sent; else it
                # sleeps on the engine's change notification (no polling).
                await self.engine.wait_for_change(job_id, ["status"], [status], after, WATCH_POLL_CAP)
            data, archived = await self._load(job_id)

    # -- plumbing ------------------------------------------------------------------------------
    async def _admit(self, context: grpc.aio.ServicerContext) -> None:
        if self.policy is None:
            return
        certs = context.auth_context().get("x509_pem_cert")
        reason = self.policy.check_pem(certs[0] if certs else None)
        if reason is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    @staticmethod
    async def _fail(context: grpc.aio.ServicerContext, err: Exception) -> None:
        if isinstance(err, QueryError):
            err = as_luxi_error(err)
        if isinstance(err, InvalidArguments):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        if isinstance(err, LuxiError):
            context.set_trailing_metadata(((ERROR_METADATA_KEY, json.dumps(err.encode())),))
            await context.abort(status_for(err), error_text(err))
        log.exception("gRPC call failed unexpectedly", exc_info=err)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(err).__name__}: {err}")

    def _unary(self, rpc: MasterRpc) -> UnaryMethod:
        luxi_method = rpc.luxi_method

        async def call(request: Message) -> Message:
            if luxi_method is None:
                return await self.get_job(request)  # type: ignore[arg-type]
            args = luxi_args(luxi_method, request)
            result = await getattr(self.handler, methods.METHODS[luxi_method].handler_attr)(*args)
            return codec.response_from_result(rpc.response_cls, result, luxi_method)

        async def method(_self: Any, request: Message, context: grpc.aio.ServicerContext) -> Message:
            await self._admit(context)
            try:
                return await call(request)
            except Exception as err:  # every failure becomes a status
                await self._fail(context, err)
            raise AssertionError("unreachable")  # context.abort raises

        method.__name__ = rpc.name
        return method

    def _stream(self, rpc: MasterRpc) -> Callable[..., AsyncIterator[Message]]:
        async def method(_self: Any, request: jobs_pb2.WatchJobRequest,
                         context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            await self._admit(context)
            try:
                async for update in self.watch_job(request):
                    yield update
            except Exception as err:  # every failure becomes a status
                await self._fail(context, err)

        method.__name__ = rpc.name
        return method

    def servicer(self, service: str) -> Any:
        """An instance of the generated `<service>Servicer` whose methods call this API."""
        pb2_grpc, rpcs = master_rpcs()[service]
        handlers: dict[str, Any] = {}
        for rpc in rpcs:
            if rpc.method.server_streaming:
                if rpc.name != "WatchJob":
                    raise TypeError(f"no implementation for the streaming rpc {rpc.method.full_name}")
                handlers[rpc.name] = self._stream(rpc)
            elif rpc.luxi_method is None and rpc.name != "GetJob":
                raise TypeError(f"{rpc.method.full_name} has no LUXI twin and no implementation here")
            else:
                handlers[rpc.name] = self._unary(rpc)
        base = getattr(pb2_grpc, f"{service}Servicer")
        return type(f"Master{service}", (base,), handlers)()

    def add_to_server(self, server: grpc.aio.Server) -> list[str]:
        """Register every master service on `server`; returns their full names."""
        names = []
        for service, (pb2_grpc, rpcs) in master_rpcs().items():
            getattr(pb2_grpc, f"add_{service}Servicer_to_server")(self.servicer(service), server)
            names.append(str(rpcs[0].service.full_name))
        return names
