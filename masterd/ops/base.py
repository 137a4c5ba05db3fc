"""What an opcode implementation is and what the engine gives it.

An implementation is a subclass of `Operation` registered for one OP_ID
(masterd.ops.REGISTRY). The engine, for each opcode of a job:

1. builds it: ``impl = cls(op_input, ctx)`` (op_input is the validated opcode
   dict, defaults filled in);
2. asks ``impl.locks()`` for the locks it needs besides the Big Ganeti Lock
   (Ganeti's ExpandNames: a list of ``(Level, names | ALL_SET, shared)``;
   raising `OpPrereqError` here fails the opcode before any lock is taken);
   the BGL is taken shared, or exclusive when ``req_bgl`` is true (REQ_BGL);
3. takes the locks in level order (the job is `waiting` meanwhile), marks the
   opcode running, and awaits ``impl.exec()``; its return value is the
   opcode's result (a JSON value). Errors are raised as
   `masterd.luxi.protocol.GanetiError` subclasses (OpPrereqError,
   OpExecError, GanetiError("TagError", msg)...) and stored encoded
   (``[class, [args]]``); any other exception becomes OpExecError(str).

`OpContext` carries the job id, the opcode index, the paths, the node RPC
client, the configuration (masterd.confmgr.ConfigManager: read `current`,
change through ``async with ctx.config.change() as cfg``) and the feedback
channel: ``await ctx.log(msg)`` (Ganeti's Log /
Feedback, an ``ELOG_MESSAGE`` entry, or any log type), ``await
ctx.log_info(fmt, *args)`` (LogInfo: " - INFO: ..."). Each entry is written
to the job file and reaches WaitForJobChange before `log` returns.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from masterd.jqueue.model import ELOG_MESSAGE
from masterd.locking import Level, _AllSet
from noded.paths import Paths

if TYPE_CHECKING:
    from masterd.confmgr import ConfigManager
    from masterd.rpc import NodeRpcClient

LockRequest = tuple[Level, Iterable[str] | _AllSet, bool]
Feedback = Callable[[str, Any], Awaitable[None]]
SubmitJobs = Callable[[list[list[dict[str, Any]]]], Awaitable[list[list[Any]]]]


@dataclass
class OpContext:
    """The engine's services for one opcode."""

    job_id: int
    index: int
    paths: Paths
    node_rpc: NodeRpcClient | None
    feedback: Feedback
    #: The master's cluster configuration (None in engines built without one, e.g. in tests).
    config: ConfigManager | None = None
    #: Submit more jobs (the engine's submit_many: ``[[true, id] | [false, message], ...]``); Ganeti's
    #: SubmitManyJobs from inside an opcode (OP_CLUSTER_VERIFY's child jobs). None: not available.
    submit_jobs: SubmitJobs | None = None

    async def log(self, message: Any, log_type: str = ELOG_MESSAGE) -> None:
        await self.feedback(log_type, message)

    async def log_info(self, message: str, *args: Any) -> None:
        if args:
            message = message % args
        await self.feedback(ELOG_MESSAGE, f" - INFO: {message}")


class Operation:
    """Base of the opcode implementations (Ganeti's LogicalUnit, reduced to what we need)."""

    op_id: ClassVar[str] = ""
    #: Ganeti's REQ_BGL: take the Big Ganeti Lock exclusively.
    req_bgl: ClassVar[bool] = True

    def __init__(self, op: dict[str, Any], ctx: OpContext) -> None:
        self.op = op
        self.ctx = ctx

    def locks(self) -> list[LockRequest]:
        """The locks besides the BGL (Ganeti's ExpandNames); may raise OpPrereqError."""
        return []

    async def exec(self) -> Any:
        raise NotImplementedError
