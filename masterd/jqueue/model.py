"""Jobs and queued opcodes, serialized exactly as Ganeti 3.0 writes them.

A job file (``queue/job-<id>``) holds one `Job`: its id, its opcodes
(`QueuedOpCode`: the opcode dict the client sent, ``input``, plus execution
state) and timestamps. The JSON shape is the one of the real 3.0.2 files
(../shared/reference/job-queue.md §3 and samples/); `Job.to_json` writes it
the way Ganeti's job executor does (``json.dumps`` spacing, keys in its
order, a final newline), so a file the executor wrote, loaded and dumped
again, is identical byte for byte (luxid's compact files come back as the
same JSON, spaced). ``livelock`` and ``process_id`` are written only when set,
as luxid does. Keys this model does not know are kept and written back.

Interface (everything is plain data, no I/O, no locking: the caller
serializes changes to one job):

- ``Job.new(job_id, inputs, received=None)``: a job being submitted. Copies
  each opcode dict, appends luxid's reason ``["gnt:opcode:<name>",
  "job=<id>;index=<i>", <received ns>]`` and resolves relative dependencies
  (``own id + rel``). Raises `InvalidJobError`.
- ``Job.from_json(data)`` / ``Job.from_dict(obj)``: load; raise
  `JobFormatError` naming what is wrong. ``job.to_json()`` (bytes) /
  ``job.to_dict()``.
- ``job.status`` (Ganeti's CalcStatus), ``job.priority`` (min over the
  unfinished opcodes, else 0), ``job.is_finalized``, ``job.summary`` (one
  string per opcode, job-queue.md §6), ``job.log_serial``,
  ``job.get_log_entries(newer_than)``, ``job.dependencies(index)``.
- Transitions, each taking an optional ``now`` timestamp:
  ``mark_waiting`` (queued -> waiting, start timestamps), ``mark_running``
  (-> running, exec timestamp), ``mark_success``, ``mark_error`` (later
  opcodes fail with "Preceding opcode failed"), ``mark_canceled``
  (this and later opcodes canceled), ``cancel`` (Ganeti's cancel request:
  queued -> canceled, waiting -> canceling), ``change_priority``,
  ``add_log``, ``finalize_after_restart`` (job-queue.md §10 as the issue
  wants it: a job caught waiting/canceling/running by a master stop ends in
  error with `RESTART_ERROR_MESSAGE`).
- Helpers: `calc_job_status`, `opcode_summary`, `check_dependency` (the
  executor's per-dependency decision), `resolve_dependencies`,
  `encode_error`, `now_timestamp`, `timestamp_to_ns`, `show_double`.
"""

from __future__ import annotations

import enum
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, TypeGuard

# -- statuses (opcode and job statuses use the same strings) ------------------
STATUS_QUEUED = "queued"
STATUS_WAITING = "waiting"
STATUS_CANCELING = "canceling"
STATUS_RUNNING = "running"
STATUS_CANCELED = "canceled"
STATUS_SUCCESS = "success"
STATUS_ERROR = "error"

#: Haskell's order; "started" means after queued, "finalized" after running.
STATUS_ORDER: tuple[str, ...] = (STATUS_QUEUED, STATUS_WAITING, STATUS_CANCELING, STATUS_RUNNING,
                                 STATUS_CANCELED, STATUS_SUCCESS, STATUS_ERROR)
ALL_STATUSES = frozenset(STATUS_ORDER)
#: OPS_FINALIZED = JOBS_FINALIZED.
FINALIZED_STATUSES = frozenset({STATUS_CANCELED, STATUS_SUCCESS, STATUS_ERROR})
#: JOBS_PENDING.
PENDING_STATUSES = frozenset({STATUS_QUEUED, STATUS_WAITING, STATUS_CANCELING})

# -- priorities (lower number = more important) -------------------------------
PRIO_HIGHEST = -20
PRIO_HIGH = -10
PRIO_NORMAL = 0
PRIO_LOW = 10
PRIO_LOWEST = 19
PRIO_DEFAULT = PRIO_NORMAL

# -- log entry types -----------------------------------------------------------
ELOG_MESSAGE = "message"
ELOG_MESSAGE_LIST = "message-list"
ELOG_REMOTE_IMPORT = "remote-import"
ELOG_JQUEUE_TEST = "jqueue-test"
ELOG_DELAY_TEST = "delay-test"
LOG_TYPES = frozenset({ELOG_MESSAGE, ELOG_MESSAGE_LIST, ELOG_REMOTE_IMPORT, ELOG_JQUEUE_TEST,
                       ELOG_DELAY_TEST})

#: Results Ganeti's executor writes.
CANCELED_RESULT = "Job canceled by request"
PRECEDING_FAILED_MESSAGE = "Preceding opcode failed"
#: The result message of opcodes a master stop interrupted (ganeti(7) wording).
RESTART_ERROR_MESSAGE = "Job aborted: the master daemon has been stopped during the job execution"
#: Reason-trail source added to opcodes failed at restart.
RESTART_REASON_SOURCE = "gnt:daemon:masterd:restart"
#: Reason-trail source luxid appends at submission ("gnt:opcode:test_delay").
OPCODE_REASON_SOURCE = "gnt:opcode"

Timestamp = tuple[int, int]
"""``(seconds, microseconds)`` since the epoch, serialized as ``[sec, usec]``."""


class JobFormatError(ValueError):
    """A serialized job does not have Ganeti's job structure."""


class InvalidJobError(ValueError):
    """A submitted job cannot be built (no opcodes, bad opcode dict, bad dependency)."""


class JobStateError(RuntimeError):
    """A transition was asked for that the job's state does not allow (an executor bug)."""


# -- timestamps ----------------------------------------------------------------
def now_timestamp() -> Timestamp:
    """The current time as Ganeti's ``(sec, usec)`` pair."""
    ns = time.time_ns()
    return ns // 1_000_000_000, (ns // 1000) % 1_000_000


def timestamp_to_ns(ts: Timestamp) -> int:
    """Nanoseconds since the epoch, as luxid puts in reason trails (``sec*10^9 + usec*1000``)."""
    return ts[0] * 1_000_000_000 + ts[1] * 1000


def timestamp_to_float(ts: Timestamp) -> float:
    return ts[0] + ts[1] / 1_000_000


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_timestamp(value: object, where: str) -> Timestamp | None:
    if value is None:
        return None
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and _is_int(value[0]) and _is_int(value[1])):
        return int(value[0]), int(value[1])
    raise JobFormatError(f"{where} must be null or [seconds, microseconds] integers, not {value!r}")


def _dump_timestamp(ts: Timestamp | None) -> list[int] | None:
    return None if ts is None else [ts[0], ts[1]]


# -- errors as Ganeti encodes them ----------------------------------------------
def encode_error(error_class: str, *args: Any) -> list[Any]:
    """Ganeti's ``errors.EncodeException``: ``[class name, [args...]]``.

    ``encode_error("OpPrereqError", "Instance x unknown", "unknown_entity")``.
    """
    return [error_class, list(args)]


def op_exec_error(message: str) -> list[Any]:
    """An encoded ``OpExecError(message)``: ``["OpExecError", [message]]``."""
    return encode_error("OpExecError", message)


# -- log entries -----------------------------------------------------------------
class LogEntry(NamedTuple):
    """One opcode log line: serial (job-wide, from 1), time, type, message."""

    serial: int
    timestamp: Timestamp
    log_type: str
    message: Any

    def to_json(self) -> list[Any]:
        return [self.serial, [self.timestamp[0], self.timestamp[1]], self.log_type, self.message]

    @classmethod
    def from_json(cls, value: object, where: str) -> LogEntry:
        if not isinstance(value, (list, tuple)) or len(value) != 4:
            raise JobFormatError(f"{where} must be [serial, [sec, usec], type, message], not {value!r}")
        serial, ts, log_type, message = value
        if not _is_int(serial):
            raise JobFormatError(f"{where}: the serial must be an integer, not {serial!r}")
        stamp = _parse_timestamp(ts, f"{where} timestamp")
        if stamp is None:
            raise JobFormatError(f"{where}: the timestamp must not be null")
        if not isinstance(log_type, str):
            raise JobFormatError(f"{where}: the log type must be a string, not {log_type!r}")
        return cls(serial, stamp, log_type, message)


# -- summaries -------------------------------------------------------------------
_INSTANCE_SUMMARY_OPS = (
    "INSTANCE_CREATE INSTANCE_REINSTALL INSTANCE_REMOVE INSTANCE_STARTUP INSTANCE_SHUTDOWN"
    " INSTANCE_REBOOT INSTANCE_REPLACE_DISKS INSTANCE_FAILOVER INSTANCE_MIGRATE INSTANCE_MOVE"
    " INSTANCE_CONSOLE INSTANCE_ACTIVATE_DISKS INSTANCE_DEACTIVATE_DISKS INSTANCE_RECREATE_DISKS"
    " INSTANCE_SET_PARAMS INSTANCE_GROW_DISK INSTANCE_CHANGE_GROUP"
    " BACKUP_PREPARE BACKUP_EXPORT BACKUP_REMOVE").split()
_NODE_SUMMARY_OPS = (
    "NODE_REMOVE NODE_ADD NODE_MODIFY_STORAGE REPAIR_NODE_STORAGE NODE_SET_PARAMS NODE_POWERCYCLE"
    " NODE_MIGRATE NODE_EVACUATE").split()
_GROUP_SUMMARY_OPS = (
    "CLUSTER_VERIFY_GROUP GROUP_VERIFY_DISKS GROUP_ADD GROUP_ASSIGN_NODES GROUP_SET_PARAMS"
    " GROUP_REMOVE GROUP_EVACUATE").split()
_NETWORK_SUMMARY_OPS = (
    "NETWORK_ADD NETWORK_REMOVE NETWORK_SET_PARAMS NETWORK_CONNECT NETWORK_DISCONNECT").split()

#: OP_ID -> the parameter shown in parentheses in the summary (luxid's opSummaryVal).
SUMMARY_FIELDS: dict[str, str] = {
    **{f"OP_{name}": "instance_name" for name in _INSTANCE_SUMMARY_OPS},
    **{f"OP_{name}": "node_name" for name in _NODE_SUMMARY_OPS},
    **{f"OP_{name}": "group_name" for name in _GROUP_SUMMARY_OPS},
    **{f"OP_{name}": "network_name" for name in _NETWORK_SUMMARY_OPS},
    "OP_CLUSTER_RENAME": "name",
    "OP_QUERY": "what",
    "OP_QUERY_FIELDS": "what",
    "OP_TAGS_GET": "name",
    "OP_TAGS_SEARCH": "pattern",
    "OP_TEST_DELAY": "duration",
    "OP_TEST_ALLOCATOR": "iallocator",
}

#: Summary of an opcode whose dict has no usable OP_ID.
INVALID_OP_SUMMARY = "INVALID_OP"


def show_double(value: float) -> str:
    """A float as Haskell's ``show`` prints a Double (luxid formats TEST_DELAY's duration so).

    Shortest round-trip digits; positional notation for 0.1 <= |x| < 10^7
    (``1.0``, ``0.5``, ``1234.5``), scientific otherwise (``1.0e-3``, ``1.0e7``).
    """
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value < 0 or (value == 0 and math.copysign(1.0, value) < 0):
        return "-" + show_double(-value)
    if value == 0:
        return "0.0"
    parts = Decimal(repr(value)).as_tuple()
    assert isinstance(parts.exponent, int)
    raw = "".join(str(d) for d in parts.digits)
    digits = raw.rstrip("0") or "0"
    point = len(raw) + parts.exponent  # value = 0.<digits> * 10**point
    if 0.1 <= value < 10 ** 7:
        if point <= 0:
            return "0." + "0" * (-point) + digits
        whole = digits[:point].ljust(point, "0")
        return whole + "." + (digits[point:] or "0")
    return digits[0] + "." + (digits[1:] or "0") + "e" + str(point - 1)


def _summary_text(value: object) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(_summary_text(item) for item in value)
    return str(value)


def opcode_summary(op_input: object) -> str:
    """The ``summary`` of one opcode: ``OP_ID`` without ``OP_``, plus ``(<key field>)``.

    ``TEST_DELAY(1.0)``, ``NODE_SET_PARAMS(node2.example.com)``, ``CLUSTER_VERIFY``.
    A missing key field shows as ``None`` (Python's and luxid's rendering);
    a dict without a valid OP_ID gives ``INVALID_OP``.
    """
    if not isinstance(op_input, Mapping):
        return INVALID_OP_SUMMARY
    op_id = op_input.get("OP_ID")
    if not isinstance(op_id, str) or not op_id.startswith("OP_") or len(op_id) <= 3:
        return INVALID_OP_SUMMARY
    name = op_id[3:]
    key = SUMMARY_FIELDS.get(op_id)
    if key is None:
        return name
    value = op_input.get(key)
    if op_id == "OP_TEST_DELAY" and isinstance(value, (int, float)) and not isinstance(value, bool):
        text = show_double(float(value))
    elif op_id == "OP_TAGS_GET" and op_input.get("kind") == "cluster":
        text = "None"  # luxid: a cluster tag kind has no name
    else:
        text = _summary_text(value)
    return f"{name}({text})"


# -- status and priority -----------------------------------------------------------
def calc_job_status(op_statuses: Iterable[str]) -> str:
    """A job's status from its opcodes' statuses (Ganeti's CalcStatus / calcJobStatus).

    The first error/canceling/canceled opcode decides; otherwise the last
    waiting/running one; otherwise queued, or success when all succeeded
    (also for no opcodes at all).
    """
    status = STATUS_QUEUED
    all_success = True
    for op_status in op_statuses:
        if op_status == STATUS_SUCCESS:
            continue
        all_success = False
        if op_status in (STATUS_ERROR, STATUS_CANCELING, STATUS_CANCELED):
            return op_status
        if op_status in (STATUS_WAITING, STATUS_RUNNING):
            status = op_status
    return STATUS_SUCCESS if all_success else status


# -- dependencies --------------------------------------------------------------------
Dependency = tuple[int, list[str]]


def _parse_dependency(dep: object, where: str) -> tuple[int, list[str]]:
    if not isinstance(dep, (list, tuple)) or len(dep) != 2:
        raise InvalidJobError(f"{where} must be [job_id, [statuses...]], not {dep!r}")
    job_id, statuses = dep
    if isinstance(job_id, str) and job_id.isdigit():
        job_id = int(job_id)
    if not _is_int(job_id):
        raise InvalidJobError(f"{where}: the job id must be an integer, not {job_id!r}")
    if not isinstance(statuses, (list, tuple)) or not all(
            isinstance(s, str) and s in FINALIZED_STATUSES for s in statuses):
        raise InvalidJobError(
            f"{where}: the wanted statuses must be a list drawn from canceled, error, success,"
            f" not {statuses!r}")
    return int(job_id), list(statuses)


def resolve_dependencies(depends: object, own_id: int, where: str = "depends") -> list[list[Any]]:
    """``depends`` with relative (negative) job ids made absolute: ``own_id + rel``.

    Raises `InvalidJobError` for a malformed list, for a relative id that
    resolves to no job (< 1) and for a job depending on itself.
    """
    if not isinstance(depends, (list, tuple)):
        raise InvalidJobError(f"{where} must be null or a list of [job_id, [statuses]], not {depends!r}")
    resolved: list[list[Any]] = []
    for n, dep in enumerate(depends):
        job_id, statuses = _parse_dependency(dep, f"{where}[{n}]")
        if job_id < 0:
            absolute = own_id + job_id
            if absolute < 1:
                raise InvalidJobError(
                    f"Unable to resolve relative job ID {job_id} of job {own_id}: it names no job")
            job_id = absolute
        if job_id == own_id:
            raise InvalidJobError(f"Job {own_id} can't depend on itself")
        resolved.append([job_id, statuses])
    return resolved


class DependencyResult(enum.Enum):
    """What an opcode does about one dependency (Ganeti's _JobDependencyManager)."""

    CONTINUE = "continue"  #: satisfied, look at the next one
    WAIT = "wait"  #: the other job is not finalized yet
    CANCEL = "cancel"  #: the other job was canceled and that was not wanted: cancel this job
    WRONGSTATUS = "wrongstatus"  #: finished otherwise than wanted: this opcode fails
    ERROR = "error"  #: cannot be evaluated (unknown job, self-dependency): this opcode fails


def check_dependency(job_id: int, dep_job_id: int, wanted: Sequence[str],
                     dep_status: str | None) -> tuple[DependencyResult, str]:
    """Decide about one dependency, given the other job's status (None: not found anywhere).

    The messages are Ganeti's; for WRONGSTATUS and ERROR the opcode fails
    with ``op_exec_error(message)``.
    """
    if job_id == dep_job_id:
        return DependencyResult.ERROR, "Job can't depend on itself"
    if dep_status is None:
        return DependencyResult.ERROR, f"Dependency error: Job {dep_job_id} not found"
    if dep_status not in FINALIZED_STATUSES:
        return (DependencyResult.WAIT,
                f"Need to wait for job {dep_job_id}, wanted status '{list(wanted)}'")
    if dep_status == STATUS_CANCELED and STATUS_CANCELED not in wanted:
        return DependencyResult.CANCEL, f"Dependency job {dep_job_id} was cancelled"
    if not wanted or dep_status in wanted:
        return (DependencyResult.CONTINUE,
                f"Dependency job {dep_job_id} finished with status '{dep_status}'")
    return (DependencyResult.WRONGSTATUS,
            f"Dependency job {dep_job_id} finished with status '{dep_status}',"
            f" not one of '{', '.join(wanted)}' as required")


# -- the objects -----------------------------------------------------------------------
_OP_KEYS = ("input", "status", "result", "log", "start_timestamp", "exec_timestamp", "end_timestamp",
            "priority")
_JOB_KEYS = ("id", "ops", "start_timestamp", "end_timestamp", "received_timestamp", "livelock",
             "process_id")


@dataclass
class QueuedOpCode:
    """One opcode of a job: what the client asked (``input``) and how it went."""

    input: dict[str, Any]
    status: str = STATUS_QUEUED
    result: Any = None
    log: list[LogEntry] = field(default_factory=list)
    priority: int = PRIO_DEFAULT
    start_timestamp: Timestamp | None = None
    exec_timestamp: Timestamp | None = None
    end_timestamp: Timestamp | None = None
    #: Keys of the serialized opcode this model does not know, written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def op_id(self) -> str | None:
        value = self.input.get("OP_ID")
        return value if isinstance(value, str) else None

    @property
    def summary(self) -> str:
        return opcode_summary(self.input)

    @property
    def is_finalized(self) -> bool:
        return self.status in FINALIZED_STATUSES

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "input": self.input,
            "status": self.status,
            "result": self.result,
            "log": [entry.to_json() for entry in self.log],
            "start_timestamp": _dump_timestamp(self.start_timestamp),
            "exec_timestamp": _dump_timestamp(self.exec_timestamp),
            "end_timestamp": _dump_timestamp(self.end_timestamp),
            "priority": self.priority,
        }
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: object, where: str = "op") -> QueuedOpCode:
        if not isinstance(data, dict):
            raise JobFormatError(f"{where} must be an object, not {type(data).__name__}")
        op_input = data.get("input")
        if not isinstance(op_input, dict):
            raise JobFormatError(f"{where}.input must be an object (the opcode), not {op_input!r}")
        status = data.get("status")
        if status not in ALL_STATUSES:
            raise JobFormatError(
                f"{where}.status {status!r} is not one of {', '.join(STATUS_ORDER)}")
        log = data.get("log", [])
        if log is None:
            log = []
        if not isinstance(log, list):
            raise JobFormatError(f"{where}.log must be a list, not {type(log).__name__}")
        priority = data.get("priority", PRIO_DEFAULT)
        if not _is_int(priority):
            raise JobFormatError(f"{where}.priority must be an integer, not {priority!r}")
        return cls(
            input=op_input,
            status=str(status),
            result=data.get("result"),
            log=[LogEntry.from_json(entry, f"{where}.log[{n}]") for n, entry in enumerate(log)],
            priority=int(priority),
            start_timestamp=_parse_timestamp(data.get("start_timestamp"), f"{where}.start_timestamp"),
            exec_timestamp=_parse_timestamp(data.get("exec_timestamp"), f"{where}.exec_timestamp"),
            end_timestamp=_parse_timestamp(data.get("end_timestamp"), f"{where}.end_timestamp"),
            extra={k: v for k, v in data.items() if k not in _OP_KEYS},
        )


OpCode = QueuedOpCode


@dataclass
class Job:
    """A job: ordered opcodes run one after the other, with Ganeti's timestamps."""

    id: int
    ops: list[QueuedOpCode]
    received_timestamp: Timestamp | None = None
    start_timestamp: Timestamp | None = None
    end_timestamp: Timestamp | None = None
    #: Path of the lock file proving the executor alive (Ganeti); omitted when None.
    livelock: str | None = None
    #: Pid of the process executing the job; omitted when None.
    process_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- construction and (de)serialization ------------------------------------
    @classmethod
    def new(cls, job_id: int, inputs: Sequence[Mapping[str, Any]],
            received: Timestamp | None = None) -> Job:
        """A freshly submitted job with id `job_id` (see the module docstring)."""
        if not _is_int(job_id) or job_id < 1:
            raise InvalidJobError(f"A job id must be a positive integer, not {job_id!r}")
        if not inputs:
            raise InvalidJobError("A job needs at least one opcode")
        received = received if received is not None else now_timestamp()
        received_ns = timestamp_to_ns(received)
        ops: list[QueuedOpCode] = []
        for index, raw in enumerate(inputs):
            where = f"opcode {index}"
            if not isinstance(raw, Mapping):
                raise InvalidJobError(f"{where} must be an object, not {type(raw).__name__}")
            op_input = dict(raw)
            op_id = op_input.get("OP_ID")
            if not isinstance(op_id, str) or not op_id.startswith("OP_") or len(op_id) <= 3:
                raise InvalidJobError(f"{where} has no valid OP_ID (got {op_id!r})")
            reason = op_input.get("reason")
            if reason is None:
                reason = []
            if not isinstance(reason, (list, tuple)):
                raise InvalidJobError(f"{where}: reason must be a list of [source, text, ns]")
            op_input["reason"] = [list(entry) if isinstance(entry, (list, tuple)) else entry
                                  for entry in reason]
            op_input["reason"].append([f"{OPCODE_REASON_SOURCE}:{op_id[3:].lower()}",
                                       f"job={job_id};index={index}", received_ns])
            depends = op_input.get("depends")
            if depends is not None:
                op_input["depends"] = resolve_dependencies(depends, job_id, f"{where}: depends")
            priority = op_input.get("priority", PRIO_DEFAULT)
            if priority is None:
                priority = PRIO_DEFAULT
            if not _is_int(priority) or not PRIO_HIGHEST <= priority <= PRIO_LOWEST:
                raise InvalidJobError(
                    f"{where}: priority must be an integer from {PRIO_HIGHEST} to {PRIO_LOWEST},"
                    f" not {priority!r}")
            ops.append(QueuedOpCode(input=op_input, priority=priority))
        return cls(id=job_id, ops=ops, received_timestamp=received)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "ops": [op.to_dict() for op in self.ops],
            "start_timestamp": _dump_timestamp(self.start_timestamp),
            "end_timestamp": _dump_timestamp(self.end_timestamp),
            "received_timestamp": _dump_timestamp(self.received_timestamp),
        }
        if self.livelock is not None:
            data["livelock"] = self.livelock
        if self.process_id is not None:
            data["process_id"] = self.process_id
        data.update(self.extra)
        return data

    def to_json(self) -> bytes:
        """The job file's content, formatted as Ganeti's job executor writes it."""
        return (json.dumps(self.to_dict()) + "\n").encode("ascii")

    @classmethod
    def from_dict(cls, data: object) -> Job:
        if not isinstance(data, dict):
            raise JobFormatError(f"a job must be a JSON object, not {type(data).__name__}")
        job_id = data.get("id")
        if isinstance(job_id, str) and job_id.isdigit():
            job_id = int(job_id)
        if not _is_int(job_id) or job_id < 0:
            raise JobFormatError(f"the job id must be a non-negative integer, not {job_id!r}")
        ops = data.get("ops")
        if not isinstance(ops, list):
            raise JobFormatError(f"job {job_id}: ops must be a list, not {type(ops).__name__}")
        process_id = data.get("process_id")
        if process_id is not None and not _is_int(process_id):
            raise JobFormatError(f"job {job_id}: process_id must be an integer, not {process_id!r}")
        livelock = data.get("livelock")
        if livelock is not None and not isinstance(livelock, str):
            raise JobFormatError(f"job {job_id}: livelock must be a string, not {livelock!r}")
        where = f"job {job_id}"
        return cls(
            id=int(job_id),
            ops=[QueuedOpCode.from_dict(op, f"{where} ops[{n}]") for n, op in enumerate(ops)],
            received_timestamp=_parse_timestamp(data.get("received_timestamp"),
                                                f"{where} received_timestamp"),
            start_timestamp=_parse_timestamp(data.get("start_timestamp"), f"{where} start_timestamp"),
            end_timestamp=_parse_timestamp(data.get("end_timestamp"), f"{where} end_timestamp"),
            livelock=livelock,
            process_id=process_id,
            extra={k: v for k, v in data.items() if k not in _JOB_KEYS},
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Job:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as err:
            raise JobFormatError(f"not valid JSON: {err}") from err
        return cls.from_dict(obj)

    # -- derived values ------------------------------------------------------------
    @property
    def status(self) -> str:
        return calc_job_status(op.status for op in self.ops)

    @property
    def is_finalized(self) -> bool:
        return self.status in FINALIZED_STATUSES

    @property
    def priority(self) -> int:
        """The lowest priority number among unfinished opcodes, or the default when none."""
        pending = [op.priority for op in self.ops if not op.is_finalized]
        return min(pending) if pending else PRIO_DEFAULT

    @property
    def summary(self) -> list[str]:
        return [op.summary for op in self.ops]

    @property
    def log_serial(self) -> int:
        """The highest log serial used so far (0 when the job has no log)."""
        return max((entry.serial for op in self.ops for entry in op.log), default=0)

    def get_log_entries(self, newer_than: int | None = None) -> list[LogEntry]:
        """Log entries with a serial above `newer_than` (all of them for None)."""
        limit = -1 if newer_than is None else newer_than
        return [entry for op in self.ops for entry in op.log if entry.serial > limit]

    def dependencies(self, index: int) -> list[Dependency]:
        """The (absolute) dependencies of opcode `index`: ``[(job_id, wanted statuses)]``."""
        depends = self.ops[index].input.get("depends")
        if depends is None:
            return []
        return [(int(dep[0]), list(dep[1]))
                for dep in resolve_dependencies(depends, self.id, f"job {self.id} depends")]

    def next_opcode_index(self) -> int | None:
        """The first opcode not yet finalized (the one to run next), or None."""
        for index, op in enumerate(self.ops):
            if not op.is_finalized:
                return index
        return None

    # -- transitions ----------------------------------------------------------------
    def _op(self, index: int, allowed: Iterable[str], action: str) -> QueuedOpCode:
        op = self.ops[index]
        allowed = tuple(allowed)
        if op.status not in allowed:
            raise JobStateError(
                f"job {self.id} opcode {index} ({op.summary}) is {op.status}; it can be {action}"
                f" only when {' or '.join(allowed)}")
        return op

    def _finalize(self, now: Timestamp) -> None:
        self.end_timestamp = now

    def _mark_rest(self, index: int, status: str, result: Any) -> None:
        for op in self.ops[index + 1:]:
            if not op.is_finalized:
                op.status = status
                op.result = result

    def mark_waiting(self, index: int, now: Timestamp | None = None) -> None:
        """Opcode `index` starts: waiting for dependencies and locks."""
        now = now or now_timestamp()
        op = self._op(index, (STATUS_QUEUED, STATUS_WAITING), "started")
        op.status = STATUS_WAITING
        op.result = None
        if op.start_timestamp is None:
            op.start_timestamp = now
        if self.start_timestamp is None:
            self.start_timestamp = op.start_timestamp

    def mark_running(self, index: int, now: Timestamp | None = None) -> None:
        """Opcode `index` holds its locks and executes."""
        now = now or now_timestamp()
        op = self._op(index, (STATUS_QUEUED, STATUS_WAITING), "run")
        if op.status == STATUS_QUEUED:
            self.mark_waiting(index, now)
        op.status = STATUS_RUNNING
        op.exec_timestamp = now

    def mark_success(self, index: int, result: Any, now: Timestamp | None = None) -> bool:
        """Opcode `index` succeeded; returns whether that finished the job."""
        now = now or now_timestamp()
        op = self._op(index, (STATUS_RUNNING,), "marked successful")
        op.status = STATUS_SUCCESS
        op.result = result
        op.end_timestamp = now
        if self.next_opcode_index() is None:
            self._finalize(now)
            return True
        return False

    def mark_error(self, index: int, result: Any, now: Timestamp | None = None) -> None:
        """Opcode `index` failed with `result` (an encoded error); the job fails.

        Later opcodes get ``["OpExecError", ["Preceding opcode failed"]]``
        without timestamps, as in Ganeti.
        """
        now = now or now_timestamp()
        op = self._op(index, (STATUS_QUEUED, STATUS_WAITING, STATUS_RUNNING, STATUS_CANCELING),
                      "marked failed")
        op.status = STATUS_ERROR
        op.result = result
        op.end_timestamp = now
        self._mark_rest(index, STATUS_ERROR, op_exec_error(PRECEDING_FAILED_MESSAGE))
        self._finalize(now)

    def mark_canceled(self, index: int, now: Timestamp | None = None) -> None:
        """Opcode `index` and all later ones are canceled; the job is finished."""
        now = now or now_timestamp()
        op = self._op(index, (STATUS_QUEUED, STATUS_WAITING, STATUS_CANCELING), "canceled")
        op.status = STATUS_CANCELED
        op.result = CANCELED_RESULT
        op.end_timestamp = now
        self._mark_rest(index, STATUS_CANCELED, CANCELED_RESULT)
        self._finalize(now)

    def cancel(self, now: Timestamp | None = None) -> tuple[bool, str]:
        """A cancel request, as Ganeti's job executor handles it.

        Queued job: every unfinished opcode canceled, job finished. Waiting
        job: unfinished opcodes become canceling (the executor then calls
        `mark_canceled`). Otherwise refused.
        """
        now = now or now_timestamp()
        status = self.status
        if status == STATUS_QUEUED:
            for op in self.ops:
                if not op.is_finalized:
                    op.status = STATUS_CANCELED
                    op.result = CANCELED_RESULT
                    op.end_timestamp = now
            self._finalize(now)
            return True, f"Job {self.id} canceled"
        if status == STATUS_WAITING:
            for op in self.ops:
                if not op.is_finalized:
                    op.status = STATUS_CANCELING
                    op.result = None
            return True, f"Job {self.id} will be canceled"
        return False, f"Job {self.id} is no longer waiting in the queue"

    def change_priority(self, priority: int) -> tuple[bool, str]:
        """Set the priority of the opcodes not yet running or finished (Ganeti's rule)."""
        if not _is_int(priority) or not PRIO_HIGHEST <= priority <= PRIO_LOWEST:
            return False, f"Priority {priority!r} is not an integer from {PRIO_HIGHEST} to {PRIO_LOWEST}"
        status = self.status
        if status in FINALIZED_STATUSES:
            return False, f"Job {self.id} is finished"
        if status == STATUS_CANCELING:
            return False, f"Job {self.id} is cancelling"
        changed = False
        for op in self.ops:
            if op.status in (STATUS_QUEUED, STATUS_WAITING):
                op.priority = priority
                changed = True
        if changed:
            return True, f"Priorities of pending opcodes for job {self.id} have been changed to {priority}"
        return False, f"Job {self.id} had no pending opcodes"

    def add_log(self, index: int, message: Any, log_type: str = ELOG_MESSAGE,
                now: Timestamp | None = None) -> list[LogEntry]:
        """Append log entries to opcode `index` with the next job-wide serials.

        A ``message-list`` is split into one ``message`` entry per item, as
        Ganeti's executor does. Returns the new entries.
        """
        now = now or now_timestamp()
        if log_type == ELOG_MESSAGE_LIST:
            items = list(message) if isinstance(message, (list, tuple)) else [message]
            log_type = ELOG_MESSAGE
        else:
            items = [message]
        serial = self.log_serial
        entries = []
        for item in items:
            serial += 1
            entries.append(LogEntry(serial, now, log_type, item))
        self.ops[index].log.extend(entries)
        return entries

    def finalize_after_restart(self, now: Timestamp | None = None) -> bool:
        """Apply the restart rule; returns whether the job changed (and must be rewritten).

        Finalized and queued jobs are left alone (queued ones run again; a
        resumed job skips its finished opcodes). A job the stop caught
        waiting, canceling or running ends in error: each unfinished opcode
        gets ``["OpExecError", [RESTART_ERROR_MESSAGE]]``, its end timestamp
        and a reason-trail entry; the job gets its end timestamp.
        """
        now = now or now_timestamp()
        if self.status not in (STATUS_WAITING, STATUS_CANCELING, STATUS_RUNNING):
            return False
        result = op_exec_error(RESTART_ERROR_MESSAGE)
        for op in self.ops:
            if op.is_finalized:
                continue
            op.status = STATUS_ERROR
            op.result = result
            op.end_timestamp = now
            reason = op.input.get("reason")
            if isinstance(reason, list):
                reason.append([RESTART_REASON_SOURCE, RESTART_ERROR_MESSAGE, timestamp_to_ns(now)])
        self._finalize(now)
        return True
