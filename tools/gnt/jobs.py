"""Submitting opcodes and following jobs, as Ganeti 3.0's cli module does (cli-needs.md §0).

Interface
    `make_opcode(op_id, **params)`: the opcode dict the real CLI sends: every
    parameter of the opcode (masterd/opcodes table), defaults included, then
    the generic ones, then "OP_ID".
    `set_generic_opcode_opts(op, opts, argv)`: debug_level, dry_run, priority and
    the reason trail `[["gnt:client:<argv0 basename>", argv[1], <ns>]]`, preceded by
    `["gnt:user", <--reason>, ns]` (cli.SetGenericOpcodeOpts).
    `poll_job(client, job_id, reporter=None)`: the WaitForJobChange loop of
    cli.GenericPollJob, then QueryJobs; returns the per-opcode results or
    raises the job's error (OpExecError, JobCanceled, JobLost, or the
    encoded exception of the failed opcode).
    `StdioReporter`: prints each log entry as "<ctime> <message>" on stdout and
    "Job N is waiting in queue" / "... trying to acquire all necessary locks"
    on stderr when the master answers "nochange".
    `submit_opcode(client, op, opts, argv)`: SubmitJob + poll_job, returns the first result.
    `submit_or_send(client, op, opts, argv)`: with `opts.submit_only` submits and
    raises `JobSubmitted` (printed "JobID: N" on stderr, exit 0).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Protocol

from masterd.opcodes.validate import default_definitions
from tools.gnt.errors import GanetiError, JobSubmitted, decode_error
from tools.gnt.luxi_client import DEFAULT_WFJC_TIMEOUT, JOB_NOTCHANGED, LuxiClient
from tools.gnt.output import merge_time, safe_encode, to_stderr, to_stdout

#: Job statuses after which the CLI stops polling (success, error, canceling, canceled).
_POLL_END = frozenset({"success", "error", "canceling", "canceled"})
#: Log entry type of plain messages (constants.ELOG_MESSAGE).
ELOG_MESSAGE = "message"


def make_opcode(op_id: str, **params: Any) -> dict[str, Any]:
    """The opcode as the real CLI serialises it: all parameters with their defaults, then OP_ID."""
    definitions = default_definitions()
    if definitions.get(op_id) is None:
        raise GanetiError("ProgrammerError", f"unknown opcode {op_id}")
    known = {p.name for p in definitions.params_of(op_id)}
    unknown = set(params) - known
    if unknown:
        raise GanetiError("ProgrammerError", f"{op_id} has no parameter(s) {', '.join(sorted(unknown))}")
    op: dict[str, Any] = {}
    for param in definitions.params_of(op_id):
        op[param.name] = params.get(param.name, _copy(param.default))
    op["OP_ID"] = op_id
    return op


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


def epoch_nano() -> int:
    return time.time_ns()


def set_generic_opcode_opts(op: dict[str, Any], opts: Any, argv: Sequence[str]) -> None:
    """Fill the generic parameters from the command line options (cli.SetGenericOpcodeOpts)."""
    if opts is None:
        return
    op["debug_level"] = getattr(opts, "debug", 0)
    if hasattr(opts, "dry_run"):
        op["dry_run"] = opts.dry_run
    if getattr(opts, "priority", None) is not None:
        op["priority"] = opts.priority
    trail: list[list[Any]] = []
    if getattr(opts, "reason", None):
        trail.append(["gnt:user", opts.reason, epoch_nano()])
    binary = os.path.basename(argv[0])
    trail.append([f"gnt:client:{binary}", argv[1], epoch_nano()])
    op["reason"] = trail


class Reporter(Protocol):
    def log_message(self, job_id: Any, serial: int, timestamp: Any, log_type: str, message: Any) -> None: ...
    def not_changed(self, job_id: Any, status: str | None) -> None: ...


def format_log_message(log_type: str, message: Any) -> str:
    if log_type != ELOG_MESSAGE:
        message = str(message)
    if not isinstance(message, str):
        raise TypeError("Only str can be SafeEncoded")
    return safe_encode(message)


class StdioReporter:
    """Ganeti's StdioJobPollReportCb: log lines on stdout, queue/lock notices on stderr."""

    def __init__(self) -> None:
        self.notified_queued = False
        self.notified_waitlock = False

    def log_message(self, job_id: Any, serial: int, timestamp: Any, log_type: str, message: Any) -> None:
        to_stdout(f"{time.ctime(merge_time(timestamp))} {format_log_message(log_type, message)}")

    def not_changed(self, job_id: Any, status: str | None) -> None:
        if status == "queued" and not self.notified_queued:
            to_stderr(f"Job {job_id} is waiting in queue")
            self.notified_queued = True
        elif status == "waiting" and not self.notified_waitlock:
            to_stderr(f"Job {job_id} is trying to acquire all necessary locks")
            self.notified_waitlock = True


class SilentReporter:
    """Prints nothing (gnt-job wait)."""

    def log_message(self, job_id: Any, serial: int, timestamp: Any, log_type: str, message: Any) -> None:
        pass

    def not_changed(self, job_id: Any, status: str | None) -> None:
        pass


def poll_job(client: LuxiClient, job_id: Any, reporter: Reporter | None = None,
             update_freq: float = DEFAULT_WFJC_TIMEOUT) -> list[Any]:
    """Follow a job to its end (cli.GenericPollJob); the per-opcode results on success."""
    reporter = reporter or StdioReporter()
    prev_job_info: Any = None
    prev_serial: int | None = None
    status: str | None = None
    while True:
        result = client.wait_for_job_change_once(job_id, ["status"], prev_job_info, prev_serial,
                                                 timeout=update_freq)
        if not result:
            raise GanetiError("JobLost", f"Job with id {job_id} lost")
        if result == JOB_NOTCHANGED:
            reporter.not_changed(job_id, status)
            continue
        job_info, log_entries = result
        (status,) = job_info
        if log_entries:
            for serial, timestamp, log_type, message in log_entries:
                reporter.log_message(job_id, serial, timestamp, log_type, message)
                prev_serial = serial if prev_serial is None else max(prev_serial, serial)
        elif status in _POLL_END:
            break
        prev_job_info = job_info

    jobs = client.query_jobs([job_id], ["status", "opstatus", "opresult"])
    if not jobs:
        raise GanetiError("JobLost", f"Job with id {job_id} lost")
    status, opstatus, opresult = jobs[0]
    if status == "success":
        return list(opresult)
    if status in ("canceling", "canceled"):
        raise GanetiError("JobCanceled", "Job was canceled")
    has_ok = False
    for index, (op_status, msg) in enumerate(zip(opstatus, opresult, strict=False)):
        if op_status == "success":
            has_ok = True
        elif op_status == "error":
            err = decode_error(msg)
            if err.name != "RequestError":
                raise err
            if has_ok:
                raise GanetiError("OpExecError", f"partial failure (opcode {index}): {_py_repr_str(msg)}")
            raise GanetiError("OpExecError", _py_repr_str(msg))
    raise GanetiError("OpExecError", opresult)


def _py_repr_str(value: Any) -> str:
    return str(value)


def submit_opcode(client: LuxiClient, op: dict[str, Any], opts: Any, argv: Sequence[str],
                  reporter: Reporter | None = None) -> Any:
    """Submit one opcode as a job and follow it (cli.SubmitOpCode); the opcode's result."""
    set_generic_opcode_opts(op, opts, argv)
    job_id = client.submit_job([op])
    if getattr(opts, "print_jobid", False):
        to_stdout(f"{int(job_id)}")
    return poll_job(client, job_id, reporter)[0]


def submit_or_send(client: LuxiClient, op: dict[str, Any], opts: Any, argv: Sequence[str]) -> Any:
    """cli.SubmitOrSend: with --submit only submit (JobSubmitted), otherwise submit_opcode."""
    if getattr(opts, "submit_only", False):
        set_generic_opcode_opts(op, opts, argv)
        job_id = client.submit_job([op])
        if getattr(opts, "print_jobid", False):
            to_stdout(f"{int(job_id)}")
        raise JobSubmitted(job_id)
    return submit_opcode(client, op, opts, argv)


